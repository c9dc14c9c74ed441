"""Skip gradient (issue 13, ingredient 2b): less of the gradient through residual branches.

Wu et al. ("Skip Connections Matter: On the Transferability of Adversarial Examples Generated
with ResNets", ICLR 2020) found that adversarial examples transfer better when the backward pass
of a residual network favours its skip connections: each residual branch's gradient is scaled
by gamma < 1 while the forward pass is unchanged. The low-level features the shortcuts carry are
shared by more networks than what the deep branches compute.

A surrogate says which of its modules end a residual branch (the module whose output is added to
a shortcut) through ``residual_branch_ends()``: the dlib ResNet's blocks, FaceNet's
Inception-ResNet blocks and the interpreted ONNX graphs (``fr_shield.models.onnx_graph``).
"""

from __future__ import annotations

import torch
from torch import nn


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return values.view_as(values)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        return gradient * ctx.factor, None


def scale_gradient(values: torch.Tensor, factor: float) -> torch.Tensor:
    """``values`` unchanged forward; their gradient multiplied by ``factor`` backward."""
    if factor < 0:
        raise ValueError(f"a gradient scale is >= 0, got {factor}")
    return _ScaleGradient.apply(values, factor)


def residual_branch_ends(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` whose output is a residual branch, added to a shortcut."""
    return [end for module in model.modules() if hasattr(module, "residual_branch_ends")
            for end in module.residual_branch_ends()]


def skip_gradient_hooks(model: nn.Module, gamma: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward hooks that scale the gradient of each of ``model``'s residual branches by ``gamma``
    (the caller removes them)."""
    return [end.register_forward_hook(lambda module, inputs, output: scale_gradient(output, gamma))
            for end in residual_branch_ends(model)]
