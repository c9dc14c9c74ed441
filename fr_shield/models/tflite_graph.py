"""Read a float TensorFlow Lite model into an ONNX graph that fr_shield's interpreter runs.

A ``.tflite`` file is a flatbuffer (parsed with the ``tflite`` package, its generated schema
classes) holding one graph of NHWC tensors and operators. ``to_onnx`` rewrites that graph as an
equivalent NCHW ``onnx.ModelProto`` -- convolution kernels transposed, per-channel constants
reshaped to ``[C, 1, 1]``, a transpose back to NHWC before any flattening reshape -- so the one
ONNX interpreter (``onnx_graph.OnnxModule``) runs it: frozen weights, gradients to the input,
convolutions reachable by hooks. Writing a second interpreter for TFLite would duplicate it.

TFLite converters spell PReLU as ``relu(x) + c * (x - |x|)`` (five ops, ``c`` = slope / 2); that
pattern becomes one ``PRelu`` node, so the only ``Add`` nodes left are real residual sums (the
skip-gradient switch looks for those).

Only the operators of float face-recognition exports are handled; any other operator, a
quantised tensor, or a layout this rewrite cannot follow is refused by name when the model is
read, never half-way through a run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

from fr_shield.models.onnx_graph import OnnxConversionError

_OPERATOR_NAMES = {value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
_TYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.INT32: np.int32,
          tflite.TensorType.INT64: np.int64}
_BINARY = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul"}
_UNARY = {"RELU": "Relu", "ABS": "Abs", "LOGISTIC": "Sigmoid", "TANH": "Tanh"}
SUPPORTED = sorted(["CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", *_BINARY, *_UNARY])
_PADDING = {tflite.Padding.SAME: "SAME_UPPER", tflite.Padding.VALID: "VALID"}


def _options(op, cls):
    table = op.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


class _Reader:
    """One pass over the TFLite graph, emitting ONNX nodes and initializers."""

    def __init__(self, data: bytes, source: str):
        self.source = source
        try:
            self.model = tflite.Model.GetRootAs(data, 0)
            self.graph = self.model.Subgraphs(0)
        except Exception as error:  # not a flatbuffer, or truncated
            raise OnnxConversionError(f"cannot read TFLite model {source}: {error}") from error
        if self.model.SubgraphsLength() != 1:
            raise OnnxConversionError(f"{source}: {self.model.SubgraphsLength()} subgraphs; only one is supported")
        self.data = data
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[int, str] = {}  # tensor index -> ONNX value name

    # -- tensors -------------------------------------------------------------------------------

    def tensor(self, index: int):
        return self.graph.Tensors(index)

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).ShapeAsNumpy()]

    def constant(self, index: int) -> np.ndarray | None:
        """The tensor's stored value, or None when it is computed at run time."""
        tensor = self.tensor(index)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
            raw = np.frombuffer(self.data, np.uint8, count=buffer.Size(), offset=buffer.Offset())
        elif buffer.DataLength():
            raw = buffer.DataAsNumpy()
        else:
            return None
        if tensor.Type() not in _TYPES or tensor.Quantization() is not None and tensor.Quantization().ScaleLength():
            raise OnnxConversionError(f"{self.source}: tensor {tensor.Name().decode()} is quantised or of an "
                                      "unsupported type; only float models are supported")
        return raw.view(_TYPES[tensor.Type()]).reshape(self.shape(index))

    def value(self, index: int) -> str:
        return self.names.setdefault(index, f"t{index}_{self.tensor(index).Name().decode()}")

    def add_constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))

    def activation(self, function: int, value: str) -> str:
        """Apply a fused activation to ``value``; returns the name holding the result."""
        if function == tflite.ActivationFunctionType.NONE:
            return value
        if function == tflite.ActivationFunctionType.RELU:
            self.node("Relu", [value + ":pre"], value)
        elif function == tflite.ActivationFunctionType.RELU6:
            low = self.add_constant(value + ":lo", np.array(0, np.float32))
            high = self.add_constant(value + ":hi", np.array(6, np.float32))
            self.node("Clip", [value + ":pre", low, high], value)
        else:
            raise OnnxConversionError(f"{self.source}: fused activation {function} is not supported")
        return value + ":pre"

    # -- operators -----------------------------------------------------------------------------

    def convolution(self, op, depthwise: bool) -> None:
        inputs = list(op.InputsAsNumpy())
        weight = self.constant(inputs[1])
        if weight is None:
            raise OnnxConversionError(f"{self.source}: a convolution with computed weights is not supported")
        options = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        if depthwise:  # [1, kh, kw, C * multiplier] -> [C * multiplier, 1, kh, kw], one group per input channel
            weight = weight.transpose(3, 0, 1, 2)
            groups = self.shape(inputs[0])[3]
        else:  # [O, kh, kw, I] -> [O, I, kh, kw]
            weight = weight.transpose(0, 3, 1, 2)
            groups = 1
        output = self.value(op.Outputs(0))
        names = [self.value(inputs[0]), self.add_constant(output + ":w", weight)]
        if len(inputs) > 2 and inputs[2] >= 0:
            names.append(self.add_constant(output + ":b", self.constant(inputs[2])))
        target = self.activation(options.FusedActivationFunction(), output)
        self.node("Conv", names, target, group=groups, kernel_shape=list(weight.shape[2:]),
                  strides=[options.StrideH(), options.StrideW()],
                  dilations=[options.DilationHFactor(), options.DilationWFactor()],
                  auto_pad=_PADDING[options.Padding()])

    def operand(self, index: int, other: int) -> str:
        """A binary op's input: computed values as they are; constants laid out to broadcast
        onto the other (NCHW) operand."""
        array = self.constant(index)
        if array is None:
            return self.value(index)
        if len(self.shape(other)) == 4 and array.ndim >= 1 and array.size > 1:
            if array.ndim == 1:
                array = array.reshape(-1, 1, 1)
            elif array.ndim == 4:
                array = array.transpose(0, 3, 1, 2)
            else:
                raise OnnxConversionError(f"{self.source}: cannot lay out a constant of shape {array.shape} "
                                          "against a 4-d tensor")
        return self.add_constant(f"{self.value(index)}:c", array.astype(np.float32))

    def binary(self, op, kind: str) -> None:
        a, b = (int(i) for i in op.InputsAsNumpy())
        options_cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions}[kind]
        function = _options(op, options_cls).FusedActivationFunction() if op.BuiltinOptions() else 0
        output = self.value(op.Outputs(0))
        target = self.activation(function, output)
        self.node(_BINARY[kind], [self.operand(a, b), self.operand(b, a)], target)

    def reshape(self, op) -> None:
        source = int(op.Inputs(0))
        in_shape, out_shape = self.shape(source), self.shape(op.Outputs(0))
        if len(out_shape) == 4:
            raise OnnxConversionError(f"{self.source}: a reshape to a 4-d tensor is not supported")
        value = self.value(source)
        if len(in_shape) == 4:  # flatten in TFLite's NHWC order
            self.node("Transpose", [value], value + ":nhwc", perm=[0, 2, 3, 1])
            value += ":nhwc"
        # The export's batch size is baked into the target shape; the batch is free here.
        shape = self.add_constant(self.value(op.Outputs(0)) + ":shape", np.array([-1, *out_shape[1:]], np.int64))
        self.node("Reshape", [value, shape], self.value(op.Outputs(0)))

    def prelu(self, relu_index: int, ops: list, consumers: dict[int, list[int]], kinds: list[str]) -> list[int] | None:
        """The five ops of ``relu(x) + c * (x - |x|)`` starting at RELU ``relu_index``, emitted as
        one PRelu (slope 2c); None when the pattern does not match."""
        x = int(ops[relu_index].Inputs(0))

        def consumer(tensor: int, kind: str, *required: int) -> int | None:
            for j in consumers.get(tensor, []):
                if kinds[j] == kind and all(r in ops[j].InputsAsNumpy() for r in required):
                    return j
            return None

        absolute = consumer(x, "ABS")
        if absolute is None:
            return None
        sub = consumer(x, "SUB", ops[absolute].Outputs(0))
        if sub is None:
            return None
        mul = consumer(ops[sub].Outputs(0), "MUL")
        if mul is None:
            return None
        slopes = [self.constant(int(i)) for i in ops[mul].InputsAsNumpy()]
        slope = next((s for s in slopes if s is not None), None)
        add = consumer(ops[mul].Outputs(0), "ADD", ops[relu_index].Outputs(0))
        if slope is None or add is None or slope.ndim > 1:
            return None
        output = self.value(ops[add].Outputs(0))
        slope_name = self.add_constant(output + ":slope", (2.0 * slope).reshape(-1, 1, 1).astype(np.float32))
        self.node("PRelu", [self.value(x), slope_name], output)
        return [relu_index, absolute, sub, mul, add]

    def read(self) -> onnx.ModelProto:
        codes = [self.model.OperatorCodes(i) for i in range(self.model.OperatorCodesLength())]
        ops = [self.graph.Operators(i) for i in range(self.graph.OperatorsLength())]
        kinds = []
        for op in ops:
            code = codes[op.OpcodeIndex()]
            kinds.append(_OPERATOR_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
        unsupported = sorted(set(kinds) - set(SUPPORTED))
        if unsupported:
            raise OnnxConversionError(f"TFLite operator(s) {', '.join(unsupported)} in {self.source} are not "
                                      f"supported (supported: {', '.join(SUPPORTED)})")
        consumers: dict[int, list[int]] = {}
        for j, op in enumerate(ops):
            for i in op.InputsAsNumpy():
                consumers.setdefault(int(i), []).append(j)
        done: set[int] = set()
        for j, (op, kind) in enumerate(zip(ops, kinds)):
            if j in done:
                continue
            if kind == "RELU":
                fused = self.prelu(j, ops, consumers, kinds)
                if fused:
                    done.update(fused)
                    continue
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                self.convolution(op, depthwise=kind == "DEPTHWISE_CONV_2D")
            elif kind in _BINARY:
                self.binary(op, kind)
            elif kind in _UNARY:
                self.node(_UNARY[kind], [self.value(int(op.Inputs(0)))], self.value(op.Outputs(0)))
            else:
                self.reshape(op)

        inputs, outputs = self.graph.InputsAsNumpy(), self.graph.OutputsAsNumpy()

        def declared(index: int) -> onnx.ValueInfoProto:
            shape = self.shape(index)
            if len(shape) == 4:
                shape = [shape[0], shape[3], shape[1], shape[2]]
            return helper.make_tensor_value_info(self.value(index), TensorProto.FLOAT, ["batch", *shape[1:]])

        graph = helper.make_graph(self.nodes, Path(self.source).stem, [declared(int(i)) for i in inputs],
                                  [declared(int(i)) for i in outputs], self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def to_onnx(path: str | Path) -> onnx.ModelProto:
    """The float TFLite model at ``path`` as an NCHW ONNX model (input ``[B, C, H, W]``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OnnxConversionError(f"cannot read TFLite model {path}: {error}") from error
    return _Reader(data, str(path)).read()
