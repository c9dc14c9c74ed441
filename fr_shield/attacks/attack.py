"""The optimisation loop shared by every attack; the base owns the start, clamping and budget.

LowKey's reference loop: start from x + U(-0.005, 0.005), then 50 signed-gradient ascent steps
of 0.0025 on the full-resolution photo, clamped to [0, 1], with no L-infinity projection in the
LPIPS variant. How a gradient becomes a step is a step rule (``fr_shield.attacks.steps``: signed,
with optional MI-FGSM momentum, or Adam). Images whose faces list is empty pass through unchanged.

Early stop (``stop_margin``, off in the reference configs): an image stops moving once every
surrogate's embedding of every face and branch view is ``stop_margin`` past the model's match
threshold; the remaining images carry on as a smaller batch, and the loop ends when none is left.

Hard budgets the base owns (all off by default, so the reference configs are unchanged):

- ``linf``: a scalar L-infinity bound, projected after every step;
- a per-pixel bound tensor (``bound``, e.g. ``linf * soft face mask``: 0 beyond the faces), fixed
  for the attack or given per call and per image; where it is 0 the photo is never changed;
- ``luma``: the perturbation is projected onto brightness (one value per pixel for R, G and B);
- ``shading_sigma``: the perturbation's local mean (a Gaussian of that many pixels) is removed
  after every step, so it cannot darken or lighten a region of the face as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import kornia
import torch
from torch import nn

from fr_shield.attacks.config import BUDGET_KEYS, AttackConfig
from fr_shield.attacks.objective import Faces, InLoopBudget, ProtectionObjective
from fr_shield.attacks.steps import create_step_rule


@dataclass(frozen=True)
class OptimiserSettings:
    optimiser: str = "signed"  # a step rule of fr_shield.attacks.steps: signed | adam
    steps: int = 50
    step_size: float = 0.0025
    init_noise: float = 0.005  # half-width of the uniform starting noise
    linf: float | None = None  # hard L-infinity bound around the clean photo; None: unbounded
    seed: int = 0
    stop_margin: float | None = None  # freeze an image once every surrogate is this far past its threshold
    momentum: float | None = None  # MI-FGSM decay mu for signed steps; None: plain signed gradient
    # Optimise inside the per-face budget: each image's objective loses weight * excess, the weight
    # adapting per image (``InLoopBudget``); None: the budget is only enforced afterwards.
    budget: InLoopBudget | None = None
    luma: bool = False  # one perturbation shared by R, G and B (brightness only)
    shading_sigma: float | None = None  # remove the perturbation's Gaussian local mean (pixels); None: off


@dataclass
class AttackResult:
    protected: torch.Tensor  # [B, 3, H, W] in [0, 1]
    objective: list[list[float]] = field(default_factory=list)  # per step, per image (nan once stopped)
    lpips: list[list[float]] = field(default_factory=list)
    steps_taken: list[int] = field(default_factory=list)  # per image: steps applied before it stopped


def remove_shading(delta: torch.Tensor, sigma: float) -> torch.Tensor:
    """``delta`` [B, C, H, W] minus its Gaussian local mean of ``sigma`` pixels (reflected at the
    border): what is left is fine grain with no regional darkening or lightening."""
    if sigma <= 0:
        raise ValueError(f"shading_sigma must be > 0, got {sigma}")
    size = 2 * int(math.ceil(3 * sigma)) + 1
    size = min(size, 2 * ((min(delta.shape[-2:]) - 1) // 2) + 1)  # reflect padding needs size <= side
    return delta - kornia.filters.gaussian_blur2d(delta, (size, size), (sigma, sigma), border_type="reflect")


ATTACKS: dict[str, type[ProtectionAttack]] = {}  # filled by @register_attack (fr_shield.attacks.registry)


def register_attack(name: str):
    """Class decorator: make an attack available as ``method: <name>`` in ``conf/attack``."""
    def add(cls: type[ProtectionAttack]) -> type[ProtectionAttack]:
        ATTACKS[name] = cls
        return cls
    return add


class ProtectionAttack:
    """``attack(images, faces)`` -> protected images; ``images`` itself is never modified.

    Subclasses are the attacks: each builds its objective from the typed config
    (``build_objective``); the base owns the start, the bounds, the step rule and early stop.
    """

    @classmethod
    def build_objective(cls, config: AttackConfig, surrogates: list[nn.Module],
                        perceptual: nn.Module | None) -> ProtectionObjective:
        raise NotImplementedError(f"{cls.__name__} does not build an objective")

    @classmethod
    def from_config(cls, config: AttackConfig, surrogates: list[nn.Module],
                    perceptual: nn.Module | None) -> ProtectionAttack:
        budget = None  # with no budget set there is nothing to steer toward (a sweep's unbounded point)
        if config.budget_in_loop and config.has_budget:
            budget = InLoopBudget(**{key: getattr(config, key) for key in BUDGET_KEYS})
        settings = OptimiserSettings(config.optimiser, config.steps, config.step_size, config.init_noise,
                                     config.linf, config.seed, config.stop_margin, config.momentum, budget,
                                     luma=config.colour == "luma", shading_sigma=config.shading_sigma)
        return cls(cls.build_objective(config, surrogates, perceptual), settings)

    def __init__(self, objective: ProtectionObjective, settings: OptimiserSettings = OptimiserSettings(),
                 bound: torch.Tensor | None = None):
        """``bound``: a per-pixel bound on |delta| broadcast to every image (e.g. [1, 1, H, W])."""
        create_step_rule(settings.optimiser, settings.step_size, settings.momentum)  # fails early on a bad rule
        if bound is not None and (bound < 0).any():
            raise ValueError("a per-pixel bound must be >= 0")
        self.objective = objective
        self.settings = settings
        self.bound = bound

    def _project(self, adversarial: torch.Tensor, clean: torch.Tensor,
                 bound: torch.Tensor | None = None) -> torch.Tensor:
        """Clamp to [0, 1] inside the scalar L-infinity bound and the per-pixel ``bound`` (if any);
        with ``luma``, first make the perturbation the same on every channel (its channel mean);
        with ``shading_sigma``, first remove its local mean (what the eye reads as shading)."""
        if self.settings.luma:
            adversarial = clean + (adversarial - clean).mean(dim=1, keepdim=True)
        if self.settings.shading_sigma is not None:
            adversarial = clean + remove_shading(adversarial - clean, self.settings.shading_sigma)
        if self.settings.linf is not None:
            adversarial = torch.max(torch.min(adversarial, clean + self.settings.linf), clean - self.settings.linf)
        if bound is not None:
            adversarial = clean + torch.maximum(torch.minimum(adversarial - clean, bound), -bound)
        return adversarial.clamp(0.0, 1.0)

    def _bounds(self, bound: torch.Tensor | None, count: int) -> torch.Tensor | None:
        """The per-image bound [count, C, H, W] (or one broadcast to all) of the attack and the call."""
        limits = [b for b in (self.bound, bound) if b is not None]
        if not limits:
            return None
        combined = limits[0] if len(limits) == 1 else torch.minimum(*limits)
        return combined.expand(count, *combined.shape[1:]) if combined.shape[0] == 1 else combined

    def __call__(self, images: torch.Tensor, faces: Faces, on_step=None,
                 photo_weights: torch.Tensor | None = None, bound: torch.Tensor | None = None) -> AttackResult:
        """``bound``: optional per-pixel bound on |delta| per image [B, 1 or 3, H, W] (0: unchanged)."""
        clean = images.detach()
        has_face = torch.tensor([len(f) > 0 for f in faces], device=clean.device)
        if not has_face.any():
            return AttackResult(clean.clone())
        keep = [i for i, f in enumerate(faces) if f]
        work, work_faces = clean[keep], [faces[i] for i in keep]
        weights = None if photo_weights is None else photo_weights[keep]
        bounds = self._bounds(bound, len(faces))
        bounds = None if bounds is None else bounds[keep].to(clean.device)
        protected = self._optimise(work, work_faces, on_step, weights, bounds)
        output = clean.clone()
        output[keep] = protected.protected
        protected.protected = output
        return protected

    def _optimise(self, clean: torch.Tensor, faces: Faces, on_step, photo_weights,
                  bounds: torch.Tensor | None = None) -> AttackResult:
        settings = self.settings
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        noise = (torch.rand(clean.shape, generator=generator) * 2 - 1) * settings.init_noise
        start = self._project(clean + noise.to(clean.device), clean, bounds)
        all_targets = self.objective.targets(clean, faces)
        result = AttackResult(start, steps_taken=[settings.steps] * len(faces))
        # The perturbation is the optimised variable; the step rule updates it in place.
        delta = (start - clean).detach()
        rule = create_step_rule(settings.optimiser, settings.step_size, settings.momentum)
        rule.start(clean, delta)
        penalty = torch.ones(len(faces), device=clean.device) if settings.budget is not None else None
        active = list(range(len(faces)))
        for step in range(settings.steps):
            work_clean, work_faces = clean[active], [faces[i] for i in active]
            targets = all_targets if len(active) == len(faces) else all_targets.select(active, faces)
            weights = None if photo_weights is None else photo_weights[active]
            active_index = torch.as_tensor(active, device=clean.device)
            point = rule.point(active_index)
            value, parts = self.objective(point, work_clean, work_faces, targets, weights, settings.budget)
            if penalty is not None:  # optimise inside the budget: the weight grows while it is broken
                excess = parts.pop("excess")
                value = value - penalty[active_index] * excess
                with torch.no_grad():
                    broken = excess > 0
                    penalty[active_index] = torch.where(broken, penalty[active_index] * settings.budget.grow,
                                                        penalty[active_index] * settings.budget.shrink).clamp_min(1.0)
            self._record(result, active, len(faces), value, parts)
            if on_step is not None:
                on_step(step, value.detach(), parts)
            moving = self._still_moving(parts["margin"])
            rule.update(point, value, active_index, moving, bounds, self._project)
            for slot in (~moving).nonzero().flatten().tolist():
                result.steps_taken[active[slot]] = step
            active = [image for image, keep in zip(active, moving.tolist()) if keep]
            if not active:
                break
        with torch.no_grad():
            result.protected = (clean + delta).detach()
        return result

    def _still_moving(self, margin: torch.Tensor) -> torch.Tensor:
        if self.settings.stop_margin is None:
            return torch.ones_like(margin, dtype=torch.bool)
        return margin < self.settings.stop_margin

    @staticmethod
    def _record(result: AttackResult, active: list[int], total: int, value, parts) -> None:
        objective, lpips = [float("nan")] * total, [float("nan")] * total
        for image, v, p in zip(active, value.detach().tolist(), parts["lpips"].tolist()):
            objective[image], lpips[image] = v, p
        result.objective.append(objective)
        result.lpips.append(lpips)
