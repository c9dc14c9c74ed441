"""Differentiable face alignment A(x): landmarks -> similarity warp -> each model's crop.

The similarity transform (rotation, uniform scale, translation) that best maps a face's five
landmarks onto a model's template is found in closed form (Umeyama's least squares). The warp
itself is Kornia's ``warp_affine`` (bilinear ``grid_sample``), so gradients of an FR loss on the
crop reach the pixels of the full-resolution photo.

Only the face's region of interest is cut out before warping, and a face much larger than the
crop is first downscaled with anti-aliasing: bilinear sampling alone would skip most source
pixels (aliasing), and the cost of aligning a 12 MP photo stays that of its faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

# The five-point ArcFace template (eyes, nose tip, mouth corners) in a 112 x 112 crop.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def scaled_template(size: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The ArcFace template moved to a ``size`` x ``size`` crop.

    ``scale`` enlarges the face relative to the 112 template mapped proportionally onto ``size``;
    ``shift`` then moves it (pixels of the ``size`` crop).
    """
    proportional = ARCFACE_112 * (size / 112.0)
    centre = np.array([size / 2.0, size / 2.0], dtype=np.float32)
    return ((proportional - centre) * scale + centre + np.asarray(shift, np.float32)).astype(np.float32)


class Crop(Protocol):
    """Anything that names an aligned crop: its (height, width) and 5 x 2 landmark template."""

    input_size: tuple[int, int]
    template: np.ndarray


@dataclass(frozen=True)
class CropSpec:
    input_size: tuple[int, int]
    template: np.ndarray = field(repr=False)


# The 112 x 112 ArcFace crop of a face: where quality (SSIM, ST-LPIPS) and the face mask are measured.
FACE_CROP = CropSpec((112, 112), ARCFACE_112)

# Extra source pixels kept around the region of interest so bilinear taps at its edge are real.
ROI_MARGIN = 2
# Downscale the region first when the warp would shrink it by more than this factor.
MAX_SHRINK = 1.5


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity matrix M minimising sum |M [s; 1] - t|^2 over point pairs."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # forbid reflections
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = (singular * sign).sum() / source_centred.var(0).sum()
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def _crop_plan(matrix: np.ndarray, size: tuple[int, int], image_hw: tuple[int, int]):
    """Source region (x0, y0, x1, y1) that the crop reads, and the shrink factor to apply first."""
    height, width = size
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], np.float64)
    source = corners @ inverse.T
    x0 = max(0, math.floor(source[:, 0].min()) - ROI_MARGIN)
    y0 = max(0, math.floor(source[:, 1].min()) - ROI_MARGIN)
    x1 = min(image_hw[1], math.ceil(source[:, 0].max()) + ROI_MARGIN + 1)
    y1 = min(image_hw[0], math.ceil(source[:, 1].max()) + ROI_MARGIN + 1)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2].astype(np.float64))))  # crop px per photo px
    shrink = 1.0 / scale if scale < 1.0 / MAX_SHRINK else 1.0
    return (x0, y0, x1, y1), shrink


def warp_face(image: torch.Tensor, matrix: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Warp one face out of ``image`` [3, H, W] with ``matrix`` (photo -> crop); returns [3, h, w]."""
    (x0, y0, x1, y1), shrink = _crop_plan(matrix, size, image.shape[-2:])
    if x1 <= x0 or y1 <= y0:  # the face lies wholly outside the photo
        return image.new_zeros(3, *size)
    region = image[None, :, y0:y1, x0:x1]
    matrix = matrix.astype(np.float64).copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)  # photo -> region coordinates
    if shrink > 1.0:
        new_hw = (max(1, round(region.shape[-2] / shrink)), max(1, round(region.shape[-1] / shrink)))
        factors = (region.shape[-1] / new_hw[1], region.shape[-2] / new_hw[0])
        region = F.interpolate(region, size=new_hw, mode="bilinear", align_corners=False, antialias=True)
        # Pixel centre i of the shrunk region sits at (i + 0.5) * f - 0.5 in the region.
        to_region = np.array([[factors[0], 0, 0.5 * factors[0] - 0.5], [0, factors[1], 0.5 * factors[1] - 0.5], [0, 0, 1]])
        matrix = np.vstack([matrix, [0, 0, 1]]) @ to_region
        matrix = matrix[:2]
    theta = torch.as_tensor(matrix, dtype=image.dtype, device=image.device)[None]
    return warp_affine(region, theta, dsize=size, mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def align_faces(image: torch.Tensor, landmarks: list[np.ndarray] | np.ndarray, spec: Crop) -> torch.Tensor:
    """Every face of one photo ``image`` [3, H, W] (RGB, [0, 1]) aligned for ``spec``: [N, 3, h, w]."""
    crops = [warp_face(image, similarity_transform(points, spec.template), spec.input_size) for points in landmarks]
    if not crops:
        return image.new_zeros(0, 3, *spec.input_size)
    return torch.stack(crops)

