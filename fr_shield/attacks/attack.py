"""The optimisation loop shared by every attack; the base owns the start, clamping and budget.

LowKey's reference loop: start from x + U(-0.005, 0.005), then 50 signed-gradient ascent steps
of 0.0025 on the full-resolution photo, clamped to [0, 1], with no L-infinity projection in the
LPIPS variant. Adam on the perturbation is the alternative optimiser. Images whose faces list is
empty pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fr_shield.attacks.objective import Faces, ProtectionObjective


@dataclass(frozen=True)
class OptimiserSettings:
    optimiser: str = "signed"  # signed | adam
    steps: int = 50
    step_size: float = 0.0025
    init_noise: float = 0.005  # half-width of the uniform starting noise
    linf: float | None = None  # hard L-infinity bound around the clean photo; None: unbounded
    seed: int = 0


@dataclass
class AttackResult:
    protected: torch.Tensor  # [B, 3, H, W] in [0, 1]
    objective: list[list[float]] = field(default_factory=list)  # per step, per image
    lpips: list[list[float]] = field(default_factory=list)


class ProtectionAttack:
    """``attack(images, faces)`` -> protected images; ``images`` itself is never modified."""

    def __init__(self, objective: ProtectionObjective, settings: OptimiserSettings = OptimiserSettings()):
        if settings.optimiser not in ("signed", "adam"):
            raise ValueError(f"unknown optimiser '{settings.optimiser}'; use signed or adam")
        self.objective = objective
        self.settings = settings

    def _project(self, adversarial: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        if self.settings.linf is not None:
            adversarial = torch.max(torch.min(adversarial, clean + self.settings.linf), clean - self.settings.linf)
        return adversarial.clamp(0.0, 1.0)

    def __call__(self, images: torch.Tensor, faces: Faces, on_step=None) -> AttackResult:
        clean = images.detach()
        has_face = torch.tensor([len(f) > 0 for f in faces], device=clean.device)
        if not has_face.any():
            return AttackResult(clean.clone())
        keep = [i for i, f in enumerate(faces) if f]
        work, work_faces = clean[keep], [faces[i] for i in keep]
        protected = self._optimise(work, work_faces, on_step)
        output = clean.clone()
        output[keep] = protected.protected
        protected.protected = output
        return protected

    def _optimise(self, clean: torch.Tensor, faces: Faces, on_step) -> AttackResult:
        settings = self.settings
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        noise = (torch.rand(clean.shape, generator=generator) * 2 - 1) * settings.init_noise
        adversarial = self._project(clean + noise.to(clean.device), clean)
        targets = self.objective.targets(clean, faces)
        result = AttackResult(adversarial)
        delta = adam = None
        if settings.optimiser == "adam":
            delta = (adversarial - clean).requires_grad_(True)
            adam = torch.optim.Adam([delta], lr=settings.step_size, maximize=True)
        for step in range(settings.steps):
            current = (clean + delta) if delta is not None else adversarial.requires_grad_(True)
            value, parts = self.objective(current, clean, faces, targets)
            if delta is not None:
                adam.zero_grad()
                value.sum().backward()
                adam.step()
                with torch.no_grad():  # keep clean + delta inside [0, 1] and the budget
                    delta.copy_(self._project(clean + delta, clean) - clean)
            else:
                (gradient,) = torch.autograd.grad(value.sum(), current)
                with torch.no_grad():
                    adversarial = self._project(current + settings.step_size * gradient.sign(), clean)
            result.objective.append(value.detach().cpu().tolist())
            result.lpips.append(parts["lpips"].cpu().tolist())
            if on_step is not None:
                on_step(step, value.detach(), parts)
        with torch.no_grad():
            result.protected = (clean + delta).detach() if delta is not None else adversarial.detach()
        return result
