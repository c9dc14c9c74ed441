"""A user's own ONNX face-recognition model, named ``onnx:<path>`` in the registry.

The model's conventions come from a YAML spec file beside it with the same stem
(``arcface_r100.onnx`` -> ``arcface_r100.yaml``)::

    input_size: 112            # or [height, width]; default: the graph's input size, else 112
    template: arcface          # or a 5 x 2 list of (x, y) landmarks in the crop
    embedding_size: 512        # optional: read from the graph
    similarity: cosine         # or euclidean
    threshold: 0.3             # same person if cosine >= threshold (euclidean: -distance >= it)
    channel_order: RGB         # what the network expects: RGB or BGR
    value_range: "0..255"      # pixel scale before normalisation: "0..1" or "0..255"
    mean: [127.5, 127.5, 127.5]  # per channel, in channel_order and value_range units
    std: [127.5, 127.5, 127.5]
    licence: MIT
    source: where the weights came from

Every key is optional. The defaults are insightface's ArcFace convention: a 112 x 112 crop
aligned to the ArcFace template, RGB, ``(x * 255 - 127.5) / 127.5``, cosine similarity. When
``mean``/``std`` are left out they are the same [-1, 1] mapping in the chosen ``value_range``.
``template: arcface`` on a crop other than 112 x 112 scales the template proportionally.

The built module takes RGB float images in [0, 1] like every registry model, applies the
conventions above itself and returns the embeddings [B, D]. Graphs with an NHWC input
(``[N, H, W, 3]``, common in TensorFlow exports) are fed NHWC automatically.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml

from fr_shield.core.align import ARCFACE_112, scaled_template
from fr_shield.core.errors import FrShieldError, WeightError
from fr_shield.models.onnx_graph import OnnxModule
from fr_shield.models.spec import ModelSpec

KEYS = {"input_size", "template", "embedding_size", "similarity", "threshold", "channel_order",
        "value_range", "mean", "std", "licence", "source"}
# Cosine threshold assumed without a spec file: near where insightface ArcFace models separate
# same from different people on aligned crops. Calibrate it for a real deployment.
DEFAULT_THRESHOLD = 0.3


class OnnxSpecError(FrShieldError, ValueError):
    """A user's ONNX model spec file is unreadable or holds an unknown key or a bad value."""


def spec_path(model_path: str | Path) -> Path:
    """The spec file that belongs to ``model_path``, beside it: ``model.onnx.yaml`` if it exists,
    else ``model.yaml`` (both spellings are accepted; the first wins when both exist)."""
    model_path = Path(model_path)
    full = model_path.with_name(model_path.name + ".yaml")
    return full if full.is_file() else model_path.with_suffix(".yaml")


def _check_model_file(path: Path) -> None:
    if not path.is_file():
        raise WeightError(
            f"ONNX model file {path} does not exist (asked for as 'onnx:{path}'). Give the path "
            f"of an existing .onnx face-recognition model, with its spec file {spec_path(path).name} beside it"
        )


def _graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initialized = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialized]
    if len(inputs) != 1:
        raise OnnxSpecError(f"a face-recognition model takes one image input; this graph takes "
                            f"{len(inputs)}: {[i.name for i in inputs]}")
    return inputs[0]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def _layout(dims: list[int | None]) -> tuple[str, tuple[int, int] | None]:
    """("NCHW" or "NHWC", static (height, width) or None) from the declared input shape."""
    if len(dims) == 4 and dims[3] == 3 and dims[1] != 3:
        return "NHWC", (dims[1], dims[2]) if dims[1] and dims[2] else None
    if len(dims) == 4:
        return "NCHW", (dims[2], dims[3]) if dims[2] and dims[3] else None
    return "NCHW", None


def _load_graph(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as error:
        raise OnnxSpecError(f"cannot read ONNX model {path}: {error}") from error


def _pair(value, key: str, source: Path) -> tuple[int, int]:
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise OnnxSpecError(f"{source}: {key} must be a positive integer or [height, width], got {value!r}")


def _triple(value, key: str, source: Path) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    raise OnnxSpecError(f"{source}: {key} must be a number or a list of 3 numbers, got {value!r}")


def _choice(value, key: str, choices: tuple[str, ...], source: Path) -> str:
    text = str(value).strip()
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise OnnxSpecError(f"{source}: {key} must be one of {', '.join(choices)}, got {value!r}")


def _template(value, size: tuple[int, int], source: Path) -> np.ndarray:
    if isinstance(value, str):
        if value.strip().lower() != "arcface":
            raise OnnxSpecError(f"{source}: template must be 'arcface' or a 5 x 2 list, got {value!r}")
        if size == (112, 112):
            return ARCFACE_112.copy()
        if size[0] != size[1]:
            # Stretch the 112 template onto a non-square crop.
            return (ARCFACE_112 * np.array([size[1] / 112.0, size[0] / 112.0], np.float32)).astype(np.float32)
        return scaled_template(size[0])
    try:
        points = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        points = np.zeros(0)
    if points.shape != (5, 2):
        raise OnnxSpecError(f"{source}: template must be 'arcface' or a 5 x 2 list of (x, y), got {value!r}")
    return points


def _read_spec_file(path: Path) -> dict:
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise OnnxSpecError(f"cannot read spec file {path}: {error}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise OnnxSpecError(f"spec file {path} must hold a mapping of keys to values")
    unknown = sorted(set(content) - KEYS)
    if unknown:
        raise OnnxSpecError(f"spec file {path}: unknown key(s) {', '.join(map(str, unknown))}; "
                            f"allowed: {', '.join(sorted(KEYS))}")
    return content


def _infer_embedding_size(model: onnx.ModelProto, path: Path, size: tuple[int, int], layout: str) -> int:
    dims = _dims(model.graph.output[0])
    if len(dims) >= 2 and all(d is not None for d in dims[1:]):
        return math.prod(dims[1:])
    # Dynamic output shape: run one blank image through the graph to see.
    shape = (1, size[0], size[1], 3) if layout == "NHWC" else (1, 3, size[0], size[1])
    with torch.no_grad():
        out = OnnxModule(model, source=path)(torch.zeros(shape))
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(out.shape[0], -1).shape[1]


def _stamp(path: Path) -> tuple:
    """What a cached spec depends on: the model file and its spec file, as they are now."""
    spec_file = spec_path(path)
    return (str(path.resolve()), path.stat().st_mtime_ns,
            spec_file.stat().st_mtime_ns if spec_file.is_file() else None)


# The registry asks for a model's spec more than once; parsing a large ONNX file each time
# would dominate loading. Keyed by _stamp, so an edited file is read again.
_spec_cache: dict[tuple, ModelSpec] = {}


def load_spec(path: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of the ONNX model at ``path`` from its spec file (or ArcFace defaults)."""
    path = Path(path).expanduser()
    _check_model_file(path)
    key = _stamp(path)
    if key not in _spec_cache:
        _spec_cache[key] = _spec_from(path, _load_graph(path))
    return _spec_cache[key]


def _spec_from(path: Path, model: onnx.ModelProto) -> ModelSpec:
    layout, graph_size = _layout(_dims(_graph_input(model)))

    spec_file = spec_path(path)
    if spec_file.is_file():
        given = _read_spec_file(spec_file)
        note = f"spec file {spec_file.name}"
    else:
        given = {}
        note = "no spec file: insightface ArcFace defaults assumed"
        warnings.warn(
            f"no spec file {spec_file} beside {path.name}: assuming insightface ArcFace conventions "
            f"(112 x 112 ArcFace-aligned crop, RGB, (x*255-127.5)/127.5, cosine similarity, "
            f"threshold {DEFAULT_THRESHOLD}). Write {spec_file.name} to state the model's own.",
            UserWarning, stacklevel=2,
        )

    if "input_size" in given:
        size = _pair(given["input_size"], "input_size", spec_file)
        if graph_size and graph_size != size:
            raise OnnxSpecError(f"{spec_file}: input_size {list(size)} differs from the graph's "
                                f"declared input {list(graph_size)} in {path.name}")
    else:
        size = graph_size or (112, 112)

    value_range = _choice(given.get("value_range", "0..255"), "value_range", ("0..1", "0..255"), spec_file)
    half = 127.5 if value_range == "0..255" else 0.5
    threshold = given.get("threshold", DEFAULT_THRESHOLD)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise OnnxSpecError(f"{spec_file}: threshold must be a number, got {threshold!r}")
    embedding_size = given.get("embedding_size")
    if embedding_size is None:
        embedding_size = _infer_embedding_size(model, path, size, layout)
    elif not isinstance(embedding_size, int) or embedding_size <= 0:
        raise OnnxSpecError(f"{spec_file}: embedding_size must be a positive integer, got {embedding_size!r}")
    std = _triple(given.get("std", half), "std", spec_file)
    if any(s == 0 for s in std):
        raise OnnxSpecError(f"{spec_file}: std must not be zero")

    return ModelSpec(
        name=f"onnx:{path}",
        input_size=size,
        template=_template(given.get("template", "arcface"), size, spec_file),
        embedding_size=int(embedding_size),
        similarity=_choice(given.get("similarity", "cosine"), "similarity", ("cosine", "euclidean"), spec_file),
        threshold=float(threshold),
        channel_order=_choice(given.get("channel_order", "RGB"), "channel_order", ("RGB", "BGR"), spec_file),
        value_range=value_range,
        mean=_triple(given.get("mean", half), "mean", spec_file),
        std=std,
        licence=str(given.get("licence", "")),
        source=str(given.get("source", f"user file {path} ({note})")),
    )


class OnnxFaceModel(torch.nn.Module):
    """RGB images in [0, 1] [B, 3, H, W] -> the ONNX model's embeddings [B, D]."""

    def __init__(self, graph: OnnxModule, spec: ModelSpec, layout: str = "NCHW"):
        super().__init__()
        self.graph = graph
        self.layout = layout
        self.bgr = spec.channel_order == "BGR"
        scale = 255.0 if spec.value_range == "0..255" else 1.0
        # One affine map per channel: x * scale then (. - mean) / std, folded into x * a + b.
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("gain", scale / std)
        self.register_buffer("offset", -mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flip(1) if self.bgr else images
        x = x * self.gain + self.offset
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        out = self.graph(x)
        out = out[0] if isinstance(out, tuple) else out  # the embedding is the first output
        return out.reshape(out.shape[0], -1)


def build(path: str | Path) -> torch.nn.Module:
    """The ONNX model at ``path`` as a torch module taking [0, 1] RGB images."""
    path = Path(path).expanduser()
    _check_model_file(path)
    model = _load_graph(path)  # read once, for both the spec and the graph
    key = _stamp(path)
    if key not in _spec_cache:
        _spec_cache[key] = _spec_from(path, model)
    layout, _ = _layout(_dims(_graph_input(model)))
    return OnnxFaceModel(OnnxModule(model, source=path), _spec_cache[key], layout)
