"""Targeted identity shift (issue 13, ingredient 4): a pool of other people's faces to steer toward.

Pushing a face's embedding away from its clean one lets every surrogate move it toward its own
nearest wrong identity, and those directions need not agree across models. Fawkes (Shan et al.,
2020) and TIP-IM (Yang et al., 2021) instead pull every model toward the *same* other person: an
anchor identity chosen per face from a public pool. Here the anchor of a face is the pool face
least similar to it on average over the surrogates (Fawkes' choice: the farthest candidate), so
the shift is as large as possible and every model is steered the same way.

A pool is a folder of photos, one person's face in each (the face nearest the centre is used);
``AnchorPool.embeddings`` embeds them once per surrogate. ``pool_digest`` keys the attack's cache
on the pool's bytes, not only its path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fr_shield.core.align import align_faces
from fr_shield.core.detect import FaceDetector, central_face
from fr_shield.core.errors import ConfigError
from fr_shield.core.imageio import SUPPORTED_SUFFIXES, load_rgb
from fr_shield.models.spec import pair_similarity

def pool_photos(folder: str | Path) -> list[Path]:
    """The photos of an anchor pool, sorted; a clear error for a missing or empty folder."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"anchor pool folder not found: {root}")
    photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and not p.name.startswith("."))
    if len(photos) < 2:
        raise ConfigError(f"anchor pool {root} holds {len(photos)} photo(s); it needs at least 2 faces")
    return photos


def pool_digest(folder: str | Path) -> str:
    """SHA-256 over the pool's file names and bytes (the attack's cache key)."""
    digest = hashlib.sha256()
    root = Path(folder).expanduser()
    for photo in pool_photos(root):
        digest.update(photo.relative_to(root).as_posix().encode())
        digest.update(photo.read_bytes())
    return digest.hexdigest()


class AnchorPool:
    """The faces of a pool folder, each as (photo, landmarks of its central face)."""

    def __init__(self, folder: str | Path, detector: FaceDetector | None = None):
        detector = detector or FaceDetector()
        self.folder = Path(folder).expanduser()
        self.faces: list[tuple[torch.Tensor, np.ndarray]] = []
        for photo in pool_photos(self.folder):
            rgb = load_rgb(photo)
            face = central_face(detector(rgb), rgb.shape)
            if face is not None:
                self.faces.append((torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1), face.landmarks))
        if len(self.faces) < 2:
            raise ConfigError(f"anchor pool {self.folder}: fewer than 2 photos with a detectable face")

    @torch.no_grad()
    def embeddings(self, models: list[nn.Module]) -> list[torch.Tensor]:
        """Per model, the pool's embeddings [pool, D]."""
        result = []
        for model in models:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            crops = torch.cat([align_faces(image.to(device), [points], model.spec) for image, points in self.faces])
            result.append(model(crops))
        return result


def choose_anchors(clean: list[torch.Tensor], pool: list[torch.Tensor], models: list[nn.Module]) -> list[torch.Tensor]:
    """Per model, the anchor embedding of every face [faces, D]: the pool face with the lowest
    similarity to the clean face, averaged over the models (one anchor per face for all models).
    Each model's similarities are standardised over the pool first: cosines and negative
    distances are on different scales."""
    scores = []
    for c, p, model in zip(clean, pool, models):
        similarity = pair_similarity(c[:, None], p[None], model.spec)  # [faces, pool]
        scores.append((similarity - similarity.mean(dim=1, keepdim=True)) / similarity.std(dim=1, keepdim=True).clamp_min(1e-8))
    chosen = torch.stack(scores).mean(dim=0).argmin(dim=1)
    return [p[chosen] for p in pool]


def anchor_embeddings(folder: str | Path | None, models: list[nn.Module]) -> list[torch.Tensor] | None:
    """The pool's embeddings per model, or None without a pool (the attack's ``anchor_pool``)."""
    return None if folder is None else AnchorPool(folder).embeddings(models)
