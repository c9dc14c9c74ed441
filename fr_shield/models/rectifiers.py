"""The models' rectifiers, with a switchable linear backward pass (LinBP; issue 13, ingredient 2b).

Guo, Li and Chen ("Backpropagating Linearly Improves Transferability of Adversarial Examples",
NeurIPS 2020) compute the attack's gradient as if the later rectifiers of the surrogate were the
identity, the forward pass unchanged: the gate of a ReLU, which input units it lets through, is
what differs most between networks, and a gradient that ignores it follows what they share.

The model ports (``dlib_resnet``, ``facenet``) and the interpreted ONNX / TFLite graphs
(``fr_shield.models.onnx_graph``) call ``relu`` / ``prelu`` / ``leaky_relu`` from here. Outside
``linear_backward`` they are the plain functions. Inside ``linear_backward(start, total)`` the
rectifiers of one forward pass are counted in the order they run, and those from index
``start * total`` on pass their gradient through unchanged (``total``: how many one pass runs,
from ``count_rectifiers``; ``start`` 0: every rectifier, 1: none).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


class _Pass:
    """The rectifiers of one forward pass: how many ran so far, and from which one on they are linear."""

    def __init__(self, first_linear: float):
        self.first_linear = first_linear
        self.count = 0

    def next_is_linear(self) -> bool:
        index = self.count
        self.count += 1
        return index >= self.first_linear


_ACTIVE: contextvars.ContextVar[_Pass | None] = contextvars.ContextVar("linear_backward", default=None)


@contextmanager
def _running(state: _Pass) -> Iterator[_Pass]:
    """The rectifiers called inside count themselves in ``state``."""
    token = _ACTIVE.set(state)
    try:
        yield state
    finally:
        _ACTIVE.reset(token)


def linear_backward(start: float, total: int):
    """A context: forward passes inside run linear backward from rectifier ``start * total`` of ``total`` on."""
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"linear backward starts at a fraction of the rectifiers in [0, 1], got {start}")
    return _running(_Pass(start * total))


@torch.no_grad()
def count_rectifiers(model: torch.nn.Module, example: torch.Tensor) -> int:
    """How many of this module's rectifiers one forward pass of ``model`` on ``example`` runs."""
    with _running(_Pass(float("inf"))) as state:
        model(example)
    return state.count


def _gated(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` = rectifier(``x``) forward; inside a linear backward pass from here on, the identity's gradient."""
    state = _ACTIVE.get()
    if state is not None and state.next_is_linear() and torch.is_grad_enabled():
        return x + (y - x).detach()
    return y


def relu(x: torch.Tensor) -> torch.Tensor:
    return _gated(x, F.relu(x))


def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """PReLU with a slope that broadcasts onto ``x`` (e.g. [C, 1, 1] onto [N, C, H, W]). A slope
    per channel (or one for all) runs as ``F.prelu`` with it flattened: the same values, and on a
    channels-last batch 2.6x faster forward and backward than the elementwise form, which serves
    any other broadcast."""
    shape = tuple(slope.shape)
    while shape and shape[0] == 1 and len(shape) > x.dim() - 1:
        shape = shape[1:]
    if x.dim() >= 2 and (slope.numel() == 1 or shape == (x.shape[1],) + (1,) * (x.dim() - 2)):
        return _gated(x, F.prelu(x, slope.reshape(-1)))
    return _gated(x, torch.where(x >= 0, x, x * slope))


def leaky_relu(x: torch.Tensor, slope: float) -> torch.Tensor:
    return _gated(x, F.leaky_relu(x, slope))
