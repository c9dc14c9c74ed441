"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a torch module.

The network is rebuilt from dlib's own ``.dat`` file (parsed by ``dlib_format``), so dlib itself
is needed only to check the port. Its layout, from the input up, is

* stem: 7x7 conv (32, stride 2, no padding), affine, ReLU, 3x3 max pool (stride 2);
* 14 residual blocks of two 3x3 convs, each conv followed by an affine (batch norm frozen into
  a per-channel scale and shift), with a ReLU between them and after the sum: 3 blocks of 32
  channels, then 4 of 64, 3 of 128, 3 of 256 and 1 more of 256; the first block of each width
  (and the last block) downsamples: its first conv has stride 2 and no padding, and its
  shortcut is a 2x2 average pool of stride 2;
* global average pool, then a 128 x 256 linear layer without bias.

Two dlib behaviours matter for exactness: a downsampling block's two branches can differ in
size (e.g. 3x3 from the conv and 4x4 from the pool, and fewer channels on the shortcut), and
dlib adds them by zero-padding the smaller one at the end of each dimension; and the input is
``(pixel - mean) / 256`` on 0..255 RGB.

The wiring of the residual branches is not stored in the file (dlib's tag and skip layers carry
no data); ``DlibResNet.from_dlib`` recognises each block by its layer sequence instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112
from fr_shield.models import dlib_format, rectifiers
from fr_shield.models.spec import ModelSpec

MEAN_RGB = (122.782, 117.001, 104.298)

# Where dlib's 150 px chip (dlib.get_face_chip with the 5-point shape predictor, padding 0.25)
# puts the five ArcFace-style landmarks that YuNet finds: the ArcFace 112 template scaled by
# 1.497 and shifted by (-9.1, -33.6) px. Fitted on 400 LFW photos by mapping YuNet's landmarks
# into dlib's chip frame and minimising the RMS displacement, over the chip, between dlib's warp
# and the similarity warp onto this template (6.5 px per face on average: dlib aligns on eye
# corners and the nose base, ArcFace on eye centres, nose tip and mouth corners, so no single
# template reproduces every chip). The same as scaled_template(150, 1.1178, (-0.27, -24.77)).
TEMPLATE_150 = (ARCFACE_112 * 1.497 + np.array([-9.1, -33.6], np.float32)).astype(np.float32)

SPEC = ModelSpec(
    name="dlib_resnet",
    input_size=(150, 150),
    template=TEMPLATE_150,
    embedding_size=128,
    similarity="euclidean",
    threshold=-0.6,
    channel_order="RGB",
    value_range="0..255",
    mean=MEAN_RGB,
    std=(256.0, 256.0, 256.0),
    licence="CC0",
    source="face-recognition-models==0.3.0 sdist: "
    "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    weights=("dlib_resnet",),
)


def _zero_pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger extent of each dimension, missing values being 0."""
    channels = max(a.shape[1], b.shape[1])
    height = max(a.shape[2], b.shape[2])
    width = max(a.shape[3], b.shape[3])

    def grow(t: torch.Tensor) -> torch.Tensor:
        # F.pad lists (left, right) pairs from the last dimension backwards.
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return grow(a) + grow(b)


class Affine(nn.Module):
    """Per-channel ``gamma * x + beta`` (dlib's inference form of batch normalisation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


class ResidualBlock(nn.Module):
    """conv-affine-ReLU-conv-affine, plus the input (average-pooled when downsampling), then ReLU."""

    def __init__(self, conv1: nn.Conv2d, affine1: Affine, conv2: nn.Conv2d, affine2: Affine,
                 shortcut_pool: nn.AvgPool2d | None):
        super().__init__()
        self.conv1, self.affine1, self.conv2, self.affine2 = conv1, affine1, conv2, affine2
        self.shortcut_pool = shortcut_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(rectifiers.relu(self.affine1(self.conv1(x)))))
        shortcut = x if self.shortcut_pool is None else self.shortcut_pool(x)
        return rectifiers.relu(_zero_pad_add(y, shortcut))

    def residual_branch_ends(self) -> list[nn.Module]:
        """The module whose output is the residual branch, added to the shortcut."""
        return [self.affine2]


class DlibResNet(nn.Module):
    """Takes RGB in [0, 1], [B, 3, 150, 150]; returns dlib's 128-d descriptors, [B, 128]."""

    def __init__(self, stem: nn.Sequential, blocks: list[ResidualBlock], fc: nn.Linear,
                 mean_rgb: tuple[float, float, float] = MEAN_RGB):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.fc = fc
        self.register_buffer("mean", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - self.mean) / 256.0  # dlib's input_rgb_image: (pixel - mean) / 256
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))  # avg_pool_everything, then fc_no_bias

    @classmethod
    def from_dlib(cls, net: dlib_format.DlibNet) -> "DlibResNet":
        """Rebuild the network from a parsed ``.dat``, checking the layer sequence as it goes."""
        layers = net.layers
        cursor = 0

        def take(kind: str) -> dlib_format.DlibLayer:
            nonlocal cursor
            if cursor >= len(layers) or layers[cursor].kind != kind:
                found = layers[cursor].tag if cursor < len(layers) else "end of network"
                raise dlib_format.DlibFormatError(f"layer {cursor}: expected {kind}, found {found}")
            cursor += 1
            return layers[cursor - 1]

        def peek() -> str:
            return layers[cursor].kind if cursor < len(layers) else ""

        def conv() -> nn.Conv2d:
            layer = take("con")
            s, weight = layer.settings, layer.arrays["weight"]
            module = nn.Conv2d(weight.shape[1], weight.shape[0], (s["rows"], s["cols"]),
                               stride=(s["stride_y"], s["stride_x"]), padding=(s["pad_y"], s["pad_x"]))
            module.weight.data.copy_(torch.from_numpy(weight))
            module.bias.data.copy_(torch.from_numpy(layer.arrays["bias"]))
            return module

        def affine() -> Affine:
            layer = take("affine")
            if layer.settings["mode"] != 0:
                raise dlib_format.DlibFormatError("only per-channel affine layers are supported")
            module = Affine(layer.arrays["gamma"].size)
            module.gamma.data.copy_(torch.from_numpy(layer.arrays["gamma"].reshape(-1)))
            module.beta.data.copy_(torch.from_numpy(layer.arrays["beta"].reshape(-1)))
            return module

        def pool(kind: str) -> nn.Module:
            s = take(kind).settings
            if s["pad_y"] or s["pad_x"]:
                # dlib's padded pools differ from torch's at the border; this net has none.
                raise dlib_format.DlibFormatError("padded pooling layers are not supported")
            pool_type = nn.MaxPool2d if kind == "max_pool" else nn.AvgPool2d
            return pool_type((s["rows"], s["cols"]), stride=(s["stride_y"], s["stride_x"]))

        stem_conv, stem_affine = conv(), affine()
        take("relu")
        stem = nn.Sequential(stem_conv, stem_affine, nn.ReLU(), pool("max_pool"))
        blocks = []
        while peek() == "con":
            conv1, affine1 = conv(), affine()
            take("relu")
            conv2, affine2 = conv(), affine()
            shortcut = pool("avg_pool") if peek() == "avg_pool" else None
            take("add_prev")
            take("relu")
            blocks.append(ResidualBlock(conv1, affine1, conv2, affine2, shortcut))
        everything = take("avg_pool").settings
        if everything["rows"] or everything["cols"]:
            raise dlib_format.DlibFormatError("expected a global average pool before the fc layer")
        fc_layer = take("fc")
        if "bias" in fc_layer.arrays:
            raise dlib_format.DlibFormatError("expected an fc layer without bias")
        fc = nn.Linear(fc_layer.settings["inputs"], fc_layer.settings["outputs"], bias=False)
        fc.weight.data.copy_(torch.from_numpy(fc_layer.arrays["weight"]))
        if cursor != len(layers):
            raise dlib_format.DlibFormatError(f"{len(layers) - cursor} layers left after the fc layer")
        return cls(stem, blocks, fc, tuple(net.input.settings["mean_rgb"]))


def build(cache_dir: str | Path | None = None) -> nn.Module:
    """dlib's ResNet with its pretrained weights, from the cached ``.dat`` (see ``fr_shield.core.weights``)."""
    return DlibResNet.from_dlib(dlib_format.load(weights.path("dlib_resnet", cache_dir)))
