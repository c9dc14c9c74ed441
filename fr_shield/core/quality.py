"""Image quality of a protected photo against its original: the one quality measurer.

Pixel metrics (SSIM, PSNR, L-infinity, CIE76 colour difference) and, on top, ``FaceQuality``
(every face's 112 x 112 ArcFace crop: ST-LPIPS, SSIM, PSNR, Delta E) and ``photo_quality`` (a
photo's record: face means and full-photo values), used by the budget, the tool and the study.

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
* :func:`ssim_worst`: the same SSIM map pooled over its worst ``WORST_FRACTION`` (5 %) of
  pixels instead of all of them. The mean lets a perturbation draw a few lines or patches on
  flat skin, plainly seen, while the rest of the face keeps it high; percentile pooling
  (Moorthy and Bovik, "Visual importance pooling for image quality assessment", IEEE JSTSP 2009)
  follows where the eye looks, at the worst of the picture. 1 for identical images.
* :func:`visibility`: how visible a change is as *structure* (or colour): its contrast in a bank
  of channels on luma (elongated Gabor filters of wavelength 2, 4, 8 and 16 px in 8
  orientations, and one centre-surround blob filter per wavelength) over the contrast at which it
  starts to show there (twice as high for the 2 px channel, where the eye is less sensitive).
  That threshold rises with the clean face's texture: its energy at the same scale averaged over
  orientations, under a compressive power (contrast masking). A change hides among hair or pores,
  but not when it darkens a single edge such as an eyebrow or deepens a crease. The strongest
  channel per pixel is summed over the face by a Minkowski mean (exponent 8, between the mean and
  the maximum). Elongated filters add up a change that continues along a direction (a line on a
  cheek, stripes through hair), blob and 16 px filters see mottling and shading on smooth skin,
  the 2 px channel grain of a few levels; SSIM's 11-pixel windows see neither the line's length
  nor its direction. 0 for identical images; changes start to show on a 100 px face at about 1
  (``experiments/TRADEOFF.md``, tenth session). One more channel sees colour: the change of
  CIELAB a*, b* through the eye's low-pass colour vision (a Gaussian of 2 px), over 1 Delta E.
  Fine colour grain averages out there; the pink or cyan patches an optimiser paints when only
  brightness is watched do not (eleventh session).
* :func:`psnr`: peak signal-to-noise ratio in dB for a peak of 1, ``10 log10(1 / MSE)`` with the
  MSE taken over each image's channels and pixels; ``inf`` for identical images.
* :func:`linf`: the largest absolute per-pixel, per-channel change, on the [0, 1] scale
  (multiply by 255 for 8-bit levels); the budget an L-inf attack is bounded by.
* :func:`delta_e`: CIE76 colour difference in CIELAB (sRGB, D65; Kornia's conversion), mean and
  95th percentile per image. About 2.3 is a just-noticeable difference; SSIM, computed per RGB
  channel, misses coloured blotches that Delta E sees.

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

import math
from collections.abc import Sequence
from functools import lru_cache

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from fr_shield.core.align import FACE_CROP, align_faces

__all__ = ["ssim", "ssim_worst", "visibility", "psnr", "linf", "delta_e", "FaceQuality", "FACE_METRICS", "photo_quality",
           "SSIM_WINDOW"]

SSIM_WINDOW = 11
WORST_FRACTION = 0.05  # ssim_worst pools the worst 5 % of its map
# visibility's model of the eye on a 112-pixel face crop: the filters' wavelengths (px; those
# above 8 px run a shorter bank on the luma at half resolution, so no filter is large), the
# eye's relative sensitivity at each (lower at 2 px, about 20 cycles per degree at 100 % on a
# screen at arm's length) and the orientations; the filters' answer at which a change starts to
# show on flat skin (that of a pattern about 1.4 levels of 8 bits in amplitude, set so that 1 is
# where a scaled-down `mid` perturbation starts to show on the group photo's 100 px faces); how
# the clean face's own structure raises that threshold (contrast masking with a compressive
# power, Legge & Foley 1980, by the energy of the scale's channels averaged over orientations:
# texture masks a change, a single edge or crease does not mask darkening it); and the
# Minkowski exponent that sums the map over the face (a large faint pattern shows, and so does a
# small strong one, such as darker eyebrows).
VISIBILITY_MODEL = 4  # bumped whenever visibility's scale changes (cached results keyed by a limit on it)
VISIBILITY_WAVELENGTHS = (2.0, 4.0, 8.0, 16.0)
VISIBILITY_SENSITIVITY = (0.5, 1.0, 1.0, 1.0)
VISIBILITY_LARGEST_FILTER = 8.0  # longer wavelengths run this bank on a halved image
VISIBILITY_ORIENTATIONS = 8
VISIBILITY_THRESHOLD = 0.7 / 255
VISIBILITY_MASKING_POWER = 0.5
VISIBILITY_POOLING = 8.0
# Colour: the eye's colour channels are low-pass (it resolves far less detail in colour than in
# brightness, the reason JPEG halves chroma), so a colour change is seen through a Gaussian of
# this many pixels (on the 112 px crop, as S-CIELAB blurs before Delta E); the smoothed change
# of CIELAB a*, b* starts to show at this Delta E (set by eye: a coloured perturbation scaled to
# read 0.6 looks unchanged, to 1.2-1.3 faintly pinker skin on one face of three, side by side).
VISIBILITY_CHROMA_SIGMA = 2.0
VISIBILITY_CHROMA_THRESHOLD = 1.0


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected batches [B, C, H, W], got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"{name}: expected float images in [0, 1], got {x.dtype} and {y.dtype}")


def _ssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int, name: str) -> torch.Tensor:
    """The SSIM index per pixel of the valid region, averaged over channels, flattened: [B, N]."""
    _check_pair(x, y, name)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"{name}: images must be at least {window_size} px on each side, got {tuple(x.shape[-2:])}")
    # eps=0: the constants c1, c2 already keep the denominator positive, and kornia's default eps
    # would nudge identical flat images below 1.
    return kornia.metrics.ssim(x, y, window_size, max_val=1.0, eps=0.0, padding="valid").mean(dim=1).flatten(1)


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean SSIM per image, ``[B]``; Gaussian window (sigma 1.5), valid region, data range 1."""
    return _ssim_map(x, y, window_size, "ssim").mean(dim=1)


def ssim_worst(x: torch.Tensor, y: torch.Tensor, fraction: float = WORST_FRACTION,
               window_size: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean of the lowest ``fraction`` of each image's SSIM map, ``[B]`` (differentiable: the
    gradient reaches the pixels of the worst windows)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"ssim_worst: fraction must be in (0, 1], got {fraction}")
    index_map = _ssim_map(x, y, window_size, "ssim_worst")
    count = max(1, round(fraction * index_map.shape[1]))
    return torch.topk(index_map, count, dim=1, largest=False).values.mean(dim=1)


def _filter_radius(wavelength: float) -> int:
    """Half the side of a visibility filter: two of its along-the-stripes sigmas (0.8 wavelength)."""
    return math.ceil(2 * 0.8 * wavelength)


@lru_cache(maxsize=8)
def _visibility_bank(wavelength: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The filter pairs [2 * (n + 1), 1, k, k] of one wavelength: n quadrature Gabor pairs (even,
    odd), one per orientation, elongated along their stripes (sigma 0.8 wavelength along, 0.4
    across), the even one without a DC response; and one isotropic centre-surround pair (a
    difference of Gaussians of sigma wavelength / 4 and / 2, paired with zeros) for blobs. Each
    is scaled so a matched pattern of contrast c answers about c / 2."""
    along, across = 0.8 * wavelength, 0.4 * wavelength
    radius = _filter_radius(wavelength)
    y, x = torch.meshgrid(torch.arange(-radius, radius + 1.0), torch.arange(-radius, radius + 1.0), indexing="ij")
    pairs = []
    for index in range(VISIBILITY_ORIENTATIONS):
        angle = math.pi * index / VISIBILITY_ORIENTATIONS
        u = x * math.cos(angle) + y * math.sin(angle)  # across the stripes
        v = -x * math.sin(angle) + y * math.cos(angle)  # along them
        envelope = torch.exp(-(u ** 2 / (2 * across ** 2) + v ** 2 / (2 * along ** 2)))
        even = envelope * torch.cos(2 * math.pi * u / wavelength)
        even = even - envelope * even.sum() / envelope.sum()
        odd = envelope * torch.sin(2 * math.pi * u / wavelength)
        pairs += [even / envelope.sum(), odd / envelope.sum()]
    squared = x ** 2 + y ** 2
    centre, surround = (torch.exp(-squared / (2 * sigma ** 2)) for sigma in (wavelength / 4, wavelength / 2))
    blob = centre / centre.sum() - surround / surround.sum()
    pairs += [blob / (2 * blob.clamp_min(0).sum()), torch.zeros_like(blob)]
    return torch.stack(pairs)[:, None].to(device, dtype)


def _channel_energy(luma: torch.Tensor) -> list[torch.Tensor]:
    """[B, 1, H, W] -> per wavelength [B, orientations + 1, H, W]: the energy of each filter pair.
    Wavelengths above ``VISIBILITY_LARGEST_FILTER`` run a shorter bank on the luma halved."""
    energies = []
    for wavelength in VISIBILITY_WAVELENGTHS:
        level, bank_wavelength = luma, wavelength
        while bank_wavelength > VISIBILITY_LARGEST_FILTER:
            level, bank_wavelength = F.avg_pool2d(level, 2), bank_wavelength / 2
        radius = _filter_radius(bank_wavelength)
        bank = _visibility_bank(bank_wavelength, luma.device, luma.dtype)
        pairs = F.conv2d(F.pad(level, (radius,) * 4, mode="reflect"), bank).unflatten(1, (-1, 2))
        energy = (pairs.pow(2).sum(2) + 1e-20).sqrt()  # eps: a finite gradient at no change
        if level is not luma:
            energy = F.interpolate(energy, size=luma.shape[-2:], mode="bilinear", align_corners=False)
        energies.append(energy)
    return energies


def _visibility_threshold(clean_energy: torch.Tensor, sensitivity: float) -> torch.Tensor:
    """The contrast a change needs in each channel of one wavelength to show on this clean face."""
    masking = clean_energy.mean(dim=1, keepdim=True)
    floor = VISIBILITY_THRESHOLD / sensitivity
    return floor * (masking / floor).clamp_min(1.0).pow(VISIBILITY_MASKING_POWER)


def _chroma_change(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W]: the colour change (CIELAB a*, b*; Delta E units) as the eye's low-pass
    colour channels see it. Brightness is the luma channels' part."""
    sigma = VISIBILITY_CHROMA_SIGMA
    size = 2 * math.ceil(3 * sigma) + 1
    change = (kornia.color.rgb_to_lab(y) - kornia.color.rgb_to_lab(x))[:, 1:]
    smoothed = kornia.filters.gaussian_blur2d(change, (size, size), (sigma, sigma), border_type="reflect")
    return (smoothed.pow(2).sum(1, keepdim=True) + 1e-20).sqrt()  # eps: a finite gradient at no change


def visibility(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How visible the change from ``x`` to ``y`` is as structure or colour, ``[B]`` (0: none;
    about 1: where a change starts to show on a 100-pixel face; differentiable in ``y``). Per
    pixel the change's energy in the channel where it shows most (brightness over the threshold
    the clean face sets there, or smoothed colour over its own); summed over the face by a
    Minkowski mean. RGB inputs in [0, 1], more than 52 px on each side (the 16 px channel's
    reflect padding on the halved image needs it)."""
    _check_pair(x, y, "visibility")
    if x.shape[1] != 3:
        raise ValueError(f"visibility: needs RGB images, got {x.shape[1]} channels")
    if min(x.shape[-2:]) <= 4 * _filter_radius(VISIBILITY_LARGEST_FILTER):
        raise ValueError(f"visibility: images too small for the filters, got {tuple(x.shape[-2:])}")
    clean = kornia.color.rgb_to_grayscale(x)
    changes = _channel_energy(kornia.color.rgb_to_grayscale(y) - clean)
    with torch.no_grad():
        thresholds = [_visibility_threshold(energy, sensitivity)
                      for energy, sensitivity in zip(_channel_energy(clean), VISIBILITY_SENSITIVITY)]
    ratios = [change / threshold for change, threshold in zip(changes, thresholds)]
    ratios.append(_chroma_change(x, y) / VISIBILITY_CHROMA_THRESHOLD)
    ratio = torch.cat(ratios, 1).amax(dim=1).flatten(1)
    # Divided by its maximum first: a tiny change's ratio ** 8 would underflow to 0, where the
    # root's gradient is infinite (NaN at an attack's first step, from an unchanged photo).
    peak = ratio.amax(dim=1, keepdim=True).clamp_min(1e-12)
    return peak[:, 0] * (ratio / peak).pow(VISIBILITY_POOLING).mean(dim=1).pow(1 / VISIBILITY_POOLING)


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


def delta_e(x: torch.Tensor, y: torch.Tensor, quantile: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """CIE76 colour difference per image: (mean, ``quantile``), each ``[B]``; RGB inputs in [0, 1]."""
    _check_pair(x, y, "delta_e")
    if x.shape[1] != 3:
        raise ValueError(f"delta_e: needs RGB images, got {x.shape[1]} channels")
    difference = (kornia.color.rgb_to_lab(x.float()) - kornia.color.rgb_to_lab(y.float())).norm(dim=1).flatten(1)
    return difference.mean(dim=1), torch.quantile(difference, quantile, dim=1)


# Per face crop, what FaceQuality.scores can measure: mean Delta E and its 95th percentile come
# from one call of delta_e; ST-LPIPS from the metric the instance holds.
_PAIR_METRICS = {"ssim": ssim, "ssim_worst": ssim_worst, "visibility": visibility, "psnr": psnr}
FACE_METRICS = ("lpips", "ssim", "ssim_worst", "visibility", "psnr", "delta_e", "delta_e_p95")


class FaceQuality:
    """Quality of each face of candidate images against one fixed clean image, on the ArcFace crop.

    ``clean`` is one image [1, 3, H, W] (a photo or a region of it); ``landmarks`` its faces in its
    pixels. ``scores`` gives the metrics asked for (default: all of ``FACE_METRICS``) per face,
    from one alignment of the candidate; the clean crops and their ST-LPIPS features are computed
    once, for bisection.
    """

    def __init__(self, clean: torch.Tensor, landmarks: Sequence[np.ndarray], metric: torch.nn.Module):
        self.landmarks = list(landmarks)
        self.metric = metric
        with torch.no_grad():
            self.clean_crops = align_faces(clean[0], self.landmarks, FACE_CROP)
            self.clean_features = metric.features(self.clean_crops) if hasattr(metric, "features") else None

    def crops(self, candidate: torch.Tensor) -> torch.Tensor:
        return align_faces(candidate[0], self.landmarks, FACE_CROP)

    @torch.no_grad()
    def _lpips(self, crops: torch.Tensor) -> torch.Tensor:
        if self.clean_features is not None:
            return self.metric.distance_from_features(self.clean_features, self.metric.features(crops))
        return self.metric(self.clean_crops, crops)

    @torch.no_grad()
    def scores(self, candidate: torch.Tensor, metrics: Sequence[str] = FACE_METRICS) -> dict[str, list[float]]:
        """Per face, each of ``metrics`` (names of ``FACE_METRICS``)."""
        if not self.landmarks:
            return {key: [] for key in metrics}
        crops = self.crops(candidate)
        values = {}
        if {"delta_e", "delta_e_p95"} & set(metrics):
            values["delta_e"], values["delta_e_p95"] = delta_e(self.clean_crops, crops)
        for key in metrics:
            if key == "lpips":
                values[key] = self._lpips(crops)
            elif key not in values:
                values[key] = _PAIR_METRICS[key](self.clean_crops, crops)
        return {key: values[key].cpu().tolist() for key in metrics}


@torch.no_grad()
def photo_quality(clean: torch.Tensor, protected: torch.Tensor, landmarks: Sequence[np.ndarray],
                  metric: torch.nn.Module) -> dict:
    """One protected photo's record [1, 3, H, W]: face-crop means (``*_face``) and full-photo values."""
    result = {
        "lpips_photo": float(metric(clean, protected)[0]),
        "ssim_photo": float(ssim(clean, protected)[0]),
        "psnr_photo": float(psnr(clean, protected)[0]),
        "linf": float(linf(clean, protected)[0]),
    }
    if len(landmarks):
        faces = FaceQuality(clean, landmarks, metric).scores(protected)
        result.update({f"{key}_face": float(np.mean(values)) for key, values in faces.items()})
    return result
