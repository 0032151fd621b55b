import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from preempt.threat import (
    NORMS,
    distance,
    project,
    quantize_within_budget,
    radius,
    random_uniform,
    steepest_direction,
    validate_budget,
)


@pytest.mark.parametrize("norm", NORMS)
def test_random_uniform_stays_in_ball(norm: str) -> None:
    x = torch.rand(64, 3, 8, 8)
    noise = random_uniform(x, 0.3, norm)
    assert noise.shape == x.shape
    assert (distance(x + noise, x, norm) <= 0.3 + 1e-6).all()
    assert distance(x + noise, x, norm).mean() > 0.1  # fills the ball, not just its center


@pytest.mark.parametrize("norm", NORMS)
def test_project_lands_in_ball_and_box(norm: str) -> None:
    center = torch.rand(16, 1, 5, 5)
    far = center + 5 * torch.randn_like(center)
    projected = project(far, center, 0.25, norm)
    assert (distance(projected, center, norm) <= 0.25 + 1e-6).all()
    assert projected.min() >= 0 and projected.max() <= 1
    inside = project(center + 0.01, center, 0.25, norm).clamp(0, 1)
    assert torch.allclose(inside, (center + 0.01).clamp(0, 1))


def test_steepest_direction_has_unit_norm() -> None:
    grad = torch.randn(4, 3, 6, 6)
    assert torch.equal(steepest_direction(grad, "Linf"), grad.sign())
    l2 = steepest_direction(grad, "L2").flatten(1).norm(dim=1)
    assert torch.allclose(l2, torch.ones(4))


@pytest.mark.parametrize(
    ("eps", "norm", "message"),
    [
        (8, "Linf", "8/255"),
        (0, "Linf", "positive"),
        (-0.1, "L2", "positive"),
        (0.1, "L1", "not supported"),
        (1.5, "normalized_L2", "fraction of each image's L2 norm"),
        (1.5, "RMS", "root mean square"),
    ],
)
def test_bad_budgets_name_the_fix(eps: float, norm: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_budget(eps, norm)


def test_normalized_l2_is_relative_to_each_images_own_norm() -> None:
    """Guo et al.'s dissimilarity ‖x′−x‖₂ / ‖x‖₂: a bright image may move further than a dark one."""
    dark, bright = torch.full((1, 1, 4, 4), 0.1), torch.full((1, 1, 4, 4), 0.7)
    center = torch.cat([dark, bright])
    assert torch.allclose(radius(0.05, "normalized_L2", center), 0.05 * center.flatten(1).norm(dim=1))
    far = center + torch.randn_like(center)
    projected = project(far, center, 0.05, "normalized_L2")
    l2 = distance(projected, center, "L2")
    assert torch.allclose(l2, 0.05 * center.flatten(1).norm(dim=1), rtol=1e-4)
    assert l2[1] > 6 * l2[0]
    assert torch.allclose(distance(projected, center, "normalized_L2"), torch.full((2,), 0.05), rtol=1e-4)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps_levels", [8, 7.65, 1.3, 20])
def test_quantize_within_budget_lands_on_the_8bit_grid_inside_the_budget(norm: str, eps_levels: float) -> None:
    """What protect writes: 8-bit values within eps of an 8-bit original, whatever the float protection was."""
    generator = torch.Generator().manual_seed(int(eps_levels * 100))
    original = torch.randint(0, 256, (32, 3, 6, 6), generator=generator).float() / 255
    eps = eps_levels / 255 * {"Linf": 1, "L2": 6, "normalized_L2": 0.05, "RMS": 1}[norm]
    protected = project(original + torch.randn(original.shape, generator=generator), original, eps, norm)
    quantized = quantize_within_budget(protected, original, eps, norm)
    assert torch.equal(quantized * 255, torch.round(quantized * 255))
    assert quantized.min() >= 0 and quantized.max() <= 1
    assert (distance(quantized, original, norm) <= eps * (1 + 1e-5)).all()
    assert (quantized - protected).abs().max() <= 1 / 255 + 1e-6  # at most one level from the float protection


def test_quantize_within_budget_is_plain_rounding_for_a_whole_number_of_levels() -> None:
    original = torch.randint(0, 256, (16, 3, 8, 8)).float() / 255
    protected = project(original + torch.rand_like(original) - 0.5, original, 8 / 255, "Linf")
    assert torch.equal(quantize_within_budget(protected, original, 8 / 255, "Linf"), torch.round(protected * 255) / 255)
    assert torch.equal(quantize_within_budget(protected, original, None, "Linf"), torch.round(protected * 255) / 255)


def rms(delta: torch.Tensor) -> torch.Tensor:
    """The per-value root mean square of each image's perturbation, written out here as the reference."""
    return delta.flatten(1).square().mean(dim=1).sqrt()


def test_rms_distance_is_the_per_value_root_mean_square_whatever_the_image() -> None:
    center = torch.cat([torch.full((1, 3, 4, 4), 0.1), torch.full((1, 3, 4, 4), 0.7)])
    uniform = center + 0.05  # every value moved by 0.05: RMS 0.05 for both, however bright
    assert torch.allclose(distance(uniform, center, "RMS"), torch.full((2,), 0.05))
    one_value = center.clone()
    one_value[:, 0, 0, 0] += 0.2  # one value of 48 moved by 0.2: 0.2/√48
    assert torch.allclose(distance(one_value, center, "RMS"), torch.full((2,), 0.2 / 48**0.5))
    assert radius(0.05, "RMS", center) == pytest.approx(0.05 * 48**0.5)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    eps=st.floats(1e-3, 0.04),
    seed=st.integers(0, 2**31 - 1),
)
def test_rms_projection_lands_on_the_ball_and_leaves_inside_points_alone(shape, eps, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    center = 0.25 + 0.5 * torch.rand(shape, generator=generator)  # away from the box: clipping cannot bind
    direction = torch.randn(shape, generator=generator)
    far = center + direction * (2 * eps / rms(direction).clamp_min(1e-12)).view(-1, 1, 1, 1)
    projected = project(far, center, eps, "RMS")
    assert torch.allclose(rms(projected - center), torch.full((shape[0],), eps), rtol=1e-4)
    assert torch.allclose(projected - center, (far - center) / 2, atol=1e-6)  # straight back towards the center
    near = center + direction * (eps / 2 / rms(direction).clamp_min(1e-12)).view(-1, 1, 1, 1)
    assert torch.allclose(project(near, center, eps, "RMS"), near)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 8), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    eps=st.floats(1e-3, 1.0),
)
def test_rms_random_start_is_inside_the_ball(shape, eps) -> None:
    noise = random_uniform(torch.rand(shape), eps, "RMS")
    assert (rms(noise) <= eps * (1 + 1e-5)).all()


def test_rms_random_start_fills_the_ball() -> None:
    noise = random_uniform(torch.rand(256, 3, 8, 8), 0.05, "RMS")
    assert rms(noise).max() > 0.95 * 0.05  # uniform in the ball: most of its volume is near the boundary


def test_quantize_within_budget_keeps_an_rms_budget() -> None:
    generator = torch.Generator().manual_seed(0)
    original = torch.randint(0, 256, (64, 3, 8, 8), generator=generator).float() / 255
    for eps in (0.05, 2 / 255, 0.5 / 255):  # the authors' budget, and budgets a rounding alone can exceed
        protected = project(original + torch.randn(original.shape, generator=generator), original, eps, "RMS")
        quantized = quantize_within_budget(protected, original, eps, "RMS")
        assert torch.equal(quantized * 255, torch.round(quantized * 255))
        assert (rms(quantized - original) <= eps * (1 + 1e-5)).all()
