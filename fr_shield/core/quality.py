"""Image-quality metrics between an original and a protected image: SSIM, PSNR and L-infinity.

Every function takes two float batches ``x`` and ``y`` of the same shape ``[B, C, H, W]`` with
values in [0, 1] and returns one value per image, a ``[B]`` tensor (so a batch of protected
photos gets one row each in a results table). The metrics are computed on the float values as
given; to score what a user will actually save, quantise both images to 8 bits first.

* :func:`ssim`: structural similarity (Wang et al., 2004) with the usual settings: an 11-tap
  Gaussian window of sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, data range 1, computed per channel
  on the "valid" part of the image (no padding, so the border ``window // 2`` pixels on each side
  only enter through windows that fit) and averaged over channels and pixels. This is
  scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)`` and MATLAB's ``ssim`` recipe.
  1 for identical images; needs ``H, W >= 11``.
* :func:`psnr`: peak signal-to-noise ratio in dB for a peak of 1, ``10 log10(1 / MSE)`` with the
  MSE taken over each image's channels and pixels; ``inf`` for identical images.
* :func:`linf`: the largest absolute per-pixel, per-channel change, on the [0, 1] scale
  (multiply by 255 for 8-bit levels); the budget an L-inf attack is bounded by.

Example::

    >>> import torch
    >>> x = torch.rand(2, 3, 64, 64)
    >>> y = (x + 4 / 255).clamp(0, 1)
    >>> linf(x, y).shape
    torch.Size([2])
    >>> bool((ssim(x, x) == 1).all()), bool(torch.isinf(psnr(x, x)).all())
    (True, True)
"""

from __future__ import annotations

import kornia
import torch

__all__ = ["ssim", "psnr", "linf", "SSIM_WINDOW"]

SSIM_WINDOW = 11


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected batches [B, C, H, W], got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"{name}: expected float images in [0, 1], got {x.dtype} and {y.dtype}")


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean SSIM per image, ``[B]``; Gaussian window (sigma 1.5), valid region, data range 1."""
    _check_pair(x, y, "ssim")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim: images must be at least {window_size} px on each side, got {tuple(x.shape[-2:])}")
    # eps=0: the constants c1, c2 already keep the denominator positive, and kornia's default eps
    # would nudge identical flat images below 1.
    index_map = kornia.metrics.ssim(x, y, window_size, max_val=1.0, eps=0.0, padding="valid")
    return index_map.flatten(1).mean(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, ``[B]``, for a peak value of 1; ``inf`` where the images are equal.

    (``kornia.metrics.psnr`` pools the MSE over the whole batch, hence our own per-image version.)
    """
    _check_pair(x, y, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)  # 1/0 -> inf, log10(inf) -> inf


def linf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest absolute difference per image, ``[B]``, on the [0, 1] scale."""
    _check_pair(x, y, "linf")
    return (x - y).abs().flatten(1).amax(dim=1)
