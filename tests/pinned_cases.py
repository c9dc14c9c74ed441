"""The attack loop's output on tiny random networks, for ``test_pinned_output.py``.

Kept free of fr_shield's module layout beyond the attack API, so the same cases can be run
against an older checkout to confirm a refactor changed no pixel.
"""

from __future__ import annotations

import numpy as np
import torch
from tiny_models import TinyFR, TinyPerceptual

from fr_shield.attacks import Branch, ProtectionAttack, ProtectionObjective
from fr_shield.attacks.attack import OptimiserSettings
from fr_shield.attacks.eot import EOTFamily, EOTObjective, EOTSettings

FACE = (np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                  [70.7299, 92.2041]], np.float32) * 0.6 + 14).astype(np.float32)


def photo() -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    small = torch.rand(1, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(small, size=(96, 96), mode="bilinear").clamp(0, 1)


def cases() -> dict[str, np.ndarray]:
    """name -> protected photo as 8-bit [96, 96, 3]."""
    torch.manual_seed(0)
    image = photo()
    models = [TinyFR(0), TinyFR(1, size=40, name="tiny40")]
    branches = [Branch(), Branch("gaussian", 7, 3.0), Branch("median", 3)]
    objective = ProtectionObjective(models, branches, "norm_squared", 0.5, TinyPerceptual())
    eot = EOTObjective(models, [Branch()], "norm_squared", 0.5, TinyPerceptual(), eot=EOTSettings(
        (EOTFamily("median_blur", (3, 5)), EOTFamily("jpeg", (50, 75)), EOTFamily("resize", (0.5,))), 2, 0.5, 0.9, 0))
    runs = {
        "signed": (objective, OptimiserSettings("signed", 5, 0.01, 0.005, None, 0)),
        "signed_linf_momentum": (objective, OptimiserSettings("signed", 5, 0.01, 0.005, 6 / 255, 1, None, 1.0)),
        "adam": (objective, OptimiserSettings("adam", 5, 0.01, 0.005, None, 2)),
        "eot": (eot, OptimiserSettings("signed", 5, 0.01, 0.005, 8 / 255, 3, None, 1.0)),
    }
    out = {}
    with torch.enable_grad():
        for name, (target, settings) in runs.items():
            protected = ProtectionAttack(target, settings)(image, [[FACE]]).protected
            out[name] = (protected[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return out
