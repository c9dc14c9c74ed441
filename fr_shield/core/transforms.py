"""The FR operator's image transforms: a name -> ``Transform`` registry.

Every transform takes a batch ``[B, C, H, W]`` of float images in [0, 1] and a level, and returns a
batch of the same shape, clamped to [0, 1]. Families and their levels:

========================  ==============  ==========================================================
name                      level           notes
========================  ==============  ==========================================================
``none``                  ignored         identity
``median_blur``           odd kernel      reflect padding done here (old Kornia pads with zeros)
``box_blur``              odd kernel      reflect padding
``gaussian_blur2d``       odd kernel      reflect; sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8 (OpenCV)
``motion_blur``           odd kernel      reflect; angle 45 deg, direction 0 (symmetric streak)
``max_blur_pool2d``       odd kernel      Kornia's stride 2, then bilinear resize back to H x W
``blur_pool2d``           odd kernel      Kornia's stride 2, then bilinear resize back to H x W
``jpeg``                  quality 1..100  real JPEG round trip (PIL, 4:2:0); not differentiable
``resize``                factor (0, 1]   antialiased bilinear down, bilinear back up
========================  ==============  ==========================================================

Kernel families reject even kernel sizes (``ValueError``): Kornia's median silently returned a
wrongly sized image for them in older releases. Reflect padding needs each side longer than
``k // 2``; smaller images fall back to replicate padding. All transforms except ``jpeg`` are
differentiable, so the attacks reuse the blurs (median / box / gaussian) as branches.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia import filters as KF
from PIL import Image

KERNEL_SIZES: tuple[int, ...] = (3, 5, 7, 9, 11, 17)
JPEG_QUALITIES: tuple[int, ...] = (90, 75, 50, 30, 10)
RESIZE_FACTORS: tuple[float, ...] = (0.75, 0.5, 0.25)
MOTION_ANGLE: float = 45.0  # degrees; diagonal streak
MOTION_DIRECTION: float = 0.0  # in [-1, 1]; 0 spreads the streak evenly both ways


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")


def _check_kernel(kernel_size: object) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)):
        raise ValueError(f"kernel size must be an odd positive integer, got {kernel_size!r}")
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size must be an odd positive integer, got {k}")
    return k


def _border(images: torch.Tensor, kernel_size: int) -> str:
    # Reflect padding needs pad < size on each axis; tiny images fall back to replicate.
    return "reflect" if kernel_size // 2 < min(images.shape[-2:]) else "replicate"


def gaussian_sigma(kernel_size: int) -> float:
    """OpenCV's default sigma for a kernel size (``getGaussianKernel`` with sigma <= 0)."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def median_blur(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Median of each ``k x k`` window, with reflect borders.

    Pads with reflection here and crops after Kornia's filter, so borders are reflected whatever
    Kornia pads with (older releases padded with zeros: dark frames). Differentiable (the gradient
    flows to the selected median pixel).
    """
    _check_images(images)
    k = _check_kernel(kernel_size)
    if k == 1:
        return images.clamp(0, 1)
    p = k // 2
    padded = F.pad(images, (p, p, p, p), mode=_border(images, k))
    out = KF.median_blur(padded, (k, k))
    return out[..., p:-p, p:-p].clamp(0, 1)


def box_blur(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Mean of each ``k x k`` window, reflect borders."""
    _check_images(images)
    k = _check_kernel(kernel_size)
    return KF.box_blur(images, (k, k), border_type=_border(images, k)).clamp(0, 1)


def gaussian_blur2d(images: torch.Tensor, kernel_size: int, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur, reflect borders; ``sigma`` defaults to OpenCV's rule for the kernel size.

    (LowKey's smoothing branch uses kernel 7 with sigma 3: pass ``sigma=3.0`` for it.)
    """
    _check_images(images)
    k = _check_kernel(kernel_size)
    s = gaussian_sigma(k) if sigma is None else float(sigma)
    if s <= 0:
        raise ValueError(f"sigma must be positive, got {s}")
    return KF.gaussian_blur2d(images, (k, k), (s, s), border_type=_border(images, k)).clamp(0, 1)


def motion_blur(
    images: torch.Tensor,
    kernel_size: int,
    angle: float = MOTION_ANGLE,
    direction: float = MOTION_DIRECTION,
) -> torch.Tensor:
    """Linear motion blur of length ``k`` at ``angle`` degrees; reflect borders (Kornia's default
    was constant in older releases, which darkens edges)."""
    _check_images(images)
    k = _check_kernel(kernel_size)
    return KF.motion_blur(images, k, float(angle), float(direction), border_type=_border(images, k)).clamp(0, 1)


def _resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def max_blur_pool2d(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Kornia's max-blur-pool (max pool 2, binomial blur ``k``, stride 2), resized back to ``H x W``
    (bilinear) so the FR pipeline sees the input size."""
    _check_images(images)
    k = _check_kernel(kernel_size)
    return _resize_to(KF.max_blur_pool2d(images, k), tuple(images.shape[-2:])).clamp(0, 1)


def blur_pool2d(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Kornia's blur-pool (binomial blur ``k``, stride 2), resized back to ``H x W`` (bilinear)."""
    _check_images(images)
    k = _check_kernel(kernel_size)
    return _resize_to(KF.blur_pool2d(images, k), tuple(images.shape[-2:])).clamp(0, 1)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG re-encoding at ``quality`` (PIL/libjpeg, 4:2:0 chroma subsampling).

    Quantises to 8 bits first. Not differentiable: the result is detached. C must be 1 or 3.
    """
    _check_images(images)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs 1 or 3 channels, got {images.shape[1]}")
    arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for array in arrays:
        mode = "L" if array.shape[-1] == 1 else "RGB"
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(-1) if mode == "L" else array, mode=mode).save(
            buffer, format="JPEG", quality=int(quality), subsampling=2
        )
        buffer.seek(0)
        out = np.asarray(Image.open(buffer).convert(mode))
        decoded.append(out[..., None] if mode == "L" else out)
    result = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return (result.to(device=images.device, dtype=images.dtype) / 255.0).contiguous()


def resize(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Downscale by ``factor`` (antialiased bilinear, as a camera pipeline or web resizer would),
    then upscale back to ``H x W`` (bilinear). ``factor`` in (0, 1]; each side keeps >= 1 pixel."""
    _check_images(images)
    factor = float(factor)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"resize factor must be in (0, 1], got {factor}")
    h, w = images.shape[-2:]
    small_size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if small_size == (h, w):
        return images.clamp(0, 1)
    small = F.interpolate(images, size=small_size, mode="bilinear", align_corners=False, antialias=True)
    return _resize_to(small, (h, w)).clamp(0, 1)


def identity(images: torch.Tensor, level: object = None) -> torch.Tensor:
    _check_images(images)
    return images


@dataclass(frozen=True)
class Transform:
    """One family of operator transforms and the levels a benchmark sweeps by default."""

    name: str
    fn: Callable[[torch.Tensor, object], torch.Tensor]
    levels: tuple
    level_name: str  # "kernel_size", "quality", "factor" or "none"
    differentiable: bool
    description: str = ""

    def __call__(self, images: torch.Tensor, level: object = None) -> torch.Tensor:
        return self.fn(images, level)


def _kernel_family(name: str, fn: Callable, description: str) -> Transform:
    return Transform(name, fn, KERNEL_SIZES, "kernel_size", True, description)


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("none", identity, (None,), "none", True, "no transform"),
        _kernel_family("median_blur", median_blur, "median filter, reflect borders"),
        _kernel_family("box_blur", box_blur, "box filter, reflect borders"),
        _kernel_family("gaussian_blur2d", gaussian_blur2d, "gaussian, OpenCV sigma rule, reflect borders"),
        _kernel_family("motion_blur", motion_blur, "motion blur, angle 45, direction 0, reflect borders"),
        _kernel_family("max_blur_pool2d", max_blur_pool2d, "max-blur-pool stride 2, resized back"),
        _kernel_family("blur_pool2d", blur_pool2d, "blur-pool stride 2, resized back"),
        Transform("jpeg", jpeg, JPEG_QUALITIES, "quality", False, "JPEG round trip (PIL, 4:2:0)"),
        Transform("resize", resize, RESIZE_FACTORS, "factor", True, "antialiased down-scale, then back up"),
    )
}


def available() -> list[str]:
    return list(TRANSFORMS)


def get(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise KeyError(f"unknown transform '{name}'; available: {', '.join(available())}")
    return TRANSFORMS[name]


def apply(name: str, images: torch.Tensor, level: object = None) -> torch.Tensor:
    """Apply transform ``name`` at ``level`` to ``images`` [B, C, H, W] in [0, 1]; same shape out."""
    transform = get(name)
    if level is None and transform.level_name != "none":
        raise ValueError(f"transform '{name}' needs a level ({transform.level_name}), e.g. {transform.levels[0]}")
    return transform(images, level)
