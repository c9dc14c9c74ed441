"""LowKey (Cherepanova et al., ICLR 2021): push every surrogate's embedding of the photo, and of
its Gaussian-blurred copy, away from the clean one, under a perceptual penalty.

``conf/attack/lowkey.yaml`` holds the reference settings (DESIGN.md section 2): raw + Gaussian
(k7, sigma 3) branches, /|f| normaliser, 50 signed steps of 0.0025 from +-0.005 noise.
"""

from __future__ import annotations

from torch import nn

from fr_shield.attacks.anchors import anchor_embeddings
from fr_shield.attacks.attack import ProtectionAttack, register_attack
from fr_shield.attacks.config import AttackConfig
from fr_shield.attacks.objective import Branch, ProtectionObjective
from fr_shield.core.errors import ConfigError


@register_attack("lowkey")
class LowKey(ProtectionAttack):
    """The fixed-branch objective: one view per configured branch, every step."""

    @classmethod
    def build_objective(cls, config: AttackConfig, surrogates: list[nn.Module],
                        perceptual: nn.Module | None) -> ProtectionObjective:
        if config.eot is not None or config.input_diversity is not None:
            raise ConfigError(f"attack '{config.name}': eot and input_diversity are settings of method "
                              f"ours_eot, not {config.method}")
        return ProtectionObjective(surrogates, **objective_options(config, surrogates, perceptual))


def objective_options(config: AttackConfig, surrogates: list[nn.Module], perceptual: nn.Module | None) -> dict:
    """The ``ProtectionObjective`` settings an attack config gives: one mapping for every attack
    class (``OursEOT`` adds its EOT settings on top)."""
    return {"branches": [Branch(b.kind, b.kernel_size, b.sigma) for b in config.branches],
            "normaliser": config.normaliser, "alpha": config.alpha, "perceptual": perceptual,
            "surrogate_weights": config.surrogate_weights, "feature_dropout": config.feature_dropout or 0.0,
            "seed": config.seed, "face_penalty_only": bool(config.face_penalty_only),
            "branches_per_step": config.branches_per_step, "surrogates_per_step": config.surrogates_per_step,
            "anchor_pool": anchor_embeddings(config.anchor_pool, surrogates),
            "anchor_weight": config.anchor_weight or 1.0, "layer_weight": config.layer_weight or 0.0,
            "layer_depth": 0.5 if config.layer_depth is None else config.layer_depth,
            "skip_gamma": 1.0 if config.skip_gamma is None else config.skip_gamma,
            "linear_backward": config.linear_backward}
