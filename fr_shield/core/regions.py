"""Where in a photo each face's work happens: the regions an attack or a check needs.

A face's aligned crops read only a small part of the photo (the footprint of each crop's warp).
Cutting that region out, with a margin for blur kernels, lets the heavy work of a 12-megapixel
photo cost what its faces cost. Regions snap to JPEG's 8 x 8 block grid, so re-encoding a region
gives the same pixels as re-encoding the whole photo there; regions that overlap are merged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import numpy as np
import torch

from fr_shield.core.align import ARCFACE_112, FACE_CROP, Crop, similarity_transform

BLOCK = 8  # JPEG's block size
EDGE = 6  # px of context beyond half the widest kernel: bilinear taps and the warp's ROI margin

# The soft face mask, in the 112 x 112 ArcFace crop of each face: an ellipse over face and hairline,
# full strength inside radius INNER, a cosine fall-off to zero at radius OUTER.
MASK_CENTRE = (56.0, 54.0)
MASK_AXES = (50.0, 62.0)
MASK_INNER, MASK_OUTER = 0.8, 1.1


def crop_footprint(landmarks: np.ndarray, template: np.ndarray, size: tuple[int, int],
                   box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Photo-pixel bounding box (x0, y0, x1, y1) of a crop (or of ``box`` in crop pixels)."""
    matrix = similarity_transform(landmarks, template)
    inverse = np.linalg.inv(np.vstack([matrix.astype(np.float64), [0, 0, 1]]))[:2]
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, size[1] - 1.0, size[0] - 1.0)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ inverse.T
    return np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])


def snap_region(rect: np.ndarray, image_hw: tuple[int, int], block: int = BLOCK, minimum: int = 40) -> tuple[int, int, int, int]:
    """Integer region inside the photo, corners on the ``block`` grid (or the photo's edge)."""
    height, width = image_hw
    x0, y0, x1, y1 = rect
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    x0, x1 = min(x0, centre_x - minimum / 2), max(x1, centre_x + minimum / 2)
    y0, y1 = min(y0, centre_y - minimum / 2), max(y1, centre_y + minimum / 2)
    x0 = max(0, math.floor(x0 / block) * block)
    y0 = max(0, math.floor(y0 / block) * block)
    x1 = min(width, math.ceil(x1 / block) * block)
    y1 = min(height, math.ceil(y1 / block) * block)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def cluster_regions(regions: list[tuple[int, int, int, int]]) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """Merge overlapping regions: [(union region, indices of the faces in it)]."""
    groups = [(tuple(r), [i]) for i, r in enumerate(regions)]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _overlap(groups[i][0], groups[j][0]):
                    a, b = groups[i][0], groups[j][0]
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    groups[i] = (union, groups[i][1] + groups[j][1])
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups

def to_crop_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2 x 3 similarity: photo pixels -> the face's 112 x 112 ArcFace crop."""
    return similarity_transform(landmarks, ARCFACE_112)


def face_side(landmarks: np.ndarray) -> float:
    """Photo pixels spanned by the face's 112-pixel ArcFace crop."""
    matrix = to_crop_matrix(landmarks)
    return 112.0 / math.sqrt(abs(float(np.linalg.det(matrix[:, :2].astype(np.float64)))))


def face_region(landmarks: np.ndarray, specs: Sequence[Crop], margin: float) -> np.ndarray:
    """What attacking or checking this face touches: every model's crop and the mask, plus a margin."""
    mask_box = (MASK_CENTRE[0] - MASK_AXES[0] * MASK_OUTER, MASK_CENTRE[1] - MASK_AXES[1] * MASK_OUTER,
                MASK_CENTRE[0] + MASK_AXES[0] * MASK_OUTER, MASK_CENTRE[1] + MASK_AXES[1] * MASK_OUTER)
    rects = [crop_footprint(landmarks, ARCFACE_112, (112, 112), mask_box)]
    rects += [crop_footprint(landmarks, spec.template, spec.input_size) for spec in [FACE_CROP, *specs]]
    rects = np.array(rects)
    return np.array([rects[:, 0].min() - margin, rects[:, 1].min() - margin,
                     rects[:, 2].max() + margin, rects[:, 3].max() + margin])


def soft_mask(shape_hw: tuple[int, int], landmarks: Sequence[np.ndarray], to_photo: np.ndarray) -> torch.Tensor:
    """[H, W] in [0, 1]: the union of the faces' feathered ellipses on a grid of pixels.

    ``to_photo`` (2 x 3) maps this grid's pixel coordinates to photo pixels.
    """
    height, width = shape_hw
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    photo = to_photo.astype(np.float64) @ grid
    mask = np.zeros(xs.size)
    for points in landmarks:
        crop = to_crop_matrix(points).astype(np.float64) @ np.vstack([photo, np.ones(xs.size)])
        radius = np.hypot((crop[0] - MASK_CENTRE[0]) / MASK_AXES[0], (crop[1] - MASK_CENTRE[1]) / MASK_AXES[1])
        ramp = np.clip((radius - MASK_INNER) / (MASK_OUTER - MASK_INNER), 0.0, 1.0)
        mask = np.maximum(mask, 0.5 * (1.0 + np.cos(np.pi * ramp)))
    return torch.from_numpy(mask.reshape(height, width).astype(np.float32))


def region_margin(reach: int, scale: float = 1.0) -> float:
    """The one margin rule: how far (photo px) beyond a face's crops its work reads, for kernels up
    to ``reach`` px applied at ``scale`` of the photo's resolution."""
    return (reach // 2 + EDGE) / scale


TEXTURE_SIGMA = 2.0  # px: the neighbourhood whose luma spread decides how much change hides there
TEXTURE_FULL = 0.03  # a local luma standard deviation (about 8/255) at which the full bound applies


def texture_weight(image: torch.Tensor, floor: float) -> torch.Tensor:
    """[H, W] in [floor, 1]: how much of the per-pixel bound a change may use, from the clean
    image [1, 3, H, W] in [0, 1]. Contrast masking: a change of the same size is far less visible
    on hair, brows, beard and edges (high local luma spread) than on flat cheeks and forehead."""
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"texture_weight: needs one RGB image [1, 3, H, W], got {tuple(image.shape)}")
    luma = (image * image.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(dim=1, keepdim=True)
    size = 2 * int(3 * TEXTURE_SIGMA) + 1
    blur = kornia.filters.GaussianBlur2d((size, size), (TEXTURE_SIGMA, TEXTURE_SIGMA), border_type="reflect")
    spread = (blur(luma * luma) - blur(luma).pow(2)).clamp_min(0).sqrt()
    return (spread / TEXTURE_FULL).clamp(floor, 1.0)[0, 0]


# Chou and Li's just-noticeable difference (IEEE TCSVT 1995), in grey levels of an 8-bit image:
# a 5 x 5 weighted mean of the background (BACKGROUND / 32) and the largest of four directional
# 5 x 5 gradients (GRADIENTS / 16) decide how large a change of brightness hides there.
JND_BACKGROUND = ((1, 1, 1, 1, 1), (1, 2, 2, 2, 1), (1, 2, 0, 2, 1), (1, 2, 2, 2, 1), (1, 1, 1, 1, 1))
JND_GRADIENTS = (
    ((0, 0, 0, 0, 0), (1, 3, 8, 3, 1), (0, 0, 0, 0, 0), (-1, -3, -8, -3, -1), (0, 0, 0, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 8, 3, 0, 0), (1, 3, 0, -3, -1), (0, 0, -3, -8, 0), (0, 0, -1, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 0, 3, 8, 0), (-1, -3, 0, 3, 1), (0, -8, -3, 0, 0), (0, 0, -1, 0, 0)),
    ((0, 1, 0, -1, 0), (0, 3, 0, -3, 0), (0, 8, 0, -8, 0), (0, 3, 0, -3, 0), (0, 1, 0, -1, 0)),
)


def jnd_map(image: torch.Tensor) -> torch.Tensor:
    """[H, W]: the just-noticeable change of brightness at each pixel (in [0, 1] units) of the
    clean image [1, 3, H, W] in [0, 1], by Chou and Li's model: the larger of luminance
    adaptation (dark and very bright backgrounds hide more; about 3-5 grey levels on skin) and
    contrast masking (grows with the local gradient: edges, hair, brows, beard)."""
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"jnd_map: needs one RGB image [1, 3, H, W], got {tuple(image.shape)}")
    luma = 255.0 * (image * image.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(dim=1, keepdim=True)
    padded = torch.nn.functional.pad(luma, (2, 2, 2, 2), mode="replicate")
    background = torch.nn.functional.conv2d(padded, luma.new_tensor(JND_BACKGROUND)[None, None] / 32)
    gradients = torch.nn.functional.conv2d(padded, luma.new_tensor(JND_GRADIENTS)[:, None] / 16)
    gradient = gradients.abs().amax(dim=1, keepdim=True)
    masking = gradient * (background * 0.0001 + 0.115) + (0.5 - background * 0.01)
    adaptation = torch.where(background <= 127, 17.0 * (1 - (background / 127).clamp_min(0).sqrt()) + 3,
                             3.0 / 128 * (background - 127) + 3)
    return (torch.maximum(masking, adaptation) / 255.0)[0, 0]
