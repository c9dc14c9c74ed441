"""Confine an attack's perturbation to the faces: a per-pixel bound from a soft face mask.

``FaceMaskAttack(attack)`` bounds |delta| per pixel by ``linf * mask`` (``mask`` in [0, 1]: 1 over
an ellipse covering each face and hairline in its ArcFace crop, a cosine fall-off to 0 just
beyond it; ``fr_shield.core.regions.soft_mask``, the mask ``fr-shield protect`` uses). Without an
L-infinity bound the mask alone bounds it (|delta| <= mask). Pixels where the mask is 0 - every
pixel away from the faces - are returned exactly as they were.
"""

from __future__ import annotations

import numpy as np
import torch

from fr_shield.attacks.attack import ProtectionAttack
from fr_shield.attacks.objective import Faces
from fr_shield.core.regions import soft_mask

IDENTITY_GRID = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def face_mask(shape_hw: tuple[int, int], faces: list[np.ndarray]) -> torch.Tensor:
    """[H, W] soft mask in [0, 1] over every face of one photo (0 where it has none)."""
    if not faces:
        return torch.zeros(shape_hw)
    return soft_mask(tuple(shape_hw), faces, IDENTITY_GRID)


class FaceMaskAttack(ProtectionAttack):
    """The attack with its perturbation confined to the faces (see the module docstring)."""

    def __init__(self, base: ProtectionAttack):
        super().__init__(base.objective, base.settings, base.bound)

    def face_bounds(self, images: torch.Tensor, faces: Faces) -> torch.Tensor:
        """[B, 1, H, W]: linf (or 1) times each photo's face mask."""
        limit = self.settings.linf if self.settings.linf is not None else 1.0
        masks = [face_mask(tuple(images.shape[-2:]), list(f)) for f in faces]
        return (limit * torch.stack(masks)[:, None]).to(device=images.device, dtype=images.dtype)

    def __call__(self, images: torch.Tensor, faces: Faces, on_step=None,
                 photo_weights: torch.Tensor | None = None, bound: torch.Tensor | None = None):
        bounds = self.face_bounds(images, faces)
        if bound is not None:
            bounds = torch.minimum(bounds, bound)
        return super().__call__(images, faces, on_step, photo_weights, bounds)
