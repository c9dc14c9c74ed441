"""The hard per-face perceptual budget, enforced on a finished perturbation.

An attack setting may bound every protected face in the saved file (``AttackConfig.ssim_min`` /
``lpips_max``; the presets of ``fr-shield protect`` always do):

    ST-LPIPS(face crop) <= lpips_max  and  SSIM(face crop) >= ssim_min  and  mean Delta E(face crop) <= delta_e_max
    and  SSIM over the face crop's worst 5 % of windows >= ssim_worst_min
    and  visibility(face crop) <= visibility_max

The attack's perceptual penalty only *discourages* visible change; the budget *enforces* it.
After the attack, the perturbation delta of each face region is scaled by lambda in [0, 1]
(x + lambda * delta) and lambda is found by bisection: the largest value (to 1/64) at which every
face of the region meets both limits, measured on what will be written (8-bit, and JPEG-encoded
when the output is a JPEG). lambda = 1 when the attack already fits. Face crops are the 112 x 112
ArcFace crops the attack's own penalty looks at (``fr_shield.core.quality.FaceQuality``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fr_shield.attacks.config import AttackConfig
from fr_shield.core.quality import FaceQuality


@dataclass(frozen=True)
class Budget:
    lpips_max: float = float("inf")  # tau: largest ST-LPIPS (alex) allowed on each face crop
    ssim_min: float = -1.0  # s: smallest SSIM allowed on each face crop
    delta_e_max: float = float("inf")  # largest mean CIE76 colour difference on each face crop
    ssim_worst_min: float = -1.0  # smallest SSIM of each face crop's worst 5 % of windows
    visibility_max: float = float("inf")  # largest visibility of each face crop's change as structure

    def holds(self, lpips: float, ssim_value: float, delta_e: float = 0.0, ssim_worst: float = 1.0,
              visible: float = 0.0) -> bool:
        return (lpips <= self.lpips_max and ssim_value >= self.ssim_min and delta_e <= self.delta_e_max
                and ssim_worst >= self.ssim_worst_min and visible <= self.visibility_max)

    @property
    def bounds_colour(self) -> bool:
        return self.delta_e_max != float("inf")

    @property
    def bounds_worst(self) -> bool:
        return self.ssim_worst_min != -1.0

    @property
    def bounds_visibility(self) -> bool:
        return self.visibility_max != float("inf")

    @classmethod
    def of(cls, config: AttackConfig) -> Budget | None:
        """The budget an attack setting asks for, or None when it sets no limit."""
        if not config.has_budget:
            return None
        return cls(float("inf") if config.lpips_max is None else config.lpips_max,
                   -1.0 if config.ssim_min is None else config.ssim_min,
                   float("inf") if config.delta_e_max is None else config.delta_e_max,
                   -1.0 if config.ssim_worst_min is None else config.ssim_worst_min,
                   float("inf") if config.visibility_max is None else config.visibility_max)


Render = Callable[[torch.Tensor], torch.Tensor]  # float region [1,3,h,w] -> what the saved file holds


@dataclass
class BudgetResult:
    protected: torch.Tensor  # [1, 3, h, w] the region as it will be saved (rendered)
    scale: float  # lambda
    lpips: list[float]  # per face, at lambda
    ssim: list[float]
    met: bool  # every face within budget (False only if even lambda = 0 fails, e.g. a lossy render)
    evaluations: int


def enforce_budget(clean: torch.Tensor, delta: torch.Tensor, landmarks: Sequence[np.ndarray], budget: Budget,
                   metric: torch.nn.Module, render: Render, iterations: int = 6) -> BudgetResult:
    """Largest lambda in [0, 1] with every face of ``clean + lambda * delta`` (rendered) in budget.

    ``clean`` and ``delta`` are one region [1, 3, h, w]; ``landmarks`` are its faces in region
    pixels. lambda = 1 is tried first; otherwise bisection over ``iterations`` halvings, keeping the
    best feasible value (lambda = 0, the unprotected region, is the fallback).
    """
    quality = FaceQuality(clean, landmarks, metric)
    evaluations = 0

    def attempt(scale: float):
        nonlocal evaluations
        evaluations += 1
        candidate = render((clean + scale * delta).clamp(0, 1))
        lpips, ssims = quality(candidate)
        colour = quality.delta_e(candidate) if budget.bounds_colour else [0.0] * len(lpips)
        worst = quality.ssim_worst(candidate) if budget.bounds_worst else [1.0] * len(lpips)
        visible = quality.visibility(candidate) if budget.bounds_visibility else [0.0] * len(lpips)
        ok = all(budget.holds(*values) for values in zip(lpips, ssims, colour, worst, visible))
        return ok, candidate, lpips, ssims

    ok, candidate, lpips, ssims = attempt(1.0)
    if ok:
        return BudgetResult(candidate, 1.0, lpips, ssims, True, evaluations)
    low, high = 0.0, 1.0
    best = None
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        ok, candidate, lpips, ssims = attempt(middle)
        if ok:
            low, best = middle, (candidate, lpips, ssims)
        else:
            high = middle
    if best is None:
        ok, candidate, lpips, ssims = attempt(0.0)
        return BudgetResult(candidate, 0.0, lpips, ssims, ok, evaluations)
    return BudgetResult(best[0], low, best[1], best[2], True, evaluations)
