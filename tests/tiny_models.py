"""Tiny random face-recognition networks for tests where behaviour, not weights, matters."""

from __future__ import annotations

import torch
from torch import nn

from fr_shield.core.align import scaled_template
from fr_shield.models.spec import ModelSpec


def tiny_spec(name: str = "tiny", size: int = 32) -> ModelSpec:
    return ModelSpec(name, (size, size), scaled_template(size), 16, "cosine", 0.5)


class TinyFR(nn.Module):
    """conv -> relu -> pool -> linear: a differentiable stand-in with a real spec."""

    def __init__(self, seed: int = 0, size: int = 32, name: str = "tiny"):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 16)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        self.spec = tiny_spec(name, size)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x * 2 - 1)), 4)
        return self.head(features.flatten(1)) + 1.0  # offset: embeddings far from zero, like real ones


class ChannelMean(nn.Module):
    """f(crop) = the mean of each colour channel: a model whose objective is computable by hand."""

    def __init__(self, size: int = 32):
        super().__init__()
        self.spec = tiny_spec("channel_mean", size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class TinyPerceptual(nn.Module):
    """A perceptual distance with ST-LPIPS's interface (features, distance_from_features, forward)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(self.conv(x)), x]

    def distance_from_features(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        return sum((a - b).pow(2).mean(dim=(1, 2, 3)) for a, b in zip(fx, fy))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance_from_features(self.features(x), self.features(y))
