"""The identification benchmark of one job: split, locate faces, embed, rank, tabulate.

Protected identities' gallery photos receive the attack (``attack=none``: they stay clean),
then the operator's transform at each level; everything else (distractors, probes) is clean.
Each probe is matched against the whole gallery; rank-1 and rank-5 accuracy are reported over
all probes and over the protected identities' probes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fr_shield.core import transforms
from fr_shield.core.align import ARCFACE_112
from fr_shield.core.detect import central_face
from fr_shield.core.errors import DataError, ImageError
from fr_shield.core.face_index import FaceIndex
from fr_shield.core.imageio import load_rgb
from fr_shield.models import create
from fr_shield.study.data import Split
from fr_shield.study.embed import Embedder, EmbeddingCache
from fr_shield.study.identification import evaluate, similarity_matrix

log = logging.getLogger(__name__)

COLUMNS = ["attack", "transform", "level", "model", "role", "subset", "top1", "top5", "n_probes"]


@dataclass
class LocatedSplit:
    """A split whose items all have a face, with its landmarks; what was dropped and why."""

    split: Split
    landmarks: dict[Path, np.ndarray]
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths


def locate_faces(split: Split, index: FaceIndex | None, pre_aligned: bool) -> LocatedSplit:
    """Landmarks of every item's face (the one nearest the centre); unreadable / faceless dropped."""
    landmarks: dict[Path, np.ndarray] = {}
    dropped: dict[str, list[str]] = {"unreadable": [], "no_face": []}
    for item in split.gallery + split.probes:
        try:
            image = load_rgb(item.path)
        except ImageError as error:
            dropped["unreadable"].append(f"{item.path}: {error}")
            continue
        if pre_aligned:  # the crop already is the ArcFace template, scaled to its size
            landmarks[item.path] = ARCFACE_112 * (image.shape[1] / 112.0)
            continue
        face = central_face(index.faces(item.path, image), image.shape)
        if face is None:
            dropped["no_face"].append(str(item.path))
        else:
            landmarks[item.path] = face.landmarks
    if index is not None:
        index.save()
    keep = lambda items: [item for item in items if item.path in landmarks]  # noqa: E731
    located = Split(protected=split.protected, gallery=keep(split.gallery), probes=keep(split.probes))
    if not located.probes or not located.gallery:
        raise DataError(f"no usable gallery or probe photos left after face detection ({dropped})")
    return LocatedSplit(located, landmarks, dropped)


@dataclass
class BenchmarkPlan:
    attack_name: str
    transform: str
    levels: list
    models: list[str]
    batch_size: int = 32
    ranks: tuple[int, ...] = (1, 5)
    surrogates: tuple[str, ...] = ()  # evaluators among them are white-box, the others black-box


def run_benchmark(located: LocatedSplit, plan: BenchmarkPlan, device: torch.device,
                  protected: dict[Path, Path] | None = None, weights_dir: str | None = None,
                  embedding_cache: Path | None = None, progress: bool = False) -> pd.DataFrame:
    """The tidy results table of one attack x one transform family, every level and model.

    ``protected`` maps a protected identity's gallery photo to its protected file; the
    transform then applies to those photos (protected or, without an attack, clean).
    """
    split, landmarks = located.split, located.landmarks
    gallery_paths = [item.path for item in split.gallery]
    probe_paths = [item.path for item in split.probes]
    protected_rows = [i for i, item in enumerate(split.gallery) if item.protected]
    probe_mask = [item.protected for item in split.probes]
    transform = transforms.get(plan.transform)
    rows = []
    for model_name in plan.models:
        model = create(model_name, weights_dir, device)
        embedder = Embedder(model, device, plan.batch_size, EmbeddingCache(embedding_cache, model.spec), progress)
        clean_gallery = embedder.embed(gallery_paths, [landmarks[p] for p in gallery_paths], desc=f"{model_name} gallery")
        probes = embedder.embed(probe_paths, [landmarks[p] for p in probe_paths], desc=f"{model_name} probes")
        for level in plan.levels:
            gallery = clean_gallery.clone()
            if protected or transform.name != "none":
                sources = [gallery_paths[i] for i in protected_rows]
                files = [(protected or {}).get(p, p) for p in sources]
                image_fn = None if transform.name == "none" else (lambda image, level=level: transform(image, level))
                gallery[protected_rows] = embedder.embed(
                    files, [landmarks[p] for p in sources], image_fn, desc=f"{model_name} {transform.name} {level}")
            similarity = similarity_matrix(probes, gallery, model.spec.similarity)
            for row in evaluate(similarity, [i.identity for i in split.probes],
                                [i.identity for i in split.gallery], probe_mask, plan.ranks):
                role = "clean" if not protected else ("white-box" if model_name in plan.surrogates else "black-box")
                rows.append({"attack": plan.attack_name, "transform": transform.name, "level": level,
                             "model": model_name, "role": role, **row})
    table = pd.DataFrame(rows)
    return table[COLUMNS + [c for c in table.columns if c not in COLUMNS]]


def describe(located: LocatedSplit) -> dict:
    split = located.split
    return {
        "identities_protected": len(split.protected),
        "identities_total": len({item.identity for item in split.gallery + split.probes}),
        "gallery_images": len(split.gallery),
        "gallery_images_protected": sum(item.protected for item in split.gallery),
        "probe_images": len(split.probes),
        "probe_images_protected": sum(item.protected for item in split.probes),
        "dropped_unreadable": len(located.dropped.get("unreadable", [])),
        "dropped_no_face": len(located.dropped.get("no_face", [])),
    }

