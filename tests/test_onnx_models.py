"""The ONNX interpreter, SFace and user ONNX models, checked against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112
from fr_shield.core.errors import FrShieldError, WeightError
from fr_shield.models import create
from fr_shield.models.onnx_graph import OnnxConversionError, OnnxModule
from fr_shield.models.onnx_user import OnnxSpecError, load_spec

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

# Two images each of three people (Glint24 files are numbered; the first two of each folder).
PEOPLE = ["Barack Obama", "Tom Hanks", "Jennifer Aniston"]
INT64_MAX = np.iinfo(np.int64).max


def _session(model: onnx.ModelProto | Path):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # old exports list initializers as inputs; ORT warns per tensor
    options.intra_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------
# SFace on real aligned faces


@pytest.fixture(scope="module")
def sface_path(weight_cache) -> Path:
    return weights.path("sface", weight_cache)


@pytest.fixture(scope="module")
def sface(sface_path, weight_cache):
    return create("sface", cache_dir=weight_cache)


@pytest.fixture(scope="module")
def faces_bgr(glint_root) -> list[np.ndarray]:
    images = []
    for person in PEOPLE:
        folder = glint_root / person
        for file in sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:2]:
            images.append(cv2.imread(str(file)))
    return images


def _to_tensor(images_bgr: list[np.ndarray]) -> torch.Tensor:
    rgb = np.stack([image[:, :, ::-1] for image in images_bgr]).astype(np.float32) / 255.0
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def sface_embeddings(sface, faces_bgr):
    with torch.no_grad():
        return sface(_to_tensor(faces_bgr))


def test_sface_spec():
    from fr_shield.models import get_spec

    spec = get_spec("sface")
    assert spec.input_size == (112, 112) and spec.embedding_size == 128
    assert spec.similarity == "cosine" and spec.threshold == pytest.approx(0.363)
    assert spec.channel_order == "RGB" and spec.value_range == "0..255"
    np.testing.assert_array_equal(spec.template, ARCFACE_112)


@pytest.mark.real
def test_sface_matches_onnxruntime(sface_path, faces_bgr, sface_embeddings):
    session = _session(sface_path)
    pixels = _to_tensor(faces_bgr).numpy() * 255.0  # the graph's own input: RGB 0..255
    # The file declares batch size 1, so onnxruntime runs one image at a time.
    reference = np.concatenate([session.run(None, {"data": pixels[i:i + 1]})[0] for i in range(len(pixels))])
    assert sface_embeddings.shape == (len(faces_bgr), 128)
    assert np.abs(sface_embeddings.numpy() - reference).max() <= 1e-4


@pytest.mark.real
def test_sface_channel_order_matches_opencv(sface_path, faces_bgr, sface_embeddings):
    # OpenCV's FaceRecognizerSF takes the BGR image and swaps it to RGB for the network.
    recognizer = cv2.FaceRecognizerSF.create(str(sface_path), "")
    opencv = np.concatenate([recognizer.feature(image) for image in faces_bgr[:2]])
    assert np.abs(sface_embeddings[:2].numpy() - opencv).max() <= 1e-4


@pytest.mark.real
def test_sface_separates_people(sface, sface_embeddings):
    e = torch.nn.functional.normalize(sface_embeddings, dim=1)
    similarity = e @ e.T
    threshold = sface.spec.threshold
    for person in range(len(PEOPLE)):
        a, b = 2 * person, 2 * person + 1
        assert similarity[a, b] > threshold, PEOPLE[person]
        for other in range(len(PEOPLE)):
            if other != person:
                assert similarity[a, 2 * other] < threshold and similarity[b, 2 * other + 1] < threshold


@pytest.mark.real
def test_sface_gradient_reaches_input(sface, faces_bgr, sface_embeddings):
    x = _to_tensor(faces_bgr[:1]).requires_grad_(True)
    target = torch.nn.functional.normalize(sface_embeddings[2:3], dim=1)
    loss = (torch.nn.functional.normalize(sface(x), dim=1) * target).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    assert all(not p.requires_grad for p in sface.parameters())


# ------------------------------------------------------------------------------------------
# each operator against onnxruntime on a one-node (or few-node) graph

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 7, 8)).astype(np.float32)


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, initializers=(), inputs=(("x", X),), outputs=("y",), opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "case",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
         for name, value in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # a version every onnxruntime of recent years reads
    return model


def _node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def _f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


CASES = {
    "conv_groups_asym_pads": ([_node("Conv", ["x", "w", "b"], group=3, pads=[0, 1, 1, 2], strides=[2, 1],
                                     dilations=[1, 2], kernel_shape=[3, 3])],
                              [_init("w", _f(6, 1, 3, 3)), _init("b", _f(6))]),
    "conv_same_upper": ([_node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])],
                        [_init("w", _f(4, 3, 3, 3))]),
    "conv_sym_pads": ([_node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1])],
                      [_init("w", _f(5, 3, 3, 3)), _init("b", _f(5))]),
    "batchnorm": ([_node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
                  [_init("s", _f(3)), _init("b", _f(3)), _init("m", _f(3)),
                   _init("v", np.abs(_f(3)) + 0.1)]),
    "prelu": ([_node("PRelu", ["x", "a"])], [_init("a", _f(3, 1, 1))]),
    "relu": ([_node("Relu", ["x"])], []),
    "leaky_relu": ([_node("LeakyRelu", ["x"], alpha=0.2)], []),
    "sigmoid": ([_node("Sigmoid", ["x"])], []),
    "tanh": ([_node("Tanh", ["x"])], []),
    "softmax": ([_node("Softmax", ["x"], axis=1)], []),
    "add_sub_mul_div": ([_node("Add", ["x", "c"], ["t1"]), _node("Sub", ["t1", "x"], ["t2"]),
                         _node("Mul", ["t2", "x"], ["t3"]), _node("Div", ["t3", "c"])],
                        [_init("c", np.abs(_f(3, 1, 1)) + 0.5)]),
    "gemm": ([_node("Flatten", ["x"], ["f"]),
              _node("Gemm", ["f", "w", "c"], alpha=0.5, beta=2.0, transB=1)],
             [_init("w", _f(4, 168)), _init("c", _f(4))]),
    "gemm_trans_a": ([_node("Flatten", ["x"], ["f"]), _node("Gemm", ["w", "f"], transA=1, transB=1)],
                     [_init("w", _f(168, 5))]),
    "matmul": ([_node("MatMul", ["x", "w"])], [_init("w", _f(8, 4))]),
    "flatten_axis2": ([_node("Flatten", ["x"], axis=2)], []),
    "reshape_zero_minus1": ([_node("Reshape", ["x", "s"])], [_init("s", np.array([0, -1, 8], np.int64))]),
    "transpose": ([_node("Transpose", ["x"], perm=[0, 2, 3, 1])], []),
    "constant_identity_dropout": ([_node("Constant", [], ["k"], value=_init("kv", np.float32(1.5))),
                                   _node("Mul", ["x", "k"], ["t"]), _node("Identity", ["t"], ["u"]),
                                   _node("Dropout", ["u"])], []),
    "global_average_pool": ([_node("GlobalAveragePool", ["x"])], []),
    "average_pool_pads": ([_node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], []),
    "average_pool_count_pad": ([_node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                      pads=[1, 1, 1, 1], count_include_pad=1)], []),
    "average_pool_asym_ceil": ([_node("AveragePool", ["x"], kernel_shape=[2, 3], strides=[2, 2],
                                      pads=[0, 0, 1, 2], ceil_mode=1)], []),
    "max_pool": ([_node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], []),
    "max_pool_asym_ceil": ([_node("MaxPool", ["x"], kernel_shape=[3, 2], strides=[2, 2],
                                  pads=[0, 1, 2, 0], ceil_mode=1)], []),
    "concat": ([_node("Relu", ["x"], ["r"]), _node("Concat", ["x", "r"], axis=1)], []),
    # The dynamic flatten exporters write: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    "shape_gather_unsqueeze_concat_reshape": (
        [_node("Shape", ["x"], ["s"]), _node("Gather", ["s", "zero"], ["n"], axis=0),
         _node("Unsqueeze", ["n", "axis0"], ["n1"]), _node("Concat", ["n1", "minus1"], ["shape"], axis=0),
         _node("Reshape", ["x", "shape"])],
        [_init("zero", np.array(0, np.int64)), _init("axis0", np.array([0], np.int64)),
         _init("minus1", np.array([-1], np.int64))]),
    "shape_arithmetic_div": (
        [_node("Shape", ["x"], ["s"]), _node("Gather", ["s", "idx"], ["hw"], axis=0),
         _node("Div", ["hw", "two"], ["half"]), _node("Concat", ["lead", "half", "rest"], ["shape"], axis=0),
         _node("Slice", ["x", "zero1", "half", "axis2"], ["sl"]), _node("Reshape", ["sl", "shape"])],
        [_init("idx", np.array([2], np.int64)), _init("two", np.array([2], np.int64)),
         _init("lead", np.array([2], np.int64)), _init("rest", np.array([-1], np.int64)),
         _init("zero1", np.array([0], np.int64)), _init("axis2", np.array([2], np.int64))]),
    "squeeze_reduce_mean": ([_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
                             _node("Squeeze", ["m", "ax"])], [_init("ax", np.array([2, 3], np.int64))]),
    "reduce_mean_no_keep": ([_node("ReduceMean", ["x"], axes=[1], keepdims=0)], []),
    "unsqueeze_negative": ([_node("Unsqueeze", ["x", "ax"])], [_init("ax", np.array([-1, 1], np.int64))]),
    "slice_steps": ([_node("Slice", ["x", "st", "en", "ax", "sp"])],
                    [_init("st", np.array([1, -6], np.int64)), _init("en", np.array([INT64_MAX, -1], np.int64)),
                     _init("ax", np.array([1, 3], np.int64)), _init("sp", np.array([1, 2], np.int64))]),
    "slice_negative_step": ([_node("Slice", ["x", "st", "en", "ax", "sp"])],
                            [_init("st", np.array([-2], np.int64)), _init("en", np.array([-INT64_MAX], np.int64)),
                             _init("ax", np.array([2], np.int64)), _init("sp", np.array([-2], np.int64))]),
    "pow_sqrt": ([_node("Pow", ["x", "p"], ["sq"]), _node("Add", ["sq", "one"], ["s1"]), _node("Sqrt", ["s1"])],
                 [_init("p", np.float32(2.0)), _init("one", np.float32(1.0))]),
    "clip": ([_node("Clip", ["x", "lo", "hi"])], [_init("lo", np.float32(-0.5)), _init("hi", np.float32(0.7))]),
    "clip_max_only": ([_node("Clip", ["x", "", "hi"])], [_init("hi", np.float32(0.2))]),
    "pad_reflect": ([_node("Pad", ["x", "p"], mode="reflect")],
                    [_init("p", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))]),
    "cast_neg_exp": ([_node("Neg", ["x"], ["n"]), _node("Exp", ["n"], ["e"]),
                      _node("Cast", ["e"], to=TensorProto.FLOAT)], []),
    "global_max_pool_reduce_sum_max": ([_node("GlobalMaxPool", ["x"], ["g"]),
                                        _node("ReduceSum", ["x", "ax"], ["r"], keepdims=1),
                                        _node("ReduceMax", ["r"], ["m"], axes=[3], keepdims=1),
                                        _node("Add", ["g", "m"])], [_init("ax", np.array([2], np.int64))]),
    "expand_constant_of_shape": ([_node("Shape", ["x"], ["s"]), _node("ConstantOfShape", ["s"], ["z"],
                                                                     value=_init("v", np.array([0.5], np.float32))),
                                  _node("Expand", ["b", "s"], ["e"]), _node("Add", ["z", "e"], ["t"]),
                                  _node("Mul", ["t", "x"])], [_init("b", _f(3, 1, 1))]),
    "constant_folding": ([_node("Transpose", ["w"], ["wt"], perm=[1, 0]), _node("MatMul", ["x", "wt"])],
                         [_init("w", _f(3, 8))]),
}
OLD_OPSET_CASES = {
    # Opset 11 and older keep axes as attributes and Clip bounds as attributes (opset 6).
    "unsqueeze_squeeze_attrs": ([_node("Unsqueeze", ["x"], ["u"], axes=[0]), _node("Squeeze", ["u"], axes=[0])], 11),
    "slice_attrs": ([_node("Slice", ["x"], starts=[1, 2], ends=[3, 100], axes=[2, 3])], 9),
    "clip_attrs": ([_node("Clip", ["x"], min=-0.3, max=0.4)], 6),
    "reduce_mean_default_axes": ([_node("ReduceMean", ["x"])], 11),
}


def _compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol=1e-5):
    reference = _session(model).run(None, feeds)[0]
    module = OnnxModule(model)
    with torch.no_grad():
        ours = module(*[torch.from_numpy(v) for v in feeds.values()])
    assert tuple(ours.shape) == reference.shape
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_onnxruntime(case):
    nodes, initializers = CASES[case]
    _compare(_model(nodes, initializers), {"x": X})


@pytest.mark.parametrize("case", sorted(OLD_OPSET_CASES))
def test_operator_old_opset_matches_onnxruntime(case):
    nodes, opset = OLD_OPSET_CASES[case]
    _compare(_model(nodes, opset=opset), {"x": X})


def test_constant_nodes_are_folded():
    nodes, initializers = CASES["constant_folding"]
    module = OnnxModule(_model(nodes, initializers))
    assert [step.op_type for step in module._steps] == ["MatMul"]
    assert len(list(module.buffers())) == 1  # only the transposed weight is kept


def test_interpreter_gradient_matches_finite_difference():
    nodes, initializers = CASES["conv_groups_asym_pads"]
    module = OnnxModule(_model(nodes + [_node("Tanh", ["y"], ["z"])], initializers, outputs=("z",)))
    x = torch.from_numpy(X[:1, :, :5, :6].astype(np.float64)).requires_grad_(True)
    module.double()  # float64 buffers, so finite differences are exact enough
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


# ------------------------------------------------------------------------------------------
# a user's own ONNX model through the registry


def _tiny_fr_model(size: int = 16, nhwc: bool = False) -> onnx.ModelProto:
    """conv -> bn -> prelu -> depthwise conv -> global pool -> flatten -> gemm: [N,3,s,s] -> [N,4]."""
    # A TensorFlow-style export takes NHWC and transposes first.
    head = [_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2])] if nhwc else []
    nodes = head + [
        _node("Conv", ["nchw" if nhwc else "input", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1],
              kernel_shape=[3, 3]),
        _node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"], epsilon=1e-5),
        _node("PRelu", ["bn", "slope"], ["p"]),
        _node("Conv", ["p", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
        _node("GlobalAveragePool", ["c2"], ["gap"]),
        _node("Flatten", ["gap"], ["flat"]),
        _node("Gemm", ["flat", "fc", "fcb"], ["embedding"], transB=1),
    ]
    initializers = [
        _init("w1", _f(8, 3, 3, 3)), _init("b1", _f(8)), _init("g", _f(8)), _init("beta", _f(8)),
        _init("mean", _f(8)), _init("var", np.abs(_f(8)) + 0.5), _init("slope", _f(8, 1, 1) * 0.1),
        _init("w2", _f(8, 1, 3, 3)), _init("fc", _f(4, 8)), _init("fcb", _f(4)),
    ]
    graph = helper.make_graph(
        nodes, "tiny_fr",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", size, size, 3] if nhwc else ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", None])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture
def tiny_model_path(tmp_path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_fr_model(), str(path))
    return path


def test_user_onnx_model_with_spec_file(tiny_model_path):
    tiny_model_path.with_suffix(".yaml").write_text(
        "input_size: 16\nchannel_order: BGR\nvalue_range: '0..255'\nmean: [1, 2, 3]\n"
        "std: [50, 60, 70]\nthreshold: 0.5\nlicence: MIT\nsource: made in a test\n"
    )
    model = create(f"onnx:{tiny_model_path}")
    spec = model.spec
    assert spec.input_size == (16, 16) and spec.embedding_size == 4  # inferred from the graph
    assert spec.channel_order == "BGR" and spec.threshold == 0.5 and spec.licence == "MIT"
    np.testing.assert_allclose(spec.template, ARCFACE_112 * 16 / 112, rtol=1e-5)

    rgb = RNG.random((3, 3, 16, 16), dtype=np.float32)
    x = torch.from_numpy(rgb).requires_grad_(True)
    ours = model(x)
    # What the network itself should see: BGR, 0..255, minus mean over std (in BGR order).
    network_input = (rgb[:, ::-1] * 255.0 - np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1)) \
        / np.array([50, 60, 70], np.float32).reshape(1, 3, 1, 1)
    reference = _session(tiny_model_path).run(None, {"input": network_input.astype(np.float32)})[0]
    np.testing.assert_allclose(ours.detach().numpy(), reference, rtol=1e-4, atol=1e-4)
    ours.sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0


def test_user_onnx_model_without_spec_file_uses_arcface_defaults(tiny_model_path):
    with pytest.warns(UserWarning, match="no spec file"):
        spec = load_spec(tiny_model_path)
    assert spec.channel_order == "RGB" and spec.similarity == "cosine"
    assert spec.value_range == "0..255" and spec.mean == (127.5,) * 3 and spec.std == (127.5,) * 3
    assert spec.input_size == (16, 16)  # the graph declares 16 x 16; 112 only when it does not say
    assert "ArcFace defaults" in spec.source

    model = create(f"onnx:{tiny_model_path}")
    rgb = RNG.random((2, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(rgb)).numpy()
    reference = _session(tiny_model_path).run(None, {"input": (rgb * 255.0 - 127.5) / 127.5})[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_user_onnx_model_nhwc_input(tmp_path):
    path = tmp_path / "tiny_nhwc.onnx"
    onnx.save(_tiny_fr_model(nhwc=True), str(path))
    path.with_suffix(".yaml").write_text("value_range: '0..1'\nmean: 0\nstd: 1\n")
    model = create(f"onnx:{path}")
    rgb = RNG.random((2, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(rgb)).numpy()
    reference = _session(path).run(None, {"input": np.ascontiguousarray(rgb.transpose(0, 2, 3, 1))})[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_user_spec_unknown_key_is_a_clear_error(tiny_model_path):
    tiny_model_path.with_suffix(".yaml").write_text("input_size: 16\ncolour: blue\n")
    with pytest.raises(OnnxSpecError, match="unknown key.*colour") as caught:
        create(f"onnx:{tiny_model_path}")
    assert isinstance(caught.value, FrShieldError) and isinstance(caught.value, ValueError)


def test_user_spec_bad_value_is_a_clear_error(tiny_model_path):
    tiny_model_path.with_suffix(".yaml").write_text("channel_order: GRB\n")
    with pytest.raises(OnnxSpecError, match="channel_order must be one of RGB, BGR"):
        load_spec(tiny_model_path)


def test_missing_model_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(WeightError, match="does not exist"):
        create(f"onnx:{missing}")


def test_unsupported_operator_is_a_clear_error(tmp_path):
    path = tmp_path / "odd.onnx"
    onnx.save(_model([_node("Relu", ["x"], ["r"]), _node("Hardmax", ["r"])]), str(path))
    with pytest.raises(OnnxConversionError, match=r"Hardmax.*odd\.onnx"):
        OnnxModule.from_file(path)
    path.with_suffix(".yaml").write_text("input_size: [7, 8]\nembedding_size: 8\n")
    with pytest.raises(OnnxConversionError, match="Hardmax"):
        create(f"onnx:{path}")


def test_used_extra_output_is_a_clear_error():
    pooled = [_node("MaxPool", ["x"], ["y", "indices"], kernel_shape=[2, 2])]
    OnnxModule(_model(pooled))  # an unread indices output is harmless
    with pytest.raises(OnnxConversionError, match="extra output.*indices"):
        OnnxModule(_model(pooled, outputs=("y", "indices")))


def test_conv_nodes_are_modules_that_forward_hooks_reach():
    """The attacks' feature dropout and mid-level maps hook convolutions: an interpreted graph's
    Conv nodes are modules of their own, in graph order, and a hook's returned output is used."""
    from fr_shield.attacks.objective import convolutions, mid_layer

    proto = _tiny_fr_model()
    module = OnnxModule(proto)
    x = torch.from_numpy(_f(2, 3, 16, 16))
    plain = module(x)
    layers = convolutions(module)
    assert len(layers) == 2 and mid_layer(module, 0.0) is layers[0] and mid_layer(module, 1.0) is layers[1]
    seen = []
    hooks = [layers[0].register_forward_hook(lambda m, i, o: seen.append(o.shape)),
             layers[1].register_forward_hook(lambda m, i, o: o * 0)]
    zeroed = module(x)
    for hook in hooks:
        hook.remove()
    assert seen == [torch.Size([2, 8, 8, 8])]
    fcb = torch.from_numpy(numpy_helper.to_array([i for i in proto.graph.initializer if i.name == "fcb"][0]))
    assert torch.allclose(zeroed, fcb.expand_as(zeroed), atol=1e-6)  # nothing but the bias reaches the output
    assert torch.equal(module(x), plain)  # hooks removed: the graph as before


def test_residual_adds_name_the_conv_that_ends_each_branch():
    """Skip gradient scales residual branches: of a residual Add's two computed inputs, the one
    computed later is the branch; where a Conv node computes it, that module ends the branch."""
    from fr_shield.attacks.gradients import residual_branch_ends, skip_gradient_hooks

    nodes = [_node("Conv", ["x", "w1"], ["stem"], pads=[1, 1, 1, 1]),
             _node("Relu", ["stem"], ["r"]),
             _node("Conv", ["r", "w2"], ["branch"], pads=[1, 1, 1, 1]),
             _node("Add", ["stem", "branch"], ["sum"]),
             _node("Add", ["sum", "bias"], ["y"])]  # a constant addend: no residual
    module = OnnxModule(_model(nodes, [_init("w1", _f(3, 3, 3, 3)), _init("w2", _f(3, 3, 3, 3)),
                                       _init("bias", _f(3, 1, 1))]))
    ends = residual_branch_ends(module)
    assert ends == [module.convolutions[1]]
    x = torch.from_numpy(X).requires_grad_(True)
    plain = module(x)
    (full,) = torch.autograd.grad(plain.sum(), x)
    hooks = skip_gradient_hooks(module, 0.0)
    cut = module(x)
    (shortcut_only,) = torch.autograd.grad(cut.sum(), x)
    for hook in hooks:
        hook.remove()
    assert torch.equal(cut, plain)  # the forward pass is unchanged
    x2 = torch.from_numpy(X).requires_grad_(True)  # with the branch's gradient cut: the stem's alone
    (expected,) = torch.autograd.grad(module.convolutions[0](x2, getattr(module, module._buffer_of["w1"])).sum(), x2)
    assert torch.allclose(shortcut_only, expected, atol=1e-5) and not torch.allclose(full, expected, atol=1e-3)
