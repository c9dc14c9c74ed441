"""The study's blur-robust LowKey: "ours" adds a median-blur branch (k11) and the /|f|^2
normaliser; "ours_box" adds a box-blur branch as well (``conf/attack/ours.yaml``, ``ours_box.yaml``);
"ours_anchor" adds the targeted identity shift (``fr_shield.attacks.anchors``).

Both are LowKey's fixed-branch objective; what makes them "ours" is their branches, which live in
their YAML. (A face attacked at reduced scale may lose a blur branch whose kernel shrinks under
3 px, so the class does not insist on it.)
"""

from __future__ import annotations

from torch import nn

from fr_shield.attacks.attack import register_attack
from fr_shield.attacks.config import AttackConfig
from fr_shield.attacks.lowkey import LowKey
from fr_shield.attacks.objective import ProtectionObjective
from fr_shield.core.errors import ConfigError


@register_attack("ours")
class Ours(LowKey):
    """LowKey's branches plus a median-blur branch, so the protection survives the median blur."""


@register_attack("ours_box")
class OursBox(Ours):
    """"ours" plus a box-blur branch."""


@register_attack("ours_anchor")
class OursAnchor(Ours):
    """"ours" with the targeted identity shift; it needs a pool (``anchor_pool``) to steer toward."""

    @classmethod
    def build_objective(cls, config: AttackConfig, surrogates: list[nn.Module],
                        perceptual: nn.Module | None) -> ProtectionObjective:
        if config.anchor_pool is None:
            raise ConfigError(f"attack '{config.name}' needs attack.anchor_pool=<folder of other people's face "
                              f"photos> (experiments/transfer/make_anchor_pool.py makes the study's)")
        return super().build_objective(config, surrogates, perceptual)
