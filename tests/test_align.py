"""Detection and differentiable alignment on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fr_shield.core.align import ARCFACE_112, align_faces, scaled_template, similarity_transform, warp_face
from fr_shield.core.detect import DetectorConfig, FaceDetector, central_face
from fr_shield.core.imageio import load_rgb
from fr_shield.models.spec import ModelSpec

SPEC_112 = ModelSpec("test112", (112, 112), ARCFACE_112, 8, "cosine", 0.5)
SPEC_160 = ModelSpec("test160", (160, 160), scaled_template(160, 0.9), 8, "cosine", 0.5)


@pytest.fixture(scope="module")
def detector(weight_cache):
    return FaceDetector(cache_dir=weight_cache)


@pytest.fixture(scope="module")
def photo(lfw_root):
    return load_rgb(lfw_root / "George_W_Bush" / "George_W_Bush_0001.jpg")


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = ARCFACE_112 @ rotation.T + shift
    matrix = similarity_transform(ARCFACE_112, target)
    assert np.allclose(matrix[:, :2], rotation, atol=1e-4) and np.allclose(matrix[:, 2], shift, atol=1e-3)


@pytest.mark.parametrize("spec", [SPEC_112, SPEC_160])
@pytest.mark.parametrize("zoom", [1, 6])  # 6x: the anti-aliased shrink path
def test_landmarks_land_on_template(spec, zoom):
    """Bright dots placed at the landmarks appear within 1 px of the template after warping."""
    size = 200 * zoom
    landmarks = (ARCFACE_112 * 1.1 + 40) * zoom
    image = torch.zeros(3, size, size)
    radius = zoom  # a dot a few source pixels wide survives the shrink
    for x, y in landmarks:
        xi, yi = int(round(x)), int(round(y))
        image[:, yi - radius:yi + radius + 1, xi - radius:xi + radius + 1] = 1.0
    crop = align_faces(image, [landmarks], spec)[0, 0]
    for tx, ty in spec.template:
        x0, y0 = int(tx) - 4, int(ty) - 4
        window = crop[y0:y0 + 9, x0:x0 + 9]
        ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
        cx = float((window * xs).sum() / window.sum()) + x0
        cy = float((window * ys).sum() / window.sum()) + y0
        assert abs(cx - tx) <= 1.0 and abs(cy - ty) <= 1.0, (cx, cy, tx, ty)


@pytest.mark.real
def test_real_photo_face_and_gradient(detector, photo):
    faces = detector(photo)
    face = central_face(faces, photo.shape)
    assert face is not None and face.score > 0.8
    assert face.landmarks[0, 0] < face.landmarks[1, 0]  # image-left eye first, as the template
    image = torch.from_numpy(photo).permute(2, 0, 1).clone().requires_grad_(True)
    crops = align_faces(image, [face.landmarks], SPEC_112)
    crops.sum().backward()
    assert crops.shape == (1, 3, 112, 112)
    grad = image.grad.abs().sum(0)
    assert torch.isfinite(grad).all() and grad.sum() > 0
    # The gradient sits on the face region only.
    x, y, w, h = face.box
    assert grad[: int(y) - 30].sum() == 0


@pytest.mark.real
def test_two_faces_give_two_crops(detector, photo):
    pair = np.concatenate([photo, photo[:, ::-1]], axis=1).copy()
    faces = detector(pair)
    assert len([f for f in faces if f.score > 0.8]) >= 2
    crops = align_faces(torch.from_numpy(pair).permute(2, 0, 1), [f.landmarks for f in faces[:2]], SPEC_112)
    assert crops.shape == (2, 3, 112, 112)


@pytest.mark.real
def test_no_face_gives_empty_result(detector, rng):
    smooth = np.tile(np.linspace(0, 1, 200, dtype=np.float32)[None, :, None], (200, 1, 3))
    assert detector(smooth) == []
    assert align_faces(torch.zeros(3, 50, 50), [], SPEC_112).shape == (0, 3, 112, 112)


@pytest.mark.real
def test_large_photo_aligns_like_small(detector, photo, weight_cache):
    """A 4x upscaled photo gives (nearly) the same crop: anti-aliasing, detection on a copy."""
    small = torch.from_numpy(photo).permute(2, 0, 1)
    large = torch.nn.functional.interpolate(small[None], scale_factor=4, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    face_small = central_face(detector(photo), photo.shape)
    # Detection on a copy scaled down to the original size must map back to photo pixels.
    downscaling = FaceDetector(DetectorConfig(max_side=250), cache_dir=weight_cache)
    face_large = central_face(downscaling(large.permute(1, 2, 0).numpy()), tuple(large.permute(1, 2, 0).shape))
    crop_small = align_faces(small, [face_small.landmarks], SPEC_112)
    crop_large = align_faces(large, [face_small.landmarks * 4 + 1.5], SPEC_112)
    assert (crop_small - crop_large).abs().mean() < 0.02
    assert np.abs(face_large.landmarks / 4 - face_small.landmarks).max() < 3.0


def test_face_outside_photo_is_zero():
    matrix = similarity_transform(ARCFACE_112 + 1000, ARCFACE_112)
    assert warp_face(torch.rand(3, 50, 50), matrix, (112, 112)).abs().sum() == 0
