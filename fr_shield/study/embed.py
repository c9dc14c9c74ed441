"""Embeddings of photos for one model: align each photo's face, batch, embed, cache clean ones.

The operator's transform (a blur, JPEG, resize) acts on the full photo before alignment, as it
would on a scraped photo. Faces are located once, on the clean photo: the benchmark measures
what recognition recovers, not whether a detector copes with a blurred photo.
Clean embeddings depend only on the photo's bytes and the model, so they are cached on disk.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fr_shield.core.align import align_faces
from fr_shield.core.files import write_atomic
from fr_shield.core.imageio import load_rgb
from fr_shield.models.spec import ModelSpec

# image [1, 3, H, W] in [0, 1] -> image of the same shape
ImageFn = Callable[[torch.Tensor], torch.Tensor]


def photo_tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(load_rgb(path)).permute(2, 0, 1)[None]


class EmbeddingCache:
    """``{(content hash, landmarks): embedding}`` kept in one torch file per model and template.

    The file name carries a hash of the model's input size and alignment template, so a change
    of template (which changes every embedding) can never read stale entries.
    """

    def __init__(self, folder: Path | None, spec: ModelSpec):
        layout = hashlib.sha1(np.asarray(spec.template, np.float32).tobytes() + str(spec.input_size).encode())
        stem = f"{spec.name.replace('/', '_').replace(':', '_')}-{layout.hexdigest()[:8]}"
        self.file = Path(folder) / f"{stem}.pt" if folder else None
        self.entries: dict[str, torch.Tensor] = {}
        if self.file and self.file.exists():
            self.entries = torch.load(self.file, weights_only=True)
        self._dirty = False

    @staticmethod
    def key(path: Path, landmarks: np.ndarray) -> str:
        digest = hashlib.sha1(Path(path).read_bytes())
        digest.update(np.round(np.asarray(landmarks, np.float32), 2).tobytes())
        return digest.hexdigest()

    def save(self) -> None:
        if self.file and self._dirty:
            buffer = io.BytesIO()
            torch.save(self.entries, buffer)
            write_atomic(self.file, buffer.getvalue())
            self._dirty = False


class Embedder:
    """Embeds photos' faces with one registry model."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch_size: int = 32,
                 cache: EmbeddingCache | None = None, progress: bool = False):
        self.model = model
        self.spec = model.spec
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress

    @torch.no_grad()
    def embed(self, paths: Sequence[Path], landmarks: Sequence[np.ndarray],
              image_fn: ImageFn | None = None, desc: str = "") -> torch.Tensor:
        """[N, D] embeddings of the face at ``landmarks[i]`` in photo ``paths[i]`` after ``image_fn``."""
        use_cache = image_fn is None and self.cache is not None
        keys = [EmbeddingCache.key(p, l) for p, l in zip(paths, landmarks)] if use_cache else []
        result: list[torch.Tensor | None] = [self.cache.entries.get(k) for k in keys] if use_cache else [None] * len(paths)
        todo = [i for i, r in enumerate(result) if r is None]
        for start in tqdm(range(0, len(todo), self.batch_size), desc=desc or self.spec.name,
                          disable=not self.progress or not todo, leave=False):
            batch = todo[start:start + self.batch_size]
            crops = []
            for i in batch:
                image = photo_tensor(paths[i]).to(self.device)
                if image_fn is not None:
                    image = image_fn(image)
                crops.append(align_faces(image[0], [landmarks[i]], self.spec))
            embeddings = self.model(torch.cat(crops)).float().cpu()
            for i, embedding in zip(batch, embeddings):
                result[i] = embedding
                if use_cache:
                    self.cache.entries[keys[i]] = embedding.clone()
                    self.cache._dirty = True
        if use_cache:
            self.cache.save()
        if not result:
            return torch.zeros(0, self.spec.embedding_size)
        return torch.stack(result)
