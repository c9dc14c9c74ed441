"""Shift-tolerant LPIPS (ST-LPIPS): a learned perceptual distance between two images.

LPIPS (Zhang et al., CVPR 2018) compares two images through the activations of an ImageNet CNN:
at each of five depths it unit-normalises the feature vector of every pixel, squares the
difference between the two images, weights the channels with learned non-negative weights,
averages over space and sums over depths. ST-LPIPS (Ghildyal & Liu, ECCV 2022) keeps that recipe
but retrains the backbone so that a shift of a pixel or two (which people do not notice) no
longer reads as a large change. What makes it shift tolerant, and what this module must
reproduce exactly for the published weights to mean anything:

* **Blur before every subsampling** (anti-aliasing, "blur pooling"). Every stride-2 step of the
  classic network is split into a stride-1 operation followed by a [1, 2, 1] x [1, 2, 1] binomial
  blur and a stride-2 subsample. AlexNet's first conv (stride 4 in the classic net) runs at
  stride 1 here, then blur-subsamples once; each 3x3/stride-2 max-pool becomes a stride-1
  max-pool, then a blur-subsample. VGG's 2x2/stride-2 max-pools become 2x2/stride-1 max-pools
  followed by a blur-subsample.
* **Generous reflect padding** before each blur: 2 pixels on every side (twice the usual
  "same" padding of a 3-tap filter), so that the border of the feature map carries no
  zero-padding cue about absolute position.
* In AlexNet the first blur sits *between* conv1 and its ReLU (the first tapped feature map is
  relu(blur(conv1(x)))); elsewhere the blur follows the max-pool.

The remaining steps are plain LPIPS v0.1: inputs in [-1, 1] are shifted and scaled per channel
by fixed constants (stored in the weight file), feature vectors are divided by their channel
L2 norm (+1e-10), and the per-depth linear heads are 1x1 convolutions without bias.

Weights: the ``vST0.0`` files of the ``stlpips-pytorch`` wheel (BSD-2), fetched and checked by
:mod:`fr_shield.core.weights`. Their keys follow the reference package's module layout
(``net.slice<k>.<index>.weight`` for the convs, ``lin<k>.model.1.weight`` for the heads,
``scaling_layer.{shift,scale}``, plus the fixed blur kernels ``...filt``). We map the convs onto
this module's layers in order, check every shape, and refuse a file with missing or unused
tensors (the reference loads with ``strict=False``, which would silently leave random weights).

This is *not* the AlexNet-LPIPS that LowKey used (that backbone cannot be obtained offline); the
two metrics differ in scale, so a perceptual weight tuned for one does not carry over.

Example::

    >>> from fr_shield.core.perceptual import stlpips
    >>> metric = stlpips("alex")                      # doctest: +SKIP
    >>> metric(x, x_protected)                        # doctest: +SKIP
    tensor([0.0123, 0.0311])
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fr_shield.core import weights

__all__ = ["STLPIPS", "stlpips", "BACKBONES", "MIN_SIZE"]

# The smallest image side the metric accepts. Below it the deepest reflect padding runs out of
# pixels (the networks themselves still run at 24 px for AlexNet, 20 px for VGG16); 32 px
# leaves a margin and is the documented contract.
MIN_SIZE = 32

# Per-backbone layer plans. Each stage ends at a tapped activation; ops are
#   ("conv", out_channels, kernel, padding)  stride-1 convolution
#   ("relu",)
#   ("maxpool", kernel)                       stride-1 max-pool, no padding
#   ("blurdown",)                             reflect-pad 2, binomial 3x3 blur, stride 2
_ALEX = [
    [("conv", 64, 11, 2), ("blurdown",), ("relu",)],
    [("maxpool", 3), ("blurdown",), ("conv", 192, 5, 2), ("relu",)],
    [("maxpool", 3), ("blurdown",), ("conv", 384, 3, 1), ("relu",)],
    [("conv", 256, 3, 1), ("relu",)],
    [("conv", 256, 3, 1), ("relu",)],
]


def _vgg_block(width: int, convs: int, pool_first: bool) -> list[tuple]:
    ops: list[tuple] = [("maxpool", 2), ("blurdown",)] if pool_first else []
    for _ in range(convs):
        ops += [("conv", width, 3, 1), ("relu",)]
    return ops


_VGG16 = [
    _vgg_block(64, 2, pool_first=False),
    _vgg_block(128, 2, pool_first=True),
    _vgg_block(256, 3, pool_first=True),
    _vgg_block(512, 3, pool_first=True),
    _vgg_block(512, 3, pool_first=True),
]

BACKBONES: dict[str, tuple[list[list[tuple]], str]] = {
    "alex": (_ALEX, "stlpips_alex"),
    "vgg": (_VGG16, "stlpips_vgg"),
}


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 subsampling: reflect-pad 2 px, [1,2,1]x[1,2,1]/16 blur per channel, keep every 2nd."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        # A constant of the architecture, not a learned weight: kept out of the state dict.
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(x, self.kernel, stride=2, groups=x.shape[1])


def _build_stages(plan: list[list[tuple]]) -> tuple[nn.ModuleList, list[int]]:
    """Turn a layer plan into one ``nn.Sequential`` per tapped depth; also return their widths."""
    stages, widths, channels = nn.ModuleList(), [], 3
    for stage_plan in plan:
        layers: list[nn.Module] = []
        for op in stage_plan:
            if op[0] == "conv":
                _, width, kernel, padding = op
                layers.append(nn.Conv2d(channels, width, kernel, stride=1, padding=padding))
                channels = width
            elif op[0] == "relu":
                layers.append(nn.ReLU())
            elif op[0] == "maxpool":
                layers.append(nn.MaxPool2d(op[1], stride=1))
            elif op[0] == "blurdown":
                layers.append(BlurDownsample(channels))
            else:  # pragma: no cover - plans are module constants
                raise ValueError(f"unknown op {op}")
        stages.append(nn.Sequential(*layers))
        widths.append(channels)
    return stages, widths


def _unit_normalise(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each pixel's feature vector by its L2 norm over channels (LPIPS' ``normalize_tensor``).

    ``vector_norm`` rather than the reference's ``sqrt(sum(x**2))``: same value (to float
    rounding), but its backward pass is defined (zero) where a whole feature vector is exactly
    zero (every ReLU of a column dead), where the naive form's gradient is NaN (inf * 0); one NaN
    would poison a whole attack step. (Not observed on real photos: the guard is cheap.)
    """
    return features / (torch.linalg.vector_norm(features, dim=1, keepdim=True) + eps)


def _ordinal_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS distance between two batches of RGB images in [0, 1].

    Args:
        backbone: ``"alex"`` (AlexNet, the cheaper one, LowKey's choice) or ``"vgg"`` (VGG16).
        cache_dir: folder holding the weight files; default :func:`fr_shield.core.weights.default_cache_dir`.

    ``forward(x, y)`` takes two float tensors of the same shape ``[B, 3, H, W]`` with
    ``H, W >= 32`` and returns the ``[B]`` distances (0 for identical images, typically below 1).
    It is differentiable with respect to both inputs. The weights are frozen (``requires_grad``
    is off) and the module has no train-time behaviour (no dropout, no batch norm), so
    ``.train()`` changes nothing. Move it with ``.to(device)`` like any module.

    Raises:
        fr_shield.core.errors.WeightError: the weight file is missing or corrupt (the message names
            the file and the fetch command).
    """

    def __init__(self, backbone: str = "alex", cache_dir: str | Path | None = None) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown ST-LPIPS backbone '{backbone}'; choose one of {sorted(BACKBONES)}")
        plan, weight_name = BACKBONES[backbone]
        self.backbone = backbone
        self.stages, widths = _build_stages(plan)
        self.heads = nn.ParameterList(nn.Parameter(torch.zeros(w)) for w in widths)
        # Input normalisation of LPIPS v0.1 (on [-1, 1] inputs); values come from the weight file.
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))

        file = weights.path(weight_name, cache_dir)  # raises WeightError with the fix
        self._load_reference_state(torch.load(file, map_location="cpu", weights_only=True), file)
        self.requires_grad_(False)
        self.eval()

    def _load_reference_state(self, state: dict[str, torch.Tensor], file: Path) -> None:
        """Copy the reference package's tensors into this module, checking that every one is used."""
        unused = set(state)

        def take(key: str) -> torch.Tensor:
            if key not in state:
                raise ValueError(f"{file}: tensor '{key}' is missing; not an ST-LPIPS {self.backbone} file")
            unused.discard(key)
            return state[key]

        self.shift.copy_(take("scaling_layer.shift"))
        self.scale.copy_(take("scaling_layer.scale"))

        convs = [m for m in self.stages.modules() if isinstance(m, nn.Conv2d)]
        conv_weights = sorted((k for k in state if k.startswith("net.") and k.endswith(".weight")),
                              key=_ordinal_key)
        if len(conv_weights) != len(convs):
            raise ValueError(f"{file}: {len(conv_weights)} conv weights, expected {len(convs)}")
        for conv, key in zip(convs, conv_weights):
            weight, bias = take(key), take(key[: -len("weight")] + "bias")
            if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise ValueError(f"{file}: '{key}' has shape {tuple(weight.shape)}, "
                                 f"expected {tuple(conv.weight.shape)}")
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(bias)

        # The stored blur kernels must be the binomial ones this module hard-codes.
        blurs = [m for m in self.stages.modules() if isinstance(m, BlurDownsample)]
        blur_keys = sorted((k for k in state if k.endswith(".filt")), key=_ordinal_key)
        if len(blur_keys) != len(blurs):
            raise ValueError(f"{file}: {len(blur_keys)} blur kernels, expected {len(blurs)}")
        for blur, key in zip(blurs, blur_keys):
            if not torch.allclose(take(key), blur.kernel):
                raise ValueError(f"{file}: blur kernel '{key}' is not the [1,2,1] binomial")

        for depth, head in enumerate(self.heads):
            weight = take(f"lin{depth}.model.1.weight")  # [1, C, 1, 1] 1x1 conv, no bias
            if weight.numel() != head.numel():
                raise ValueError(f"{file}: 'lin{depth}' has {weight.numel()} channels, expected {head.numel()}")
            head.data.copy_(weight.flatten())

        if unused:
            raise ValueError(f"{file}: unexpected tensors {sorted(unused)}")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised activations at the five depths for images ``x`` in [0, 1].

        Useful to compute a fixed reference image's features once and reuse them
        (see :meth:`distance_from_features`).
        """
        self._check(x)
        h = (2.0 * x - 1.0 - self.shift) / self.scale  # [0,1] -> [-1,1] -> LPIPS scaling
        taps = []
        for stage in self.stages:
            h = stage(h)
            taps.append(_unit_normalise(h))
        return taps

    def distance_from_features(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """``[B]`` distances from two outputs of :meth:`features` (batch sizes must broadcast)."""
        total = 0.0
        for head, a, b in zip(self.heads, fx, fy):
            weighted = torch.einsum("bchw,c->bhw", (a - b) ** 2, head)  # the learned 1x1 head
            total = total + weighted.mean(dim=(1, 2))  # spatial average
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"ST-LPIPS needs two images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        # Two separate passes rather than one over torch.cat([x, y]): when only one input needs a
        # gradient (the usual attack: a fixed clean image), the other builds no autograd graph and
        # the backward pass does half the work.
        return self.distance_from_features(self.features(x), self.features(y))

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ST-LPIPS expects RGB batches [B, 3, H, W], got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"ST-LPIPS needs images of at least {MIN_SIZE}x{MIN_SIZE} px, got {tuple(x.shape[-2:])}")
        if not x.is_floating_point():
            raise ValueError(f"ST-LPIPS expects float images in [0, 1], got dtype {x.dtype}")


@functools.lru_cache(maxsize=None)
def stlpips(backbone: str = "alex", cache_dir: str | Path | None = None) -> STLPIPS:
    """A shared, lazily built :class:`STLPIPS` per (backbone, cache_dir).

    The instance is shared by every caller: moving it to another device moves it for all of them.
    """
    return STLPIPS(backbone, cache_dir)
