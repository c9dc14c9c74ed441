"""Step rules: how the attack loop turns a gradient into a change of the perturbation.

A rule is picked by name (``AttackConfig.optimiser``) from ``STEP_RULES``; a new rule is one
class with ``@register_step_rule``. The loop owns the bounds: a rule proposes, ``project``
(clamp to [0, 1] and inside the L-infinity / per-pixel bounds) disposes.

- ``signed``: LowKey's signed-gradient ascent, x <- x + step * sign(g). With ``momentum`` mu it is
  MI-FGSM (Dong et al. 2018): the sign of an accumulated, per-image L1-normalised gradient,
  g <- mu * g + grad / mean|grad|.
- ``adam``: Adam on the perturbation (maximising), projected after every step; images that have
  stopped are put back, since Adam's running moments would still move them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fr_shield.core.errors import ConfigError

Project = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (adv, clean, bound)


class StepRule:
    """``start`` once per attack; each step ``point`` gives the objective's input, ``update`` moves ``delta``."""

    def __init__(self, step_size: float, momentum: float | None = None):
        self.step_size = step_size
        self.momentum = momentum

    def start(self, clean: torch.Tensor, delta: torch.Tensor) -> None:
        self.clean, self.delta = clean, delta

    def point(self, active: torch.Tensor) -> torch.Tensor:
        """The images the objective is evaluated at (requires grad), for the active images."""
        raise NotImplementedError

    def update(self, point: torch.Tensor, value: torch.Tensor, active: torch.Tensor, moving: torch.Tensor,
               bounds: torch.Tensor | None, project: Project) -> None:
        raise NotImplementedError


STEP_RULES: dict[str, type[StepRule]] = {}


def register_step_rule(name: str):
    def add(cls: type[StepRule]) -> type[StepRule]:
        STEP_RULES[name] = cls
        return cls
    return add


def create_step_rule(name: str, step_size: float, momentum: float | None = None) -> StepRule:
    if name not in STEP_RULES:
        raise ConfigError(f"unknown optimiser '{name}'; choose one of: {', '.join(STEP_RULES)}")
    return STEP_RULES[name](step_size, momentum)


@register_step_rule("signed")
class SignedSteps(StepRule):
    def __init__(self, step_size: float, momentum: float | None = None):
        if momentum is not None and momentum < 0:
            raise ConfigError(f"momentum is a decay >= 0, got {momentum}")
        super().__init__(step_size, momentum)

    def start(self, clean: torch.Tensor, delta: torch.Tensor) -> None:
        super().start(clean, delta)
        self.velocity = torch.zeros_like(clean) if self.momentum is not None else None

    def point(self, active: torch.Tensor) -> torch.Tensor:
        return (self.clean[active] + self.delta[active]).requires_grad_(True)

    def update(self, point, value, active, moving, bounds, project) -> None:
        (gradient,) = torch.autograd.grad(value.sum(), point)
        with torch.no_grad():
            direction = gradient
            if self.velocity is not None:
                scale = gradient.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                self.velocity[active] = self.momentum * self.velocity[active] + gradient / scale
                direction = self.velocity[active]
            clean = self.clean[active]
            work_bounds = None if bounds is None else bounds[active]
            stepped = project(point + self.step_size * direction.sign(), clean, work_bounds) - clean
            self.delta[active[moving]] = stepped[moving]


@register_step_rule("adam")
class AdamSteps(StepRule):
    def __init__(self, step_size: float, momentum: float | None = None):
        if momentum is not None:
            raise ConfigError("momentum is a setting of the signed optimiser; Adam keeps its own moments")
        super().__init__(step_size)

    def start(self, clean: torch.Tensor, delta: torch.Tensor) -> None:
        super().start(clean, delta)
        delta.requires_grad_(True)
        self.adam = torch.optim.Adam([delta], lr=self.step_size, maximize=True)

    def point(self, active: torch.Tensor) -> torch.Tensor:
        return self.clean[active] + self.delta[active]

    def update(self, point, value, active, moving, bounds, project) -> None:
        self.adam.zero_grad()
        value.sum().backward()
        before = self.delta.detach().clone()
        self.adam.step()
        with torch.no_grad():
            self.delta.copy_(project(self.clean + self.delta, self.clean, bounds) - self.clean)
            stopped = torch.ones(len(self.delta), dtype=torch.bool, device=self.delta.device)
            stopped[active[moving]] = False
            self.delta[stopped] = before[stopped]
