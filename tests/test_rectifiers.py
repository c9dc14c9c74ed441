"""Linear backward (LinBP): the rectifiers' forward pass unchanged, their gradient switchable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from tiny_models import TinyFR

from fr_shield.models import rectifiers
from fr_shield.models.onnx_graph import OnnxModule


class TwoStageFR(TinyFR):
    """TinyFR with two rectifiers of this module: one early, one late."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled stem, centred: about half of it is below zero, where the late gate closes."""
        pooled = F.adaptive_avg_pool2d(rectifiers.relu(self.conv(x * 2 - 1)), 4).flatten(1)
        return pooled - pooled.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(rectifiers.relu(self.features(x))) + 1.0


def _gradient(function, x):
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(function(x).sum(), x)
    return gradient


@pytest.mark.parametrize("shape", [(3, 1, 1), (1, 3, 1, 1), (1,), (), (1, 1, 5), (3, 5, 1)])
def test_prelu_matches_the_elementwise_form_for_every_slope_broadcast(shape):
    """Per-channel and single slopes take F.prelu, other broadcasts the elementwise form: same values
    and gradient either way, on a channels-last batch too."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=generator).contiguous(memory_format=torch.channels_last)
    slope = torch.rand(shape, generator=generator) * 0.5

    def elementwise(t):
        return torch.where(t >= 0, t, t * slope)

    assert torch.equal(rectifiers.prelu(x, slope), elementwise(x))
    assert torch.allclose(_gradient(lambda t: rectifiers.prelu(t, slope) * t, x), _gradient(lambda t: elementwise(t) * t, x))


def test_rectifiers_are_the_plain_functions_outside_linear_backward():
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    slope = torch.full((3, 1, 1), 0.25)
    cases = [(rectifiers.relu, F.relu), (lambda t: rectifiers.prelu(t, slope), lambda t: F.prelu(t, slope.flatten())),
             (lambda t: rectifiers.leaky_relu(t, 0.1), lambda t: F.leaky_relu(t, 0.1))]
    for ours, theirs in cases:
        assert torch.equal(ours(x), theirs(x))
        assert torch.allclose(_gradient(ours, x), _gradient(theirs, x))


def test_linear_backward_passes_the_gradient_from_its_start_on():
    """Four rectifiers of negative inputs (plain gradient 0): from start 0.5 of 4 on, gradient 1."""
    x = -torch.rand(4, 3, generator=torch.Generator().manual_seed(1)) - 0.1

    def four(t):
        return torch.stack([rectifiers.relu(t[i]) for i in range(4)])

    with rectifiers.linear_backward(0.5, total=4):  # one context, one forward pass: it counts
        values = four(x)
    with rectifiers.linear_backward(0.5, total=4):
        gradient = _gradient(four, x)
    assert torch.equal(values, torch.zeros_like(x))  # the forward pass is the ReLU's
    assert torch.equal(gradient, torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 2))
    with rectifiers.linear_backward(0.0, total=4):
        assert torch.equal(_gradient(four, x), torch.ones_like(x))
    assert torch.equal(_gradient(four, x), torch.zeros_like(x))  # off again outside
    with pytest.raises(ValueError, match="fraction"):
        with rectifiers.linear_backward(1.5, total=4):
            pass


def test_count_rectifiers_in_a_port_and_an_interpreted_graph():
    assert rectifiers.count_rectifiers(TwoStageFR(0), torch.rand(1, 3, 32, 32)) == 2
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("PRelu", ["a", "slope"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [numpy_helper.from_array(np.full((2, 1, 1), 0.2, np.float32), "slope")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert rectifiers.count_rectifiers(OnnxModule(model), torch.rand(1, 2, 3, 3)) == 3


def test_linear_backward_switch_changes_the_gradient_not_the_embedding():
    """attack.linear_backward: the surrogate's embedding is unchanged; its input gradient is that of
    the network with the late rectifier removed; a seeded switch that changes the photo."""
    from test_attacks import FACE, photo

    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack
    from fr_shield.core.errors import ConfigError

    model, image = TwoStageFR(0), photo()
    common = ["attack.steps=4", "attack.alpha=0"]
    plain = build_attack(compose_attack("ours", common), surrogates=[model])
    linear = build_attack(compose_attack("ours_linbp", common), surrogates=[model])
    crops = torch.rand(1, 3, 32, 32, requires_grad=True)

    def gradient(objective):
        embedding, _ = objective.surrogate(model, crops)
        return embedding, torch.autograd.grad(embedding.sum(), crops)[0]

    (out_plain, grad_plain), (out_linear, grad_linear) = gradient(plain.objective), gradient(linear.objective)
    assert torch.equal(out_plain, out_linear)
    (expected,) = torch.autograd.grad(model.head(model.features(crops)).sum(), crops)  # the late gate removed
    assert torch.allclose(grad_linear, expected, atol=1e-5) and not torch.allclose(grad_plain, expected, atol=1e-3)
    one, two = linear(image, [[FACE]]).protected, linear(image, [[FACE]]).protected
    assert torch.equal(one, two) and not torch.equal(one, plain(image, [[FACE]]).protected)
    with pytest.raises(ConfigError, match="linear_backward"):
        compose_attack("ours", ["attack.linear_backward=1.5"])


@pytest.mark.real
@pytest.mark.parametrize("name", ["sface", "dlib_resnet", "facenet_casia", "mobilefacenet_fp", "mobilefacenet_expo"])
def test_every_shipped_model_runs_its_rectifiers_here(name):
    """Linear backward reaches every shipped surrogate: each calls this module's rectifiers."""
    from fr_shield.models import create

    model = create(name)
    size = model.spec.input_size
    assert rectifiers.count_rectifiers(model, torch.rand(1, 3, *size)) > 0
