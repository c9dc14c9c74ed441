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

from fr_shield.attacks.config import BUDGET_KEYS, AttackConfig
from fr_shield.core.quality import FaceQuality


@dataclass(frozen=True)
class Budget:
    lpips_max: float = float("inf")  # tau: largest ST-LPIPS (alex) allowed on each face crop
    ssim_min: float = -1.0  # s: smallest SSIM allowed on each face crop
    delta_e_max: float = float("inf")  # largest mean CIE76 colour difference on each face crop
    ssim_worst_min: float = -1.0  # smallest SSIM of each face crop's worst 5 % of windows
    visibility_max: float = float("inf")  # largest visibility of each face crop's change as structure

    @property
    def metrics(self) -> list[str]:
        """The FaceQuality metrics to measure: ST-LPIPS and SSIM always (every result reports
        them), the others only when their limit is set."""
        optional = {"delta_e": self.delta_e_max != float("inf"), "ssim_worst": self.ssim_worst_min != -1.0,
                    "visibility": self.visibility_max != float("inf")}
        return ["lpips", "ssim", *(name for name, bounded in optional.items() if bounded)]

    def holds(self, face: dict[str, float]) -> bool:
        """``face``: one face's values of ``metrics``."""
        return (face["lpips"] <= self.lpips_max and face["ssim"] >= self.ssim_min
                and face.get("delta_e", 0.0) <= self.delta_e_max and face.get("ssim_worst", 1.0) >= self.ssim_worst_min
                and face.get("visibility", 0.0) <= self.visibility_max)

    @classmethod
    def of(cls, config: AttackConfig) -> Budget | None:
        """The budget an attack setting asks for, or None when it sets no limit (the fields are
        named as the config's ``BUDGET_KEYS``; an unset one keeps its unbounded default)."""
        if not config.has_budget:
            return None
        return cls(**{key: getattr(config, key) for key in BUDGET_KEYS if getattr(config, key) is not None})


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
        measured = quality.scores(candidate, budget.metrics)
        ok = all(budget.holds(dict(zip(measured, face))) for face in zip(*measured.values()))
        return ok, candidate, measured["lpips"], measured["ssim"]

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
