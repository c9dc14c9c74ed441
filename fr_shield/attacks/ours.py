"""The study's blur-robust LowKey: "ours" adds a median-blur branch (k11) and the /|f|^2
normaliser; "ours_box" adds a box-blur branch as well (``conf/attack/ours.yaml``, ``ours_box.yaml``).

Both are LowKey's fixed-branch objective; what makes them "ours" is their branches, which live in
their YAML. (A face attacked at reduced scale may lose a blur branch whose kernel shrinks under
3 px, so the class does not insist on it.)
"""

from __future__ import annotations

from fr_shield.attacks.attack import register_attack
from fr_shield.attacks.lowkey import LowKey


@register_attack("ours")
class Ours(LowKey):
    """LowKey's branches plus a median-blur branch, so the protection survives the median blur."""


@register_attack("ours_box")
class OursBox(Ours):
    """"ours" plus a box-blur branch."""
