"""DiffPure: the solver against torchsde and in closed form, randomness, and purification with the
project's trained digits score model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import accuracy
from torch import Tensor, nn

from preempt.receiver_defenses.diffpure import (
    END_TIME,
    DiffPure,
    reverse_times,
    solve_reverse_sde,
    solve_with_torchsde,
)
from preempt.score_models.base import NoisePredictor
from preempt.score_models.vp import BETA_MAX, BETA_MIN, continuous_alpha_bar


class ZeroNoise(NoisePredictor):
    """ε̂ = 0: the score vanishes and only the linear part of the drift is left."""

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape, self.name = image_shape, "zero"

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)


class LinearNoise(NoisePredictor):
    """A fixed random 1×1 convolution conditioned on t: cheap, differentiable, and not trivially zero."""

    def __init__(self, channels: int = 1, size: int = 8) -> None:
        super().__init__()
        self.image_shape, self.name = (channels, size, size), "linear"
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mix(x) * (1 + t)[:, None, None, None]


def no_noise(start: float, end: float, like: Tensor) -> Tensor:
    return torch.zeros_like(like)


def test_the_time_grid_takes_dt_steps_and_lands_on_the_end() -> None:
    times = reverse_times(0.1, 1e-3)
    assert len(times) == 101 and times[0] == 0.1 and times[-1] == END_TIME
    assert all(a > b for a, b in itertools.pairwise(times))
    assert times[-2] - times[-1] == pytest.approx(1e-3 - END_TIME)


def test_with_zero_score_and_zero_noise_the_solver_rescales_by_the_schedule() -> None:
    """Then dx/d(−t) = ½β(t)x, whose exact solution multiplies x_t by √(ᾱ(end)/ᾱ(t*)); Euler with small steps
    gets it to O(dt), and the product of the Euler factors exactly."""
    x_t = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    times = reverse_times(0.3, 1e-4)
    out = solve_reverse_sde(ZeroNoise((1, 8, 8)), x_t, times, increments=no_noise)
    t_star, end = torch.tensor(0.3, dtype=torch.float64), torch.tensor(END_TIME, dtype=torch.float64)
    exact = (continuous_alpha_bar(end) / continuous_alpha_bar(t_star)).sqrt()
    assert torch.allclose(out, exact * x_t, rtol=1e-3)
    euler = math.prod(1 + (a - b) * 0.5 * (BETA_MIN + a * (BETA_MAX - BETA_MIN)) for a, b in itertools.pairwise(times))
    assert torch.allclose(out, euler * x_t, rtol=1e-10)


def test_our_loop_is_torchsdes_euler_maruyama_on_the_same_brownian_path() -> None:
    import torchsde

    torch.manual_seed(0)
    model = LinearNoise().double().requires_grad_(False)
    x_t = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t_star, dt = 0.05, 1e-3
    start, end = 1 - t_star, 1 - END_TIME
    brownian = torchsde.BrownianInterval(t0=start, t1=end, size=(3, 64), dtype=torch.float64, entropy=7)
    theirs = solve_with_torchsde(model, x_t, t_star, dt, adjoint=False, brownian=brownian)

    def same_path(t_from: float, t_to: float, like: Tensor) -> Tensor:
        return brownian(1 - t_from, 1 - t_to).view_as(like)

    ours = solve_reverse_sde(model, x_t, reverse_times(t_star, dt), increments=same_path)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_backprop_and_adjoint_gradients_agree() -> None:
    """The adjoint's gradient is exact up to its own discretization: close to backprop through the loop."""
    import torchsde

    torch.manual_seed(0)
    model = LinearNoise().double().requires_grad_(False)
    x_t = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    start, end = 1 - 0.02, 1 - END_TIME
    gradients = []
    for adjoint in (False, True):
        brownian = torchsde.BrownianInterval(t0=start, t1=end, size=(2, 64), dtype=torch.float64, entropy=3)
        out = solve_with_torchsde(model, x_t, 0.02, 1e-3, adjoint=adjoint, brownian=brownian)
        (gradient,) = torch.autograd.grad(out.square().sum(), x_t)
        gradients.append(gradient)
    assert (gradients[0] - gradients[1]).norm() < 5e-3 * gradients[0].norm()


def test_checkpointed_steps_give_the_gradient_of_the_plain_unrolled_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    import preempt.receiver_defenses.diffpure as diffpure

    torch.manual_seed(0)
    purify = DiffPure(t_star=0.02, score_model=LinearNoise().requires_grad_(False))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    gradients = []
    for plain in (False, True):
        if plain:
            monkeypatch.setattr(diffpure, "checkpoint", lambda function, *args, use_reentrant: function(*args))
        torch.manual_seed(1)
        gradients.append(torch.autograd.grad(purify.transform(x).square().sum(), x)[0])
    assert torch.allclose(gradients[0], gradients[1], atol=1e-6) and gradients[0].abs().sum() > 0


def test_two_calls_differ_and_the_same_seed_repeats() -> None:
    purify = DiffPure(t_star=0.02, score_model=LinearNoise().requires_grad_(False))
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(1)
    first, second = purify.transform(x), purify.transform(x)
    torch.manual_seed(1)
    again = purify.transform(x)
    assert not torch.equal(first, second) and torch.equal(first, again)
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1


def test_float64_images_come_back_float64_through_a_float32_score_model() -> None:
    purify = DiffPure(t_star=0.01, score_model=LinearNoise().requires_grad_(False))
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    out = purify.transform(x)
    assert out.dtype == torch.float64 and torch.autograd.grad(out.sum(), x)[0].abs().sum() > 0


def test_the_sender_side_call_is_detached_and_leaves_its_input_untouched() -> None:
    purify = DiffPure(t_star=0.01, score_model=LinearNoise().requires_grad_(False))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    before = x.detach().clone()
    out = purify(x, torch.tensor([0, 1]))
    assert out.grad_fn is None and torch.equal(x.detach(), before)


def test_other_sizes_are_resized_to_the_score_models_and_back() -> None:
    purify = DiffPure(t_star=0.01, score_model=ZeroNoise((1, 8, 8)))
    x = torch.rand(2, 1, 12, 12)
    assert purify.transform(x).shape == x.shape


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"t_star": 0.1234}, "multiple of 1/1000"),
        ({"gradients": "adjoint"}, "solver=torchsde"),
        ({"t_star": 0}, "greater than 0"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(settings: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiffPure(**settings)


def test_a_score_model_of_other_channels_is_refused_naming_the_options() -> None:
    purify = DiffPure(score_model=ZeroNoise((3, 32, 32)))
    with pytest.raises(ValueError, match="score_model=digits"):
        purify.check_fits((1, 16, 16))


def test_gradients_none_makes_it_non_differentiable_and_others_follow_the_input() -> None:
    assert DiffPure(gradients="none").differentiable is False
    purify = DiffPure(t_star=0.01, score_model=LinearNoise().requires_grad_(False))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    (gradient,) = torch.autograd.grad(purify.transform(x).sum(), x)
    assert gradient.abs().sum() > 0


@pytest.mark.slow
def test_the_trained_score_model_keeps_clean_digits_and_forgets_the_input_at_t_one(
    digits_score_model: nn.Module, digits_models: dict, digits_batch: tuple[Tensor, Tensor]
) -> None:
    x, y = digits_batch
    victim = digits_models["digits_lenet_at"]
    with torch.no_grad():
        torch.manual_seed(0)
        purified = DiffPure(t_star=0.1, score_model=digits_score_model).transform(x)
        assert accuracy(victim, purified, y) >= accuracy(victim, x, y) - 0.06

    def change(t_star: float, step_size: float) -> float:
        """How far the output moves when the input is swapped for other digits, with the same noise."""
        outputs = []
        for images in (x, x.flip(0)):
            torch.manual_seed(0)
            purify = DiffPure(t_star=t_star, step_size=step_size, score_model=digits_score_model)
            outputs.append(purify.transform(images))
        return (outputs[0] - outputs[1]).abs().max().item()

    # At t* = 1 only √ᾱ ≈ 0.006 of the input is left in x_t; at 0.1 the output follows the input.
    with torch.no_grad():
        assert change(1.0, 0.01) < 0.1 < 0.5 < change(0.1, 0.01)
