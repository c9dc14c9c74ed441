"""The identification benchmark of one job: split, locate faces, embed, rank, tabulate.

Protected identities' gallery photos receive the attack (``attack=none``: they stay clean),
then the operator's transform at each level; everything else (distractors, probes) is clean.
Each probe is matched against the whole gallery; rank-1 and rank-5 accuracy are reported over
all probes and over the protected identities' probes.

``evaluate_variants`` is the one evaluation: several variants of the protected photos (an attack,
its budgets, the clean photos) under several transform families, every model; ``run_benchmark``
(one job: one attack x one family) and ``fr_shield.study.tradeoff`` (budgets x families) call it.
"""

from __future__ import annotations

from collections.abc import Collection
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


def evaluate_variants(located: LocatedSplit, variants: dict[str, dict[Path, Path] | None],
                      families: list[tuple[str, list]], models: list[str], device: torch.device,
                      surrogates: Collection[str] = (), ranks: tuple[int, ...] = (1, 5), batch_size: int = 32,
                      weights_dir: str | None = None, embedding_cache: Path | None = None,
                      progress: bool = False) -> pd.DataFrame:
    """Top-k of every variant of the protected gallery photos under every transform level, every model.

    ``variants`` maps a label to the protected identities' gallery photos' files (photo ->
    protected file; a photo it lacks stays clean), or to ``None`` for the clean photos (role
    "clean"; else "white-box" for a model in ``surrogates``, "black-box" for the others).
    ``families`` lists (transform name, levels); the transform applies to those photos only.
    Each model embeds the clean gallery and the probes once, for every variant and level.
    Rows: variant, transform, level, cell (``transforms.label``), model, role, and ``evaluate``'s
    subset, top-k, n_probes, n_no_gallery.
    """
    split, landmarks = located.split, located.landmarks
    gallery_paths = [item.path for item in split.gallery]
    probe_paths = [item.path for item in split.probes]
    protected_rows = [i for i, item in enumerate(split.gallery) if item.protected]
    sources = [gallery_paths[i] for i in protected_rows]
    labels = (split.probe_labels, split.gallery_labels, split.probe_protected_mask)
    rows = []
    for model_name in models:
        model = create(model_name, weights_dir, device)
        embedder = Embedder(model, device, batch_size, EmbeddingCache(embedding_cache, model.spec), progress)
        clean_gallery = embedder.embed(gallery_paths, [landmarks[p] for p in gallery_paths], desc=f"{model_name} gallery")
        probes = embedder.embed(probe_paths, [landmarks[p] for p in probe_paths], desc=f"{model_name} probes")
        attacked_role = "white-box" if model_name in surrogates else "black-box"
        for name, levels in families:
            transform = transforms.get(name)
            for level in levels:
                image_fn = None if transform.name == "none" else (lambda image, t=transform, l=level: t(image, l))
                cell = transforms.label(transform.name, level)
                for variant, files in variants.items():
                    gallery = clean_gallery.clone()
                    if files is not None or image_fn is not None:  # else: the clean gallery as it is
                        gallery[protected_rows] = embedder.embed(
                            [(files or {}).get(p, p) for p in sources], [landmarks[p] for p in sources], image_fn,
                            desc=f"{model_name} {variant} {cell}")
                    similarity = similarity_matrix(probes, gallery, model.spec.similarity)
                    for row in evaluate(similarity, *labels, ranks):
                        rows.append({"variant": variant, "transform": transform.name, "level": level, "cell": cell,
                                     "model": model_name, "role": "clean" if files is None else attacked_role, **row})
    return pd.DataFrame(rows)


def run_benchmark(located: LocatedSplit, plan: BenchmarkPlan, device: torch.device,
                  protected: dict[Path, Path] | None = None, weights_dir: str | None = None,
                  embedding_cache: Path | None = None, progress: bool = False) -> pd.DataFrame:
    """The tidy results table of one attack x one transform family, every level and model.

    ``protected`` maps a protected identity's gallery photo to its protected file; the
    transform then applies to those photos (protected or, without an attack, clean).
    """
    table = evaluate_variants(located, {plan.attack_name: protected or None}, [(plan.transform, plan.levels)],
                              plan.models, device, plan.surrogates, plan.ranks, plan.batch_size, weights_dir,
                              embedding_cache, progress)
    table = table.rename(columns={"variant": "attack"}).drop(columns="cell")
    return table[COLUMNS + [c for c in table.columns if c not in COLUMNS]]


def describe(located: LocatedSplit) -> dict:
    split = located.split
    return {
        "identities_protected": len(split.protected),
        "identities_total": len(split.identities),
        "gallery_images": len(split.gallery),
        "gallery_images_protected": sum(item.protected for item in split.gallery),
        "probe_images": len(split.probes),
        "probe_images_protected": sum(item.protected for item in split.probes),
        "dropped_unreadable": len(located.dropped.get("unreadable", [])),
        "dropped_no_face": len(located.dropped.get("no_face", [])),
    }

