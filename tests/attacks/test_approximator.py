"""The BPDA approximator: a [0,1]-valued auto-encoder with gradients, and how close it gets to g."""

import pytest
import torch
from torch import nn

from preempt.attacks.approximator import DenseAutoEncoder, approximation_fidelity
from preempt.parts import Identity


def randomized(model: DenseAutoEncoder) -> DenseAutoEncoder:
    """The AE with a last layer far from its identity start, so the shifts reach toward ±1."""
    torch.manual_seed(0)
    nn.init.normal_(model.shift.weight, std=3.0)
    nn.init.normal_(model.shift.bias, std=3.0)
    return model


@pytest.mark.parametrize(("channels", "height", "width"), [(1, 16, 16), (3, 7, 13), (1, 1, 5), (3, 32, 32)])
def test_output_keeps_the_shape_and_stays_in_the_unit_range(channels: int, height: int, width: int) -> None:
    model = DenseAutoEncoder(channels)
    x = torch.rand(4, channels, height, width)
    x[0] = 0.0
    x[1] = 1.0
    assert torch.equal(model(x), x)  # untrained: the identity, the naive BPDA approximation
    out = randomized(model)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().max() > 0.5


def test_gradients_reach_the_input_of_a_frozen_approximator(digits_batch) -> None:
    model = randomized(DenseAutoEncoder(1, layers=3, growth=4)).eval().requires_grad_(False)
    x = digits_batch[0][:8].clone().requires_grad_(True)
    model(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.9  # black and white pixels included: nothing is squashed flat


def test_fidelity_of_g_itself_is_perfect(digits_batch) -> None:
    fidelity = approximation_fidelity(nn.Identity(), Identity(), digits_batch[0])
    assert fidelity == pytest.approx({"normalized_l2": 0.0, "ssim": 1.0})
