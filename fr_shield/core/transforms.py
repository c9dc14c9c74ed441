"""The image transforms an FR operator (or a platform) applies: the one ``Transform`` registry.

Each entry carries everything any part of fr_shield needs of a transform: its name (the value in
``results.csv`` and ``conf/blur/``), its short name and the one label format for a level
(``median_k9``, ``jpeg_q75``, ``resize_x0.5``, ``none``: metrics, check reports, trade-off cells),
the operator's own version (``fn``: a real JPEG), the version ``fr-shield check`` applies
(``platform``: the same result, in bounded memory), a differentiable twin for attack branches
and EOT (``differentiable``: Kornia's differentiable JPEG for ``jpeg``), and how a level scales
when a face is worked on at a lower resolution (kernel sizes shrink; JPEG quality does not).

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
from kornia.enhance import jpeg_codec_differentiable
from PIL import Image

from fr_shield.core.errors import ConfigError

KORNIA_MEDIAN_NETWORKS = (3, 5)  # kernels Kornia filters with a selection network (no autograd): faster there

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

    Pads with reflection here, so borders are reflected whatever Kornia pads with (older releases
    padded with zeros: dark frames). Differentiable (the gradient flows to the selected median
    pixel). Kornia's median is used where it is fastest (its selection networks for k = 3 and 5,
    which it takes only without autograd); otherwise each window is a strided view of the padded
    image and ``torch.median`` runs along its contiguous last axis: the same values, about 3x faster
    forward and backward than Kornia's autograd path, which gathers the windows with a k*k-filter
    convolution (k^2 multiply-adds per window element; at k = 11 that was a quarter of an attack step).
    """
    _check_images(images)
    k = _check_kernel(kernel_size)
    if k == 1:
        return images.clamp(0, 1)
    p = k // 2
    padded = F.pad(images, (p, p, p, p), mode=_border(images, k))
    if k in KORNIA_MEDIAN_NETWORKS and not images.requires_grad:
        return KF.median_blur(padded, (k, k))[..., p:-p, p:-p].clamp(0, 1)
    windows = padded.unfold(2, k, 1).unfold(3, k, 1).reshape(*images.shape, k * k)
    return windows.median(dim=-1).values.clamp(0, 1)


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


def differentiable_jpeg(images: torch.Tensor, quality: float) -> torch.Tensor:
    """JPEG encode-decode at ``quality`` (1..100) that gradients pass through (Kornia's codec:
    DCT, the standard tables scaled by quality, a smooth rounding; close to libjpeg, not equal)."""
    quality_tensor = torch.tensor([float(quality)], device=images.device, dtype=images.dtype)
    return jpeg_codec_differentiable(images.clamp(0, 1), quality_tensor).clamp(0, 1)


def median_blur_bounded(images: torch.Tensor, kernel_size: int, budget_bytes: float = 3e8) -> torch.Tensor:
    """``median_blur`` over horizontal strips: the same result in bounded memory (the median's
    memory grows with k^2 per pixel; a big face's region would need gigabytes at once)."""
    _check_images(images)
    kernel = _check_kernel(kernel_size)
    height, width = images.shape[-2:]
    rows = max(kernel, int(budget_bytes / (kernel * kernel * images.shape[1] * width * 4 * 2)))
    if rows >= height:
        return median_blur(images, kernel)
    half = kernel // 2
    parts = []
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        start, stop = max(0, top - half), min(height, bottom + half)
        strip = median_blur(images[..., start:stop, :], kernel)
        parts.append(strip[..., top - start:top - start + (bottom - top), :])
    return torch.cat(parts, dim=-2)


class UnknownTransform(ConfigError, KeyError):
    """A transform name the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


LEVEL_PREFIX = {"kernel_size": "k", "quality": "q", "factor": "x", "none": ""}


@dataclass(frozen=True)
class Transform:
    """One family of transforms, its levels and its twins (see the module docstring)."""

    name: str
    short: str  # label prefix: median_k9
    fn: Callable[..., torch.Tensor]  # the operator's transform
    levels: tuple  # the levels a benchmark sweeps by default
    level_name: str  # "kernel_size", "quality", "factor" or "none"
    differentiable: Callable[..., torch.Tensor] | None  # twin for attack branches and EOT; None: none
    description: str = ""
    platform: Callable[..., torch.Tensor] | None = None  # what check applies (default: fn)

    def __call__(self, images: torch.Tensor, level: object = None) -> torch.Tensor:
        return self.fn(images, level)

    def apply_platform(self, images: torch.Tensor, level: object = None) -> torch.Tensor:
        return (self.platform or self.fn)(images, level)

    def label(self, level: object = None) -> str:
        """The one label of this transform at ``level``: ``median_k9``, ``jpeg_q75``, ``resize_x0.5``."""
        if self.level_name == "none" or level is None:
            return "none"
        if isinstance(level, float) and level.is_integer() and self.level_name != "factor":
            level = int(level)
        return f"{self.short}_{LEVEL_PREFIX[self.level_name]}{level}"

    @property
    def scales_with_resolution(self) -> bool:
        return self.level_name == "kernel_size"

    def scaled(self, level: object, scale: float) -> object | None:
        """The level for a photo worked on at ``scale`` (< 1) of its size: kernels rounded to the
        nearest odd size (None when under 3 px: the transform vanishes there); others unchanged."""
        if not self.scales_with_resolution or level is None:
            return level
        kernel = scaled_kernel(int(level), scale)
        return kernel if kernel >= 3 else None

    def reach(self, level: object) -> int:
        """How far (px) one output pixel reads around it: the kernel; 1 for the others."""
        return int(level) if self.scales_with_resolution and level is not None else 1


def scaled_kernel(kernel: int, scale: float) -> int:
    """A blur kernel for a photo worked on at ``scale`` of its size: the nearest odd size."""
    return 2 * round((kernel * scale - 1) / 2) + 1


def _kernel_family(name: str, short: str, fn: Callable, description: str, differentiable: bool = True,
                   platform: Callable | None = None) -> Transform:
    return Transform(name, short, fn, KERNEL_SIZES, "kernel_size", fn if differentiable else None, description, platform)


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("none", "none", identity, (None,), "none", identity, "no transform"),
        _kernel_family("median_blur", "median", median_blur, "median filter, reflect borders",
                       platform=median_blur_bounded),
        _kernel_family("box_blur", "box", box_blur, "box filter, reflect borders"),
        _kernel_family("gaussian_blur2d", "gaussian", gaussian_blur2d, "gaussian, OpenCV sigma rule, reflect borders"),
        _kernel_family("motion_blur", "motion", motion_blur, "motion blur, angle 45, direction 0, reflect borders"),
        _kernel_family("max_blur_pool2d", "max", max_blur_pool2d, "max-blur-pool stride 2, resized back",
                       differentiable=False),
        _kernel_family("blur_pool2d", "pool", blur_pool2d, "blur-pool stride 2, resized back", differentiable=False),
        Transform("jpeg", "jpeg", jpeg, JPEG_QUALITIES, "quality", differentiable_jpeg,
                  "JPEG round trip (PIL, 4:2:0); differentiable twin: Kornia's codec"),
        Transform("resize", "resize", resize, RESIZE_FACTORS, "factor", resize, "antialiased down-scale, then back up"),
    )
}
# Other names of a transform: its short name, and "identity" for the attacks' unblurred branch.
_ALIASES = {**{t.short: t.name for t in TRANSFORMS.values()}, "identity": "none"}


def available() -> list[str]:
    return list(TRANSFORMS)


def get(name: str) -> Transform:
    """A transform by its name or short name (``median_blur`` or ``median``; ``identity`` is ``none``)."""
    key = _ALIASES.get(name, name)
    if key not in TRANSFORMS:
        raise UnknownTransform(f"unknown transform '{name}'; choose one of: {', '.join(available())}")
    return TRANSFORMS[key]


def label(name: str, level: object = None) -> str:
    """``label("median_blur", 9) == "median_k9"`` (see ``Transform.label``)."""
    return get(name).label(level)


def parse_label(text: str) -> tuple[Transform, object]:
    """``"median_k9"`` -> (median_blur, 9); ``"jpeg_q75"`` -> (jpeg, 75); ``"none"`` -> (none, None)."""
    if text == "none":
        return TRANSFORMS["none"], None
    short, _, rest = text.rpartition("_")
    try:
        transform = get(short)
    except KeyError:
        transform = None
    prefix = LEVEL_PREFIX.get(transform.level_name) if transform else None
    if not transform or not prefix or not rest.startswith(prefix):
        raise ValueError(f"not a transform label: '{text}' (e.g. none, median_k9, box_k11, jpeg_q75, resize_x0.5)")
    value = rest[len(prefix):]
    try:
        level = float(value) if transform.level_name == "factor" else int(value)
    except ValueError as error:
        raise ValueError(f"not a transform label: '{text}' (bad level '{value}')") from error
    return transform, level


def apply(name: str, images: torch.Tensor, level: object = None) -> torch.Tensor:
    """Apply transform ``name`` at ``level`` to ``images`` [B, C, H, W] in [0, 1]; same shape out."""
    transform = get(name)
    if level is None and transform.level_name != "none":
        raise ValueError(f"transform '{name}' needs a level ({transform.level_name}), e.g. {transform.levels[0]}")
    return transform(images, level)
