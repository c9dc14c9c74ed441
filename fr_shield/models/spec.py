"""Preprocessing facts of each face-recognition model, kept apart from weight loading.

A ``ModelSpec`` says what a model expects (input size, alignment template, channel order,
value range and normalisation), what it returns (embedding size, the similarity to compare
embeddings with, a verification threshold) and where it comes from (licence, source). Every
registry model takes RGB float images in [0, 1] of ``input_size`` and applies its own
convention inside ``forward``, so callers never normalise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fr_shield.core.align import ARCFACE_112, scaled_template  # noqa: F401 - the specs' templates


@dataclass(frozen=True)
class ModelSpec:
    """What one face-recognition model expects and returns."""

    name: str
    input_size: tuple[int, int]  # (height, width) of the aligned crop
    template: np.ndarray = field(repr=False)  # 5 x 2 landmark positions (x, y) in the crop
    embedding_size: int
    similarity: str  # "cosine" or "euclidean" (dlib compares by distance)
    threshold: float  # same person if similarity >= threshold ("euclidean": -distance)
    channel_order: str = "RGB"  # what the network sees after its own conversion
    value_range: str = "0..255"  # pixel scale the network sees before its normalisation
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    licence: str = ""
    source: str = ""
    weights: tuple[str, ...] = ()  # names in ``fr_shield.core.weights.WEIGHTS``


def pair_similarity(a: torch.Tensor, b: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Row-wise similarity of embeddings in the model's own terms: cosine, or minus the distance.

    Broadcasts over leading dimensions; "same person" when the result is >= ``spec.threshold``.
    """
    if spec.similarity == "euclidean":
        return -(a - b).norm(dim=-1)
    return F.cosine_similarity(a, b, dim=-1)
