"""Protection presets and their hard per-face perceptual budget.

A preset (``conf/preset/<name>.yaml``) fixes the attack's strength (L-infinity bound, steps, step
size, perceptual weight) and a budget every protected face must meet in the saved file:

    ST-LPIPS(face crop) <= lpips_max   and   SSIM(face crop) >= ssim_min

The attack's perceptual penalty only *discourages* visible change; the budget *enforces* it.
After the attack, the perturbation delta of each face region is scaled by lambda in [0, 1]
(x + lambda * delta) and lambda is found by bisection: the largest value (to 1/64) at which every
face of the region meets both limits, measured on what will be written (8-bit, and JPEG-encoded
when the output is a JPEG). lambda = 1 when the attack already fits. Face crops are the 112 x 112
ArcFace crops the attack's own penalty looks at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from fr_shield.core.align import FACE_CROP, align_faces
from fr_shield.core.paths import conf_dir
from fr_shield.core.quality import ssim

PRESET_DIR = conf_dir() / "preset"


@dataclass(frozen=True)
class Budget:
    lpips_max: float  # tau: largest ST-LPIPS (alex) allowed on each face crop
    ssim_min: float  # s: smallest SSIM allowed on each face crop

    def holds(self, lpips: float, ssim_value: float) -> bool:
        return lpips <= self.lpips_max and ssim_value >= self.ssim_min


@dataclass
class PresetConfig:
    """One protection level: the attack it runs and the budget it enforces (see conf/preset/)."""

    name: str = "mid"
    attack: str = "ours"  # base attack config: conf/attack/<attack>.yaml (branches, normaliser, surrogates)
    steps: int = 60
    step_size: float = 0.002
    linf: float = 8 / 255  # hard per-pixel bound of the perturbation, on the [0, 1] scale
    alpha: float = 0.05  # weight of the ST-LPIPS penalty inside the objective
    optimiser: str = "signed"
    # norm_squared: each surrogate's shift relative to its own embedding's squared norm. With /|f|
    # ("norm", LowKey's code) the model with the largest embeddings (SFace) dominates the ensemble.
    normaliser: str = "norm_squared"
    lpips_max: float = 0.05  # tau
    ssim_min: float = 0.95  # s
    target: str = ""  # the protection this preset aims at, in words (printed by --help and the report)
    # the check transforms (fr_shield.app.check names) the target is meant to survive
    transforms: list[str] = field(default_factory=lambda: ["none"])

    @property
    def budget(self) -> Budget:
        return Budget(self.lpips_max, self.ssim_min)


def preset_names(folder: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load_preset(name: str, folder: Path = PRESET_DIR) -> PresetConfig:
    """``conf/preset/<name>.yaml`` validated against ``PresetConfig`` (unknown keys are errors)."""
    file = Path(folder) / f"{name}.yaml"
    if not file.is_file():
        raise ValueError(f"unknown preset '{name}'; available: {', '.join(preset_names(folder)) or 'none'}")
    schema = OmegaConf.structured(PresetConfig)
    merged = OmegaConf.merge(schema, OmegaConf.load(file))
    values = OmegaConf.to_container(merged, resolve=True)
    known = {f.name for f in fields(PresetConfig)}
    return PresetConfig(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------------- enforcement

Render = Callable[[torch.Tensor], torch.Tensor]  # float region [1,3,h,w] -> what the saved file holds


@dataclass
class BudgetResult:
    protected: torch.Tensor  # [1, 3, h, w] the region as it will be saved (rendered)
    scale: float  # lambda
    lpips: list[float]  # per face, at lambda
    ssim: list[float]
    met: bool  # every face within budget (False only if even lambda = 0 fails, e.g. a lossy render)
    evaluations: int


class FaceQuality:
    """Per-face ST-LPIPS and SSIM of candidate regions against one fixed clean region."""

    def __init__(self, clean: torch.Tensor, landmarks: Sequence[np.ndarray], metric: torch.nn.Module):
        self.landmarks = list(landmarks)
        self.metric = metric
        with torch.no_grad():
            self.clean_crops = align_faces(clean[0], self.landmarks, FACE_CROP)
            self.clean_features = metric.features(self.clean_crops) if hasattr(metric, "features") else None

    @torch.no_grad()
    def __call__(self, candidate: torch.Tensor) -> tuple[list[float], list[float]]:
        crops = align_faces(candidate[0], self.landmarks, FACE_CROP)
        if self.clean_features is not None:
            lpips = self.metric.distance_from_features(self.clean_features, self.metric.features(crops))
        else:
            lpips = self.metric(self.clean_crops, crops)
        return lpips.cpu().tolist(), ssim(self.clean_crops, crops).cpu().tolist()


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
        ok = all(budget.holds(l, s) for l, s in zip(lpips, ssims))
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
