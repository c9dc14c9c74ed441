"""LFW-style verification accuracy of registry models, with our own detection and alignment.

Seeded pairs (half same identity, half different) are drawn from an identity-folder dataset;
each photo's central face is detected, aligned for each model and embedded; the accuracy is
the mean over 10 folds of the held-out accuracy at the threshold that is best on the other 9.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fr_shield.core.align import align_faces
from fr_shield.core.detect import central_face
from fr_shield.core.errors import DataError, ImageError
from fr_shield.core.face_index import FaceIndex
from fr_shield.core.imageio import load_rgb
from fr_shield.models import create
from fr_shield.study.data import scan_identities


@dataclass(frozen=True)
class VerifyConfig:
    data: Path
    models: tuple[str, ...] = ("sface", "dlib_resnet", "facenet_casia")
    pairs: int = 1000
    folds: int = 10
    seed: int = 0
    batch_size: int = 32
    cache_dir: Path | None = None  # weights
    face_cache: Path | None = None  # detected landmarks


def sample_pairs(identities: dict[str, list[Path]], count: int, seed: int) -> list[tuple[Path, Path, bool]]:
    """``count`` distinct pairs, the first half same-identity, the second half different."""
    rng = random.Random(seed)
    names = sorted(identities)
    repeated = [name for name in names if len(identities[name]) >= 2]
    if not repeated or len(names) < 2:
        raise DataError("verification needs at least one identity with 2 images and at least 2 identities")
    same, different = set(), set()
    limit = count * 50  # enough tries for any dataset that can supply the pairs at all
    while len(same) < count // 2 and limit:
        limit -= 1
        a, b = sorted(rng.sample(identities[rng.choice(repeated)], 2))
        same.add((a, b, True))
    while len(different) < count - count // 2 and limit:
        limit -= 1
        first, second = rng.sample(names, 2)
        a, b = sorted([rng.choice(identities[first]), rng.choice(identities[second])])
        different.add((a, b, False))
    if len(same) + len(different) < count:
        raise DataError(f"could draw only {len(same)} same and {len(different)} different pairs; asked for {count}")
    return sorted(same) + sorted(different)


def cross_validated_accuracy(scores: np.ndarray, same: np.ndarray, folds: int, seed: int) -> tuple[float, float, float]:
    """Mean and std of held-out accuracy over ``folds`` folds, and the threshold fitted on all pairs."""

    def best_threshold(s: np.ndarray, y: np.ndarray) -> float:
        candidates = np.unique(s)
        midpoints = np.concatenate([[candidates[0] - 1e-6], (candidates[1:] + candidates[:-1]) / 2, [candidates[-1] + 1e-6]])
        accuracy = [((s >= t) == y).mean() for t in midpoints]
        return float(midpoints[int(np.argmax(accuracy))])

    order = np.random.default_rng(seed).permutation(len(scores))
    accuracies = []
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        threshold = best_threshold(scores[train], same[train])
        accuracies.append(((scores[fold] >= threshold) == same[fold]).mean())
    return float(np.mean(accuracies)), float(np.std(accuracies)), best_threshold(scores, same)


def pair_scores(embeddings: torch.Tensor, similarity: str) -> torch.Tensor:
    """Similarity of rows 2i and 2i+1: cosine, or minus the Euclidean distance."""
    first, second = embeddings[0::2], embeddings[1::2]
    if similarity == "cosine":
        return torch.nn.functional.cosine_similarity(first, second)
    if similarity == "euclidean":
        return -(first - second).norm(dim=1)
    raise ValueError(f"unknown similarity '{similarity}'")


def verify(config: VerifyConfig, progress: bool = True) -> dict:
    identities = scan_identities(config.data)
    pairs = sample_pairs(identities, config.pairs, config.seed)
    index = FaceIndex(config.face_cache)
    photos = sorted({path for pair in pairs for path in pair[:2]})
    landmarks: dict[Path, np.ndarray] = {}
    unreadable = 0
    for path in tqdm(photos, desc="detect", disable=not progress):
        try:
            image = load_rgb(path)
        except ImageError:
            unreadable += 1
            continue
        face = central_face(index.faces(path, image), image.shape)
        if face is not None:
            landmarks[path] = face.landmarks
    index.save()
    usable = [pair for pair in pairs if pair[0] in landmarks and pair[1] in landmarks]
    same = np.array([pair[2] for pair in usable])
    report = {"data": str(config.data), "pairs_requested": len(pairs), "photos": len(photos),
              "photos_without_face": len(photos) - len(landmarks) - unreadable,
              "photos_unreadable": unreadable, "models": {}}
    for name in config.models:
        model = create(name, config.cache_dir)
        embeddings = []
        flat = [path for pair in usable for path in pair[:2]]
        with torch.no_grad():
            for start in tqdm(range(0, len(flat), config.batch_size), desc=name, disable=not progress):
                crops = [
                    align_faces(torch.from_numpy(load_rgb(path)).permute(2, 0, 1), [landmarks[path]], model.spec)
                    for path in flat[start:start + config.batch_size]
                ]
                embeddings.append(model(torch.cat(crops)))
        scores = pair_scores(torch.cat(embeddings), model.spec.similarity).numpy()
        mean, std, threshold = cross_validated_accuracy(scores, same, config.folds, config.seed)
        report["models"][name] = {
            "accuracy": round(mean, 4), "std": round(std, 4), "pairs": len(usable),
            "threshold": round(threshold, 4), "similarity": model.spec.similarity,
            "same_mean": round(float(scores[same].mean()), 4),
            "different_mean": round(float(scores[~same].mean()), 4),
        }
    return report


def format_table(report: dict) -> str:
    lines = [f"{'model':15s} {'accuracy':>9s} {'std':>6s} {'pairs':>6s} {'threshold':>10s} {'same':>7s} {'diff':>7s}"]
    for name, row in report["models"].items():
        lines.append(
            f"{name:15s} {row['accuracy']:9.4f} {row['std']:6.4f} {row['pairs']:6d} {row['threshold']:10.4f} "
            f"{row['same_mean']:7.3f} {row['different_mean']:7.3f}"
        )
    lines.append(f"photos: {report['photos']}, without a detected face: {report['photos_without_face']}, "
                 f"unreadable: {report['photos_unreadable']}")
    return "\n".join(lines)
