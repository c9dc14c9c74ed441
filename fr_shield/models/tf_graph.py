"""Read a frozen TensorFlow GraphDef without TensorFlow.

The ``tensorboard`` package ships the GraphDef protobuf classes, which is all a frozen graph
needs: its weights are ``Const`` nodes holding ``TensorProto`` values. This module decodes
those into numpy arrays and exposes the few node facts (op, inputs, attributes) that a
hand-written port checks its architecture against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fr_shield.core.errors import WeightError

# TensorFlow DataType enum values -> numpy dtypes (only the ones frozen graphs use for weights
# and shapes; see tensorflow/core/framework/types.proto).
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}


def tensor_to_array(tensor) -> np.ndarray:
    """A ``TensorProto`` as a numpy array of its dtype and shape."""
    if tensor.dtype not in _DTYPES:
        raise WeightError(f"unsupported TensorFlow dtype enum {tensor.dtype} in graph constant")
    dtype = np.dtype(_DTYPES[tensor.dtype])
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if tensor.tensor_content:
        # Packed little-endian bytes, the usual form for anything larger than a few values.
        return np.frombuffer(tensor.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if dtype == np.float32:
        values = tensor.float_val
    elif dtype == np.float64:
        values = tensor.double_val
    elif dtype == np.int64:
        values = tensor.int64_val
    elif dtype == np.bool_:
        values = tensor.bool_val
    elif dtype == np.float16:
        # half_val stores the raw 16-bit patterns in int32 slots.
        values = np.asarray(tensor.half_val, np.uint16).view(np.float16)
    else:
        values = tensor.int_val
    values = np.asarray(values, dtype=dtype)
    if values.size == count:
        return values.reshape(shape)
    if values.size == 0:
        return np.zeros(shape, dtype)
    # TensorFlow repeats the last stored value to fill the shape (how "all ones" is stored).
    filled = np.full(count, values[-1], dtype=dtype)
    filled[: values.size] = values
    return filled.reshape(shape)


@dataclass
class Node:
    """The facts of one graph node a port needs: op, inputs and plain attributes."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict = field(default_factory=dict)


def _attr_value(value):
    kind = value.WhichOneof("value")
    if kind == "list":
        return list(value.list.i) or [s.decode() for s in value.list.s] or list(value.list.f)
    if kind == "s":
        return value.s.decode()
    if kind in ("i", "f", "b", "type"):
        return getattr(value, kind)
    return None  # tensors and shapes are read through ``constants``


@dataclass
class FrozenGraph:
    """A frozen graph: ``constants`` (name -> array) and ``nodes`` (name -> Node), in file order."""

    constants: dict[str, np.ndarray]
    nodes: dict[str, Node]

    def ops(self, op: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.op == op]


def load(path: str | Path) -> FrozenGraph:
    """Parse a frozen ``GraphDef`` (.pb) file into constants and node facts."""
    try:
        from tensorboard.compat.proto import graph_pb2
    except ImportError as error:  # pragma: no cover - tensorboard is a dependency
        raise WeightError("reading a TensorFlow graph needs the 'tensorboard' package") from error
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(Path(path).read_bytes())
    except Exception as error:  # protobuf raises its own DecodeError
        raise WeightError(f"{path} is not a readable TensorFlow GraphDef: {error}") from error
    constants: dict[str, np.ndarray] = {}
    nodes: dict[str, Node] = {}
    for node in graph.node:
        attrs = {k: _attr_value(v) for k, v in node.attr.items() if k != "value"}
        nodes[node.name] = Node(node.name, node.op, list(node.input), attrs)
        if node.op == "Const":
            constants[node.name] = tensor_to_array(node.attr["value"].tensor)
    return FrozenGraph(constants, nodes)
