"""A reader of dlib's DNN serialisation (the ``.dat`` files written by ``dlib::serialize(net)``).

Written from the format's observable structure, without dlib: it returns plain NumPy arrays
and layer settings, so a torch module can be rebuilt from them (see ``dlib_resnet``).

The stream, as dlib writes a network ``loss<layer_n<...<layer_1<input>>>>``:

* the loss layer: a version integer, then its details (a tag string and its own fields);
* one version integer per wrapper, outermost first, because every wrapper writes its version
  before recursing into the network it wraps. Layers write 2, tags and skips write 1, and the
  layer that sits directly on the input writes 3, which therefore ends this prefix;
* the input layer's details;
* then every layer from the input upwards: its details (tag string, parameters, settings)
  followed by a fixed trailer (three flags and three cached tensors, empty in a saved model);
  the layer on the input adds one integer to its trailer (the sample expansion factor).

Tags and skips (``tag1``, ``skip1``) carry no data beyond their version, so the wiring of
residual branches is not in the file: the network definition supplies it.

Primitive encodings:

* integer: one byte whose low nibble is the byte count and whose high bit is the sign, then
  that many little-endian magnitude bytes;
* float (settings such as means and learning-rate multipliers): integer mantissa, then integer
  exponent, value = mantissa * 2**exponent;
* string: integer length, then the bytes;
* flag: one ASCII byte, ``'1'`` or ``'0'``;
* tensor: integer version (2), four integer dimensions (samples, channels, rows, columns), then
  the float32 little-endian data;
* alias tensor (a view into a layer's parameter tensor): integer version (1), four dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Wrapper version integers that may precede the input layer (see the module docstring).
_LAYER_VERSION, _TAG_OR_SKIP_VERSION, _ON_INPUT_VERSION = 2, 1, 3


@dataclass
class DlibLayer:
    """One computational layer: its tag string, parameter arrays and integer settings."""

    tag: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The tag without its format version suffix: ``con_4`` -> ``con``, ``relu_`` -> ``relu``."""
        return self.tag.rstrip("_0123456789")


@dataclass
class DlibNet:
    """A parsed network: the loss and input layers, then the other layers from the input up."""

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]
    wrapper_versions: list[int]

    def kinds(self) -> list[str]:
        return [layer.kind for layer in self.layers]


class DlibFormatError(ValueError):
    """The bytes do not follow dlib's serialisation as this reader understands it."""


class _Reader:
    """Sequential reader of dlib's primitive encodings over an in-memory buffer."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {count} more)")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def flag(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad flag {byte!r} at byte {self.pos - 1}")
        return byte == b"1"

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos}, expected 2")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        data = np.frombuffer(self._take(4 * count), dtype="<f4")
        return data.reshape(shape).astype(np.float32)  # a copy, detached from the file buffer

    def alias(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise DlibFormatError(f"alias tensor version {version} at byte {self.pos}, expected 1")
        return tuple(self.integer() for _ in range(4))


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a flat parameter tensor into consecutive views of the given shapes."""
    flat = params.reshape(-1)
    pieces, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        pieces.append(flat[start:start + size].reshape(shape))
        start += size
    if start != flat.size:
        raise DlibFormatError(f"parameter tensor holds {flat.size} values, its views use {start}")
    return pieces


def _read_con(r: _Reader, layer: DlibLayer) -> None:
    params = r.tensor()
    s = layer.settings
    for key in ("filters", "rows", "cols", "stride_y", "stride_x", "pad_y", "pad_x"):
        s[key] = r.integer()
    weight_shape, bias_shape = r.alias(), r.alias()
    for key in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        s[key] = r.real()
    # All filter weights come first in the parameter tensor, then the biases.
    weight, bias = _split(params, weight_shape, bias_shape)
    layer.arrays["weight"] = weight  # (filters, in channels, rows, cols), as torch's conv2d
    layer.arrays["bias"] = bias.reshape(-1)


def _read_affine(r: _Reader, layer: DlibLayer) -> None:
    params = r.tensor()
    gamma_shape, beta_shape = r.alias(), r.alias()
    layer.settings["mode"] = r.integer()  # 0: one gamma/beta per channel, 1: per element
    gamma, beta = _split(params, gamma_shape, beta_shape)
    layer.arrays["gamma"], layer.arrays["beta"] = gamma, beta


def _read_pool(r: _Reader, layer: DlibLayer) -> None:
    # rows = cols = 0 means "the whole feature map" (avg_pool_everything).
    for key in ("rows", "cols", "stride_y", "stride_x", "pad_y", "pad_x"):
        layer.settings[key] = r.integer()


def _read_fc(r: _Reader, layer: DlibLayer) -> None:
    s = layer.settings
    s["outputs"], s["inputs"] = r.integer(), r.integer()
    params = r.tensor()
    weight_shape, bias_shape = r.alias(), r.alias()
    s["bias_mode"] = r.integer()  # 0: with bias, 1: without
    for key in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        s[key] = r.real()
    weight, bias = _split(params, weight_shape, bias_shape)
    # dlib stores (inputs, outputs) and computes x @ W; torch's Linear wants (outputs, inputs).
    layer.arrays["weight"] = weight.reshape(s["inputs"], s["outputs"]).T.copy()
    if bias.size:
        layer.arrays["bias"] = bias.reshape(-1)


def _read_nothing(r: _Reader, layer: DlibLayer) -> None:
    """relu_ and add_prev_ have no fields (add_prev's tag number is part of the network type)."""


_LAYER_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": _read_nothing,
    "add_prev_": _read_nothing,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
}


def _read_loss(r: _Reader) -> DlibLayer:
    version = r.integer()
    if version != 1:
        raise DlibFormatError(f"loss wrapper version {version}, expected 1")
    layer = DlibLayer(r.string())
    if layer.tag == "loss_metric_2":
        layer.settings["margin"] = r.real()
        layer.settings["distance_threshold"] = r.real()
    elif layer.tag != "loss_metric_":
        raise DlibFormatError(f"unsupported loss layer '{layer.tag}'")
    return layer


def _read_input(r: _Reader) -> DlibLayer:
    layer = DlibLayer(r.string())
    if layer.tag not in ("input_rgb_image_sized", "input_rgb_image"):
        raise DlibFormatError(f"unsupported input layer '{layer.tag}'")
    layer.settings["mean_rgb"] = tuple(r.real() for _ in range(3))
    if layer.tag == "input_rgb_image_sized":
        layer.settings["rows"], layer.settings["cols"] = r.integer(), r.integer()
    return layer


def _read_trailer(r: _Reader) -> None:
    """Training state after every layer: three flags, then gradient/output caches (unused)."""
    for _ in range(3):
        r.flag()
    for _ in range(3):
        r.tensor()


def parse(data: bytes) -> DlibNet:
    """Parse a whole serialised dlib network (loss layer outermost) from ``data``."""
    r = _Reader(data)
    loss = _read_loss(r)
    versions = []
    while True:
        version = r.integer()
        versions.append(version)
        if version == _ON_INPUT_VERSION:
            break
        if version not in (_LAYER_VERSION, _TAG_OR_SKIP_VERSION):
            raise DlibFormatError(f"unexpected wrapper version {version} at byte {r.pos}")
    net_input = _read_input(r)  # the input layer has no trailer of its own
    layers = []
    while not r.at_end():
        tag = r.string()
        if tag not in _LAYER_READERS:
            raise DlibFormatError(f"unsupported layer '{tag}' at byte {r.pos}")
        layer = DlibLayer(tag)
        _LAYER_READERS[tag](r, layer)
        _read_trailer(r)
        if not layers:
            # The layer on the input (wrapper version 3) also records how many tensor samples
            # one input object becomes (1 for images).
            layer.settings["sample_expansion_factor"] = r.integer()
        layers.append(layer)
    layer_count = sum(v != _TAG_OR_SKIP_VERSION for v in versions)
    if layer_count != len(layers):
        raise DlibFormatError(f"{layer_count} layer wrappers but {len(layers)} layers")
    return DlibNet(loss, net_input, layers, versions)


def load(path: str | Path) -> DlibNet:
    return parse(Path(path).read_bytes())
