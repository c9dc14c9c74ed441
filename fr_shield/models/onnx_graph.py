"""A small ONNX interpreter that runs a graph as a differentiable torch module.

``OnnxModule`` keeps every initializer as a frozen buffer and, in ``forward``, executes the
graph's nodes in topological order with plain torch operations, so autograd sees an ordinary
torch computation and gradients reach the input. Only the operator subset used by common
face-recognition exports (MobileFaceNet / SFace, insightface IResNet, ...) is implemented;
any other operator is reported by name when the module is built, never half-way through a run.

Nodes whose inputs are all constants (initializers, ``Constant`` nodes) are evaluated once at
build time ("constant folding"). Shape arithmetic on the live input (``Shape`` -> ``Gather`` ->
``Concat`` -> ``Reshape``) is evaluated at run time instead, because it depends on the batch
size; it costs a handful of tiny integer ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from fr_shield.core.errors import FrShieldError
from fr_shield.models import rectifiers


class OnnxConversionError(FrShieldError):
    """An ONNX graph uses something this interpreter does not implement, or is malformed."""


Value = torch.Tensor | None
OpFn = Callable[[list[Value], dict], "torch.Tensor | tuple[torch.Tensor, ...]"]
_OPS: dict[str, OpFn] = {}
_OUTPUTS = {"Dropout": 2}  # how many outputs an op can give; 1 unless listed


def _op(*names: str):
    def register(fn: OpFn) -> OpFn:
        for name in names:
            _OPS[name] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(_OPS)


# ----------------------------------------------------------------------------------------------
# helpers


def _ints(t: Value) -> list[int]:
    """An integer tensor (shape, axes, pads...) as a Python list."""
    return [int(v) for v in t.reshape(-1).tolist()]


def _axes(node_attrs: dict, inputs: list[Value], position: int) -> list[int] | None:
    """Axes from the attribute (older opsets) or from an optional input (newer opsets)."""
    if "axes" in node_attrs:
        return list(node_attrs["axes"])
    if len(inputs) > position and inputs[position] is not None:
        return _ints(inputs[position])
    return None


def _pads_per_side(pads: Sequence[int], spatial: int) -> tuple[list[int], list[int]]:
    """ONNX pads are [begin_1 .. begin_n, end_1 .. end_n]."""
    pads = list(pads) if pads else [0] * (2 * spatial)
    return pads[:spatial], pads[spatial:]


def _auto_pads(auto_pad: str, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Explicit begin/end pads for ``auto_pad`` SAME_UPPER / SAME_LOWER (None for NOTSET/VALID)."""
    if auto_pad in ("", "NOTSET"):
        return None
    if auto_pad == "VALID":
        return [0] * len(kernel), [0] * len(kernel)
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        # SAME_UPPER puts the extra pixel at the end, SAME_LOWER at the beginning.
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _torch_pad_list(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """torch's F.pad lists pads from the last dimension backwards, (begin, end) per dimension."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def _spatial_geometry(x: torch.Tensor, attrs: dict, kernel: Sequence[int]):
    spatial = x.dim() - 2
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    auto = _auto_pads(attrs.get("auto_pad", "NOTSET"), x.shape[2:], kernel, strides, dilations)
    begin, end = auto if auto is not None else _pads_per_side(attrs.get("pads", []), spatial)
    return spatial, strides, dilations, begin, end


# ----------------------------------------------------------------------------------------------
# operators: each takes the node's inputs (None for an omitted optional input) and its attributes


@_op("Identity")
def _identity(inputs, attrs):
    return inputs[0]


@_op("Dropout")
def _dropout(inputs, attrs):
    # The identity at inference; the optional mask output (all ones) only when a node asks.
    x = inputs[0]
    if attrs["_outputs"] > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


@_op("Constant")
def _constant(inputs, attrs):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = attrs[key]
            if isinstance(value, torch.Tensor):
                return value
            dtype = torch.float32 if "float" in key else torch.int64
            return torch.tensor(value, dtype=dtype)
    raise OnnxConversionError(f"Constant node with unsupported attribute(s) {sorted(attrs)}")


@_op("Conv")
def _conv(inputs, attrs):
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
    spatial, strides, dilations, begin, end = _spatial_geometry(x, attrs, kernel)
    if begin != end:
        # torch's conv only pads symmetrically; pad explicitly with zeros first.
        x = F.pad(x, _torch_pad_list(begin, end))
        begin = [0] * spatial
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(spatial)
    if conv is None:
        raise OnnxConversionError(f"Conv over {spatial} spatial dimensions is not supported")
    return conv(x, weight, bias, stride=strides, padding=begin, dilation=dilations,
                groups=attrs.get("group", 1))


@_op("BatchNormalization")
def _batch_norm(inputs, attrs):
    # Inference form with the stored statistics (training_mode is ignored: models are frozen).
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


@_op("PRelu")
def _prelu(inputs, attrs):
    x, slope = inputs
    return rectifiers.prelu(x, slope)


@_op("Relu")
def _relu(inputs, attrs):
    return rectifiers.relu(inputs[0])


@_op("Abs")
def _abs(inputs, attrs):
    return inputs[0].abs()


@_op("LeakyRelu")
def _leaky_relu(inputs, attrs):
    return rectifiers.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@_op("Sigmoid")
def _sigmoid(inputs, attrs):
    return torch.sigmoid(inputs[0])


@_op("Tanh")
def _tanh(inputs, attrs):
    return torch.tanh(inputs[0])


@_op("Softmax")
def _softmax(inputs, attrs):
    return torch.softmax(inputs[0], dim=attrs.get("axis", -1))


@_op("Add")
def _add(inputs, attrs):
    return inputs[0] + inputs[1]


@_op("Sub")
def _sub(inputs, attrs):
    return inputs[0] - inputs[1]


@_op("Mul")
def _mul(inputs, attrs):
    return inputs[0] * inputs[1]


@_op("Div")
def _div(inputs, attrs):
    a, b = inputs
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates
    return a / b


@_op("Pow")
def _pow(inputs, attrs):
    base, exponent = inputs
    if base.is_floating_point() and not exponent.is_floating_point():
        exponent = exponent.to(base.dtype)
    return torch.pow(base, exponent).to(base.dtype)  # the result keeps the base's type


@_op("Sqrt")
def _sqrt(inputs, attrs):
    return torch.sqrt(inputs[0])


@_op("Neg")
def _neg(inputs, attrs):
    return -inputs[0]


@_op("Exp")
def _exp(inputs, attrs):
    return torch.exp(inputs[0])


@_op("Clip")
def _clip(inputs, attrs):
    x = inputs[0]
    # Opset < 11 gives min/max as attributes, later opsets as optional inputs.
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    if isinstance(low, torch.Tensor):
        low = low.reshape(())
    if isinstance(high, torch.Tensor):
        high = high.reshape(())
    if low is not None:
        x = torch.maximum(x, torch.as_tensor(low, dtype=x.dtype, device=x.device))
    if high is not None:
        x = torch.minimum(x, torch.as_tensor(high, dtype=x.dtype, device=x.device))
    return x


@_op("Gemm")
def _gemm(inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + attrs.get("beta", 1.0) * c
    return y


@_op("MatMul")
def _matmul(inputs, attrs):
    return torch.matmul(inputs[0], inputs[1])


@_op("Flatten")
def _flatten(inputs, attrs):
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@_op("Reshape")
def _reshape(inputs, attrs):
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        # 0 means "keep this dimension of the input" unless allowzero is set.
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@_op("Transpose")
def _transpose(inputs, attrs):
    x = inputs[0]
    perm = attrs.get("perm", list(reversed(range(x.dim()))))
    return x.permute(*perm)


@_op("GlobalAveragePool")
def _global_avg_pool(inputs, attrs):
    x = inputs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@_op("GlobalMaxPool")
def _global_max_pool(inputs, attrs):
    x = inputs[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def _pool_fn(kind: str, spatial: int):
    table = {
        "avg": {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d},
        "max": {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d},
    }
    fn = table[kind].get(spatial)
    if fn is None:
        raise OnnxConversionError(f"{kind} pooling over {spatial} spatial dimensions is not supported")
    return fn


def _drop_windows_in_end_pad(y: torch.Tensor, sizes, begin, strides) -> torch.Tensor:
    """With ceil_mode, ONNX (like torch) drops a last window that would start in the end padding.

    torch applies that rule only to its own symmetric padding; after explicit F.pad the padding
    looks like input to it, so the rule is applied here by trimming.
    """
    for axis, (size, pad, stride) in enumerate(zip(sizes, begin, strides)):
        windows = (pad + size - 1) // stride + 1  # windows that start inside pad + input
        if y.shape[2 + axis] > windows:
            y = y.narrow(2 + axis, 0, windows)
    return y


def _pads_fit_torch(begin, end, kernel) -> bool:
    # torch pools pad symmetrically and at most half a kernel.
    return begin == end and all(p <= k // 2 for p, k in zip(begin, kernel))


@_op("AveragePool")
def _average_pool(inputs, attrs):
    x = inputs[0]
    kernel = list(attrs["kernel_shape"])
    spatial, strides, dilations, begin, end = _spatial_geometry(x, attrs, kernel)
    if any(d != 1 for d in dilations):
        raise OnnxConversionError("AveragePool with dilations is not supported")
    pool = _pool_fn("avg", spatial)
    ceil = bool(attrs.get("ceil_mode", 0))
    include_pad = bool(attrs.get("count_include_pad", 0))
    if _pads_fit_torch(begin, end, kernel):
        return pool(x, kernel, strides, begin, ceil_mode=ceil, count_include_pad=include_pad)
    # Uneven padding: pad with zeros, then divide by the share of real pixels in each window
    # unless padding counts towards the average.
    pad = _torch_pad_list(begin, end)
    averaged = _drop_windows_in_end_pad(pool(F.pad(x, pad), kernel, strides, 0, ceil_mode=ceil),
                                        x.shape[2:], begin, strides)
    if include_pad:
        return averaged
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    share = _drop_windows_in_end_pad(pool(F.pad(ones, pad), kernel, strides, 0, ceil_mode=ceil),
                                     x.shape[2:], begin, strides)
    return averaged / share


@_op("MaxPool")
def _max_pool(inputs, attrs):
    x = inputs[0]
    kernel = list(attrs["kernel_shape"])
    spatial, strides, dilations, begin, end = _spatial_geometry(x, attrs, kernel)
    pool = _pool_fn("max", spatial)
    ceil = bool(attrs.get("ceil_mode", 0))
    if _pads_fit_torch(begin, end, kernel):
        return pool(x, kernel, strides, begin, dilation=dilations, ceil_mode=ceil)
    # Padding never wins a max: pad with -inf and pool without further padding.
    padded = F.pad(x, _torch_pad_list(begin, end), value=float("-inf"))
    y = pool(padded, kernel, strides, 0, dilation=dilations, ceil_mode=ceil)
    return _drop_windows_in_end_pad(y, x.shape[2:], begin, strides)


@_op("Pad")
def _pad(inputs, attrs):
    x = inputs[0]
    pads = list(attrs["pads"]) if "pads" in attrs else _ints(inputs[1])
    value = attrs.get("value", 0.0)
    if len(inputs) > 2 and inputs[2] is not None:
        value = float(inputs[2].reshape(-1)[0])
    mode = attrs.get("mode", "constant")
    axes = _axes(attrs, inputs, 3) or list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    begin, end = [0] * x.dim(), [0] * x.dim()
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    # Drop leading dimensions without padding: torch's reflect/replicate pad only the last few.
    first = next((i for i in range(x.dim()) if begin[i] or end[i]), x.dim())
    torch_pads = _torch_pad_list(begin[first:], end[first:])
    if not torch_pads:
        return x
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    torch_mode = {"reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise OnnxConversionError(f"Pad mode '{mode}' is not supported")
    return F.pad(x, torch_pads, mode=torch_mode)


@_op("Concat")
def _concat(inputs, attrs):
    return torch.cat([t for t in inputs if t is not None], dim=attrs["axis"])


@_op("Shape")
def _shape(inputs, attrs):
    x = inputs[0]
    dims = list(x.shape)[attrs.get("start", 0):attrs.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@_op("Gather")
def _gather(inputs, attrs):
    x, indices = inputs
    axis = attrs.get("axis", 0)
    axis = axis + x.dim() if axis < 0 else axis
    flat = indices.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)  # negative indices count from the end
    picked = torch.index_select(x, axis, flat)
    return picked.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:]))


@_op("Unsqueeze")
def _unsqueeze(inputs, attrs):
    x = inputs[0]
    axes = _axes(attrs, inputs, 1)
    rank = x.dim() + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(axis)
    return x


@_op("Squeeze")
def _squeeze(inputs, attrs):
    x = inputs[0]
    axes = _axes(attrs, inputs, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a + x.dim() if a < 0 else a for a in axes))


@_op("Slice")
def _slice(inputs, attrs):
    x = inputs[0]
    if "starts" in attrs:  # opset < 10
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + x.dim() if axis < 0 else axis
        # Python's slice clamping follows the same rules as ONNX, including huge sentinels.
        picked = range(x.shape[axis])[slice(start, end, step)]
        if step > 0:
            x = x[(slice(None),) * axis + (slice(picked.start, picked.stop, step),)]
        else:  # torch has no negative-step slicing
            index = torch.tensor(list(picked), dtype=torch.long, device=x.device)
            x = torch.index_select(x, axis, index)
    return x


def _reduce(fn):
    def run(inputs, attrs):
        x = inputs[0]
        axes = _axes(attrs, inputs, 1)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, dim=tuple(axes), keepdim=keep)

    return run


_op("ReduceMean")(_reduce(torch.mean))
_op("ReduceSum")(_reduce(torch.sum))
_op("ReduceMax")(_reduce(torch.amax))


@_op("Cast")
def _cast(inputs, attrs):
    return inputs[0].to(_torch_dtype(attrs["to"]))


@_op("ConstantOfShape")
def _constant_of_shape(inputs, attrs):
    value = attrs.get("value", torch.zeros(1))
    return torch.full(_ints(inputs[0]), value.reshape(-1)[0].item(), dtype=value.dtype,
                      device=inputs[0].device)


@_op("Expand")
def _expand(inputs, attrs):
    x, shape = inputs[0], _ints(inputs[1])
    # ONNX Expand broadcasts both ways (a 1 in the target keeps x's dimension).
    return x * torch.ones(shape, dtype=x.dtype, device=x.device)


# ----------------------------------------------------------------------------------------------
# the module

_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def _torch_dtype(onnx_type: int) -> torch.dtype:
    if onnx_type not in _DTYPES:
        raise OnnxConversionError(f"ONNX tensor type {onnx.TensorProto.DataType.Name(onnx_type)} is not supported")
    return _DTYPES[onnx_type]


def _to_torch(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array, copy=True))
    # The interpreter computes in float32: half/double weights would clash with float32 inputs.
    return tensor.float() if tensor.is_floating_point() else tensor


def _attributes(node: onnx.NodeProto) -> dict:
    attrs = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            value = _to_torch(numpy_helper.to_array(value))
        elif isinstance(value, bytes):
            value = value.decode()
        attrs[attribute.name] = value
    attrs["_outputs"] = len(node.output)  # lets an op skip optional outputs nobody reads
    return attrs


class _Step:
    __slots__ = ("name", "op_type", "fn", "inputs", "outputs", "attrs", "free_after")

    def __init__(self, node: onnx.NodeProto, attrs: dict):
        self.name = node.name or node.output[0]
        self.op_type = node.op_type
        self.fn = _OPS[node.op_type]
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = attrs
        self.free_after: list[str] = []  # values no later node needs: dropped to save memory

    def run(self, values: list[Value]) -> list[torch.Tensor]:
        result = self.fn(values, self.attrs)
        result = list(result) if isinstance(result, tuple) else [result]
        return result[: len(self.outputs)]


def _topological(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes ordered so that each comes after the producers of its inputs (Kahn's algorithm).

    The ONNX standard asks for sorted nodes, but exporters occasionally break that rule.
    """
    producers = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting = [sum(1 for name in set(n.input) if name and name in producers and name not in available)
               for n in nodes]
    consumers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in set(node.input):
            if name and name in producers and name not in available:
                consumers.setdefault(producers[name], []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        raise OnnxConversionError("the ONNX graph has a cycle or an input that nothing produces")
    return [nodes[i] for i in order]


class OnnxConv(torch.nn.Module):
    """One Conv node of an interpreted graph as a module of its own, so that forward hooks reach
    it like an ``nn.Conv2d`` (the attacks' feature dropout and mid-level feature maps use them)."""

    def __init__(self, step: _Step, source: str):
        super().__init__()
        self.step, self.source = step, source

    def forward(self, *values: Value) -> torch.Tensor:
        return _run(self.step, list(values), self.source)[0]

    def extra_repr(self) -> str:
        return f"node={self.step.name!r}"


def _run(step: _Step, values: list[Value], source: str) -> list[torch.Tensor]:
    try:
        return step.run(values)
    except OnnxConversionError as error:
        raise OnnxConversionError(f"{step.op_type} node '{step.name}' in {source}: {error}") from None
    except (RuntimeError, ValueError, IndexError, TypeError) as error:
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in values]
        raise RuntimeError(
            f"{step.op_type} node '{step.name}' in {source} failed on inputs of shapes {shapes}: {error}"
        ) from error


class OnnxModule(torch.nn.Module):
    """An ONNX graph executed with torch ops: frozen weights, gradients flow to the inputs.

    ``forward`` takes the graph's real inputs (those without an initializer) positionally and
    returns one tensor, or a tuple when the graph has several outputs. Declared input shapes
    are not enforced, so a graph exported with batch size 1 usually runs on any batch.
    """

    def __init__(self, model: onnx.ModelProto, source: str | Path = "<in-memory model>"):
        super().__init__()
        self.source = str(source)
        graph = model.graph
        # Custom-domain operators (e.g. com.microsoft fused ops) are named with their domain.
        unsupported = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                              for n in graph.node
                              if n.op_type not in _OPS or n.domain not in ("", "ai.onnx")})
        if unsupported:
            raise OnnxConversionError(
                f"ONNX operator(s) {', '.join(unsupported)} in {self.source} are not supported by "
                f"fr_shield's ONNX interpreter (supported: {', '.join(supported_ops())})"
            )

        constants: dict[str, torch.Tensor] = {
            init.name: _to_torch(numpy_helper.to_array(init)) for init in graph.initializer
        }
        # Older exporters list initializers among the inputs too (overridable defaults); they
        # are treated as constants here, so the real inputs are the rest.
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = [o.name for o in graph.output]
        self.input_shapes = {
            i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name not in constants
        }

        # Ops give their first output only (Dropout: also its mask). An extra output that some
        # node or the graph reads (MaxPool's indices, training-mode BatchNorm statistics) is
        # refused now rather than failing half-way through a run.
        read = {name for node in graph.node for name in node.input} | set(self.output_names)
        for node in graph.node:
            extra = [name for name in node.output[_OUTPUTS.get(node.op_type, 1):] if name and name in read]
            if extra:
                raise OnnxConversionError(
                    f"{node.op_type} node '{node.name or node.output[0]}' in {self.source}: its extra "
                    f"output(s) {extra} are used, which fr_shield's ONNX interpreter does not support"
                )

        steps: list[_Step] = []
        try:
            ordered = _topological(graph.node, set(constants) | set(self.input_names))
        except OnnxConversionError as error:
            raise OnnxConversionError(f"{error} ({self.source})") from None
        for node in ordered:
            step = _Step(node, _attributes(node))
            needed = [name for name in step.inputs if name]
            if all(name in constants for name in needed):
                # Constant folding: this node's result is the same on every call.
                with torch.no_grad():
                    outputs = self._run_step(step, [constants.get(n) if n else None for n in step.inputs])
                constants.update({name: out for name, out in zip(step.outputs, outputs) if name})
            else:
                steps.append(step)

        # Keep only the constants still read by a live node or returned by the graph.
        used = {name for step in steps for name in step.inputs if name} | set(self.output_names)
        self._buffer_of: dict[str, str] = {}
        for index, name in enumerate(n for n in constants if n in used):
            buffer = f"c{index}_" + "".join(ch if ch.isalnum() else "_" for ch in name)[:60]
            self.register_buffer(buffer, constants[name])
            self._buffer_of[name] = buffer

        # Free each intermediate value after its last reader.
        last_reader: dict[str, int] = {}
        for i, step in enumerate(steps):
            for name in step.inputs:
                if name and name not in self._buffer_of:
                    last_reader[name] = i
        for name, i in last_reader.items():
            if name not in self.output_names:
                steps[i].free_after.append(name)
        self._steps = steps
        # Conv nodes run through modules of their own (in graph order), which hooks can reach.
        self.convolutions = torch.nn.ModuleList(OnnxConv(step, self.source) for step in steps if step.op_type == "Conv")
        convs = iter(range(len(self.convolutions)))
        self._conv_of_step = [next(convs) if step.op_type == "Conv" else None for step in steps]
        # A residual Add sums a shortcut and a branch: of its two computed inputs, the branch is
        # the one computed later. Where a Conv node computes it, that module ends the branch.
        step_of = {name: i for i, step in enumerate(steps) for name in step.outputs if name}
        self._branch_end_convs = []
        for step in steps:
            sources = [step_of.get(name) for name in step.inputs]
            if step.op_type == "Add" and len(sources) == 2 and None not in sources:
                conv = self._conv_of_step[max(sources)]
                if conv is not None and conv not in self._branch_end_convs:
                    self._branch_end_convs.append(conv)

    @classmethod
    def from_file(cls, path: str | Path) -> "OnnxModule":
        path = Path(path)
        try:
            model = onnx.load(str(path))
        except Exception as error:  # a truncated or non-ONNX file
            raise OnnxConversionError(f"cannot read ONNX model {path}: {error}") from error
        return cls(model, source=path)

    def residual_branch_ends(self) -> list[OnnxConv]:
        """The Conv modules whose outputs are residual branches, added to a shortcut."""
        return [self.convolutions[i] for i in self._branch_end_convs]

    def _run_step(self, step: _Step, values: list[Value]) -> list[torch.Tensor]:
        return _run(step, values, self.source)

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.source} takes {len(self.input_names)} input(s) "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))
        for name, buffer in self._buffer_of.items():
            env[name] = getattr(self, buffer)
        for step, conv in zip(self._steps, self._conv_of_step):
            values = [env[name] if name else None for name in step.inputs]
            outputs = [self.convolutions[conv](*values)] if conv is not None else self._run_step(step, values)
            for name, value in zip(step.outputs, outputs):
                if name:
                    env[name] = value
            for name in step.free_after:
                env.pop(name, None)
        outputs = tuple(env[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"source={self.source!r}, nodes={len(self._steps)}, inputs={self.input_names}"
