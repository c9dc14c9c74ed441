"""Expectation over transformations (EOT) and input diversity for transferable, robust protection.

An operator may blur, re-encode or resize a scraped photo before enrolling it, and may run a model
the attack never saw. Two ideas from the transfer-attack literature address both:

- **EOT** (Athalye et al., 2018): each step, besides the objective's fixed branches (e.g. the
  identity view), ``samples`` transforms are drawn from the operator's families (median, box and
  Gaussian blur at the study's kernel sizes, JPEG through a differentiable approximation, down-and-up
  resizing) and every surrogate must fail on those views too. Over the steps the perturbation
  is pushed to survive the whole family, not one fixed blur.
- **Input diversity** (DI, Xie et al., 2019): with probability ``p`` a view's aligned crop is shrunk
  by a random factor in [``shrink``, 1] and zero-padded back at a random offset before a surrogate
  sees it, so the perturbation does not over-fit the surrogates' exact pixel grid.

Both draw from one ``torch.Generator`` seeded by ``seed`` and reset at the start of every attack
(``targets``): the same photo and settings give the same draws, hence the same protected photo.
One draw per step (and per surrogate, for DI) serves the whole batch, so a photo's draws do not
depend on which photos share its batch.

The differentiable JPEG (``fr_shield.core.transforms.differentiable_jpeg``) is Kornia's ``jpeg_codec_differentiable`` (Reich et al., 2024: DCT, the
standard quantisation tables scaled by quality, a smooth rounding). It does not reproduce libjpeg
bit for bit (chroma up-sampling and rounding differ); ``tests/test_eot.py`` checks it against a
real PIL re-encoding: mean absolute difference <= 1.5/255 and PSNR >= 33 dB at quality 75 on a
real LFW photo (measured: 0.6/255 mean at quality 75 and 90, 1.8/255 at quality 50).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fr_shield.attacks.attack import register_attack
from fr_shield.attacks.config import AttackConfig
from fr_shield.attacks.lowkey import LowKey, objective_options
from fr_shield.attacks.objective import Branch, Faces, ProtectionObjective, Targets
from fr_shield.core import transforms

JPEG_TOLERANCE_MEAN = 1.5 / 255  # mean |kornia - libjpeg| allowed by the tests, quality 75
JPEG_TOLERANCE_PSNR = 33.0  # dB between kornia's codec and libjpeg's, quality 75


@dataclass(frozen=True)
class EOTFamily:
    """One family to sample from and its levels (kernel sizes, JPEG qualities or resize factors)."""

    name: str
    levels: tuple = (None,)

    def __post_init__(self):
        if transforms.get(self.name).differentiable is None:  # get() raises for an unknown name
            names = [t.name for t in transforms.TRANSFORMS.values() if t.differentiable is not None]
            raise ValueError(f"EOT transform '{self.name}' has no differentiable twin; use {', '.join(names)}")
        if not self.levels:
            raise ValueError(f"EOT transform '{self.name}' needs at least one level")


# The study's operator transforms (issue 7): blurs at its kernel sizes, JPEG, down-and-up resizing.
DEFAULT_FAMILIES: tuple[EOTFamily, ...] = (
    EOTFamily("median_blur", (3, 5, 7, 9, 11)),
    EOTFamily("box_blur", (3, 5, 7, 9, 11)),
    EOTFamily("gaussian_blur2d", (3, 5, 7, 9, 11)),
    EOTFamily("jpeg", (50, 60, 75, 90)),
    EOTFamily("resize", (0.5, 0.75)),
)


def scale_families(items: Sequence[dict] | None, scale: float) -> list[dict]:
    """EOT families (config form) for a photo attacked at ``scale`` of its size: each blur kernel
    is rounded to the nearest odd size (kernels under 3 are dropped, and a blur family left with
    no kernel with them); JPEG qualities and resize factors do not depend on the resolution."""
    families = items if items is not None else [{"name": f.name, "levels": list(f.levels)} for f in DEFAULT_FAMILIES]
    scaled = []
    for item in families:
        levels, transform = item.get("levels"), transforms.get(item["name"])
        if transform.scales_with_resolution and levels:
            levels = sorted({k for k in (transform.scaled(level, scale) for level in levels) if k is not None})
            if not levels:
                continue
        scaled.append({**item, "levels": levels})
    return scaled


@dataclass(frozen=True)
class EOTSettings:
    families: tuple[EOTFamily, ...] = DEFAULT_FAMILIES
    samples: int = 2  # transforms drawn per step (views added to the fixed branches)
    input_diversity: float = 0.0  # probability that a view's crop is randomly shrunk and padded
    diversity_shrink: float = 0.9  # smallest shrink factor of input diversity
    seed: int = 0

    def __post_init__(self):
        if self.samples < 0:
            raise ValueError(f"EOT samples must be >= 0, got {self.samples}")
        if not 0.0 <= self.input_diversity <= 1.0:
            raise ValueError(f"input_diversity is a probability in [0, 1], got {self.input_diversity}")
        if not 0.0 < self.diversity_shrink <= 1.0:
            raise ValueError(f"diversity_shrink must be in (0, 1], got {self.diversity_shrink}")
        if self.samples and not self.families:
            raise ValueError("EOT sampling needs at least one transform family")


class EOTObjective(ProtectionObjective):
    """The protection objective with sampled transform views and input diversity (see module doc)."""

    def __init__(self, surrogates: list[nn.Module], branches: list[Branch], normaliser: str = "norm",
                 alpha: float = 0.05, perceptual: nn.Module | None = None,
                 surrogate_weights: list[float] | None = None, eot: EOTSettings = EOTSettings(), **options):
        """``options``: the rest of ``ProtectionObjective``'s settings (feature_dropout, seed, ...)."""
        super().__init__(surrogates, branches, normaliser, alpha, perceptual, surrogate_weights, **options)
        self.eot = eot
        self.reset()

    @property
    def reach(self) -> int:
        reaches = [transforms.get(family.name).reach(level) for family in self.eot.families for level in family.levels]
        return max([super().reach, *reaches])

    def reset(self) -> None:
        """Restart the random draws (done at the start of every attack, in ``targets``)."""
        self.generator = torch.Generator(device="cpu").manual_seed(self.eot.seed)
        self.drawn: list[list[tuple[str, object]]] = []  # per step: the (family, level) pairs drawn

    def targets(self, images: torch.Tensor, faces: Faces) -> Targets:
        self.reset()
        return super().targets(images, faces)

    def draw(self) -> list[tuple[str, object]]:
        """``samples`` (family, level) pairs: a family uniformly, then one of its levels uniformly."""
        chosen = []
        families = self.eot.families
        for _ in range(self.eot.samples):
            family = families[int(torch.randint(len(families), (1,), generator=self.generator))]
            level = family.levels[int(torch.randint(len(family.levels), (1,), generator=self.generator))]
            chosen.append((family.name, level))
        self.drawn.append(chosen)
        return chosen

    def views(self, adversarial: torch.Tensor) -> list[torch.Tensor]:
        fixed = super().views(adversarial)
        sampled = [transforms.get(name).differentiable(adversarial, level) for name, level in self.draw()]
        return fixed + sampled

    def model_input(self, crops: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """Input diversity: with probability p, shrink the crops by s in [shrink, 1], pad at random."""
        p = self.eot.input_diversity
        if p <= 0 or float(torch.rand((1,), generator=self.generator)) >= p:
            return crops
        height, width = crops.shape[-2:]
        low = self.eot.diversity_shrink
        scale = low + (1 - low) * float(torch.rand((1,), generator=self.generator))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        top = int(torch.randint(height - size[0] + 1, (1,), generator=self.generator))
        left = int(torch.randint(width - size[1] + 1, (1,), generator=self.generator))
        small = F.interpolate(crops, size=size, mode="bilinear", align_corners=False)
        padded = F.pad(small, (left, width - size[1] - left, top, height - size[0] - top))
        return padded.contiguous(memory_format=torch.channels_last)


def families_from_config(items: Sequence[dict] | None) -> tuple[EOTFamily, ...]:
    """``[{name: median_blur, levels: [3, 5]}, ...]`` -> families (None: the default set)."""
    if items is None:
        return DEFAULT_FAMILIES
    return tuple(EOTFamily(item["name"], tuple(item.get("levels") or (None,))) for item in items)


@register_attack("ours_eot")
class OursEOT(LowKey):
    """"ours" with expectation over the operator's transforms, momentum and input diversity."""

    @classmethod
    def build_objective(cls, config: AttackConfig, surrogates: list[nn.Module],
                        perceptual: nn.Module | None) -> ProtectionObjective:
        eot = config.eot
        families = None if eot is None or eot.families is None else [
            {"name": f.name, "levels": list(f.levels)} for f in eot.families]
        settings = EOTSettings(families_from_config(families), eot.samples if eot else 0,
                               float(config.input_diversity or 0.0), eot.diversity_shrink if eot else 0.9,
                               eot.seed if eot else 0)
        return EOTObjective(surrogates, eot=settings, **objective_options(config, surrogates, perceptual))
