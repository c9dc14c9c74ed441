"""A protection loop written the way LowKey's reference code works: the speed benchmark's baseline.

One photo at a time; at every step, for every face, every surrogate and every branch, the branch
is applied to the full photo, the face aligned and the model run (one forward per model per
branch); the LPIPS penalty runs on the clean and the protected photo and face crops each step
(nothing of the clean side is kept). The clean target embeddings are computed once per photo, as
the reference code does. It optimises exactly ``ProtectionObjective``'s objective with
``ProtectionAttack``'s signed-gradient settings (and, for one photo, draws the same starting
noise), so the two loops give the same protected photo and differ only in how they compute it.
"""

from __future__ import annotations

import numpy as np
import torch

from fr_shield.attacks.attack import OptimiserSettings
from fr_shield.attacks.objective import ProtectionObjective
from fr_shield.core.align import FACE_CROP, align_faces


def reference_protect(objective: ProtectionObjective, settings: OptimiserSettings, photo: torch.Tensor,
                      faces: list[np.ndarray], steps: int | None = None) -> torch.Tensor:
    """Protect one photo [1, 3, H, W] (``steps`` overrides the settings' count, for timing)."""
    if settings.optimiser != "signed" or settings.linf is not None:
        raise ValueError("the reference loop is LowKey's: signed steps, no L-infinity bound")
    if objective.normaliser == "direction":
        raise ValueError("the reference loop is LowKey's: normaliser norm or norm_squared")
    clean = photo.detach()
    if not faces:
        return clean.clone()
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    noise = (torch.rand(clean.shape, generator=generator) * 2 - 1) * settings.init_noise
    adversarial = (clean + noise.to(clean.device)).clamp(0, 1)
    with torch.no_grad():
        targets = [[model(align_faces(clean[0], [points], model.spec)) for points in faces]
                   for model in objective.surrogates]
    terms = len(objective.branches) * len(objective.surrogates) * len(faces)
    for _ in range(settings.steps if steps is None else steps):
        adversarial.requires_grad_(True)
        loss = adversarial.new_zeros(())
        for points_index, points in enumerate(faces):
            for model, model_targets in zip(objective.surrogates, targets):
                target = model_targets[points_index]
                for branch in objective.branches:
                    embedding = model(align_faces(branch(adversarial)[0], [points], model.spec))
                    loss = loss + (embedding - target).pow(2).sum() / target.norm().pow(objective.power)
        loss = loss / terms
        if objective.perceptual is not None and objective.alpha > 0:
            on_faces = torch.stack([objective.perceptual(align_faces(clean[0], [points], FACE_CROP),
                                                         align_faces(adversarial[0], [points], FACE_CROP))[0]
                                    for points in faces]).mean()
            on_photo = objective.perceptual(clean, adversarial)[0]
            loss = loss - objective.alpha * 0.5 * (on_faces + on_photo)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = (adversarial + settings.step_size * gradient.sign()).clamp(0, 1)
    return adversarial.detach()
