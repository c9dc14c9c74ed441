"""Protection attacks: LowKey and its blur-robust variants, with a shared optimiser loop."""

from fr_shield.attacks.attack import AttackResult, ProtectionAttack
from fr_shield.attacks.objective import Branch, ProtectionObjective

__all__ = ["AttackResult", "Branch", "ProtectionAttack", "ProtectionObjective"]
