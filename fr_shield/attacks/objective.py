"""The protection objective: move every surrogate's embedding far from the clean one.

    maximise  1/(b n) sum_branches sum_models |f(A(x)) - f(A(T_b(x')))|^2 / |f(A(x))|^p
              - alpha * LPIPS(x, x')

Branches T_b act on the full photo before alignment (LowKey's Gaussian branch: kernel 7,
sigma 3); the clean targets f(A(x)) are computed once, unsmoothed, and serve every branch.
p = 1 ("norm", LowKey's code) or p = 2 ("norm_squared", as the study's slide writes "ours").
LPIPS is the mean of ST-LPIPS on the face crops and on the full photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fr_shield import transforms
from fr_shield.align import align_faces
from fr_shield.models.spec import ARCFACE_112, ModelSpec

# The crop on which the perceptual penalty looks at each face: ArcFace's 112 x 112 template.
FACE_CROP = ModelSpec("face_crop", (112, 112), ARCFACE_112, 0, "cosine", 0.0)
NORMALISER_POWER = {"norm": 1, "norm_squared": 2}

Faces = list[list[np.ndarray]]  # per image, the 5 x 2 landmarks of each protected face


@dataclass(frozen=True)
class Branch:
    """One view of the protected photo the surrogates must fail on."""

    kind: str = "identity"  # identity | gaussian | median | box
    kernel_size: int = 1
    sigma: float | None = None  # gaussian only; None: OpenCV's rule for the kernel size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return images
        if self.kind == "gaussian":
            return transforms.gaussian_blur2d(images, self.kernel_size, self.sigma)
        if self.kind == "median":
            return transforms.median_blur(images, self.kernel_size)
        if self.kind == "box":
            return transforms.box_blur(images, self.kernel_size)
        raise ValueError(f"unknown branch kind '{self.kind}'; use identity, gaussian, median or box")


def crops_of(images: torch.Tensor, faces: Faces, spec: ModelSpec) -> torch.Tensor:
    """Every face of every image aligned for ``spec``: [total faces, 3, h, w]."""
    return torch.cat([align_faces(images[i], faces[i], spec) for i in range(len(faces))])


def face_weights(faces: Faces, device: torch.device) -> torch.Tensor:
    """1 / (faces in its image) per face: each image weighs the same whatever its face count."""
    return torch.cat([torch.full((len(f),), 1.0 / max(len(f), 1), device=device) for f in faces])


def face_images(faces: Faces, device: torch.device) -> torch.Tensor:
    """The image index of every face, in the order ``crops_of`` stacks them."""
    return torch.cat([torch.full((len(f),), i, device=device) for i, f in enumerate(faces)]).long()


class ProtectionObjective(nn.Module):
    def __init__(self, surrogates: list[nn.Module], branches: list[Branch], normaliser: str = "norm",
                 alpha: float = 0.05, perceptual: nn.Module | None = None):
        super().__init__()
        if normaliser not in NORMALISER_POWER:
            raise ValueError(f"unknown normaliser '{normaliser}'; use {', '.join(NORMALISER_POWER)}")
        if not surrogates or not branches:
            raise ValueError("the objective needs at least one surrogate model and one branch")
        self.surrogates = nn.ModuleList(surrogates)
        self.branches = list(branches)
        self.power = NORMALISER_POWER[normaliser]
        self.alpha = alpha
        self.perceptual = perceptual

    @torch.no_grad()
    def targets(self, images: torch.Tensor, faces: Faces) -> list[torch.Tensor]:
        """Clean embeddings f_i(A(x)) of every face, once, without smoothing."""
        return [model(crops_of(images, faces, model.spec)) for model in self.surrogates]

    def feature_term(self, adversarial: torch.Tensor, faces: Faces, targets: list[torch.Tensor]) -> torch.Tensor:
        """Per image: the normalised squared embedding shift, averaged over branches, models, faces."""
        weights, image_of_face = face_weights(faces, adversarial.device), face_images(faces, adversarial.device)
        total = adversarial.new_zeros(len(faces))
        for branch in self.branches:
            view = branch(adversarial)
            for model, target in zip(self.surrogates, targets):
                shift = (model(crops_of(view, faces, model.spec)) - target).pow(2).sum(dim=1)
                per_face = shift / target.norm(dim=1).pow(self.power) * weights
                total = total.index_add(0, image_of_face, per_face)
        return total / (len(self.branches) * len(self.surrogates))

    def perceptual_term(self, adversarial: torch.Tensor, clean: torch.Tensor, faces: Faces) -> torch.Tensor:
        """Per image: mean of LPIPS on its face crops (averaged) and on the full photo."""
        if self.perceptual is None:
            return adversarial.new_zeros(len(faces))
        weights, image_of_face = face_weights(faces, adversarial.device), face_images(faces, adversarial.device)
        on_faces = self.perceptual(crops_of(clean, faces, FACE_CROP), crops_of(adversarial, faces, FACE_CROP))
        face_mean = adversarial.new_zeros(len(faces)).index_add(0, image_of_face, on_faces * weights)
        return 0.5 * (face_mean + self.perceptual(clean, adversarial))

    def forward(self, adversarial: torch.Tensor, clean: torch.Tensor, faces: Faces,
                targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-image objective [B] (to maximise) and its parts."""
        features = self.feature_term(adversarial, faces, targets)
        perceptual = self.perceptual_term(adversarial, clean, faces)
        return features - self.alpha * perceptual, {"features": features.detach(), "lpips": perceptual.detach()}
