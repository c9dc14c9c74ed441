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

# The five-point ArcFace template (eyes, nose tip, mouth corners) in a 112 x 112 crop.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def scaled_template(size: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The ArcFace template moved to a ``size`` x ``size`` crop.

    ``scale`` enlarges the face relative to the 112 template mapped proportionally onto ``size``;
    ``shift`` then moves it (pixels of the ``size`` crop).
    """
    proportional = ARCFACE_112 * (size / 112.0)
    centre = np.array([size / 2.0, size / 2.0], dtype=np.float32)
    return ((proportional - centre) * scale + centre + np.asarray(shift, np.float32)).astype(np.float32)


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
    weights: tuple[str, ...] = ()  # names in ``fr_shield.weights.WEIGHTS``


def pair_similarity(a: torch.Tensor, b: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Row-wise similarity of embeddings in the model's own terms: cosine, or minus the distance.

    Broadcasts over leading dimensions; "same person" when the result is >= ``spec.threshold``.
    """
    if spec.similarity == "euclidean":
        return -(a - b).norm(dim=-1)
    return F.cosine_similarity(a, b, dim=-1)
