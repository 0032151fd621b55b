"""The contract every input transform keeps: shape, dtype, range, randomness and gradients as declared, and a
detached call. The transforms are every model-free receiver_defense option in conf/, built from its file with its
settings (an option may be another setting of one class: `random_resize_pad_qiu2020`), and the identity."""

from __future__ import annotations

import pytest
import torch
from conftest import TRANSFORMS as OPTIONS
from conftest import option_node
from hydra.utils import instantiate

from preempt.parts import Identity, InputTransform, NonDifferentiableTransformError
from preempt.receiver_defenses import ReceiverDefended

IDENTITY = "identity"


def build(option: str) -> InputTransform:
    """The option's transform as a run builds it (a fresh instance per call), or the identity."""
    return Identity() if option == IDENTITY else instantiate(option_node("receiver_defense", option))


TRANSFORMS = [IDENTITY, *OPTIONS]
RANDOM = [option for option in TRANSFORMS if build(option).random]
DETERMINISTIC = [option for option in TRANSFORMS if not build(option).random]
BATCHES = ["digits_batch", "cifar_batch"]


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's second thread makes the many small ops of the
    iterative transforms (TV's 100 primal-dual steps) hundreds of times slower whenever the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(request: pytest.FixtureRequest, batch: str) -> torch.Tensor:
    return request.getfixturevalue(batch)[0]


def test_discovery_finds_the_shipped_transforms_on_both_sides_of_the_fact() -> None:
    assert len(TRANSFORMS) >= 10 and all(isinstance(build(option), InputTransform) for option in TRANSFORMS)
    assert RANDOM and DETERMINISTIC
    assert {build(option).differentiable for option in TRANSFORMS} == {True, False}


@pytest.mark.parametrize("option", TRANSFORMS)
def test_the_declared_gradient_is_the_one_an_attack_gets(option: str, cifar_batch) -> None:
    """Declared differentiable: the input gets a nonzero gradient through victim∘g. Declared not: asking for one
    raises, naming BPDA, instead of handing an attack a zero or meaningless gradient."""
    victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    transform = build(option)
    defended = ReceiverDefended(victim, transform)
    x = cifar_batch[0][:4].clone().requires_grad_(True)
    torch.manual_seed(0)
    if not transform.differentiable:
        with pytest.raises(NonDifferentiableTransformError, match="attack=bpda"):
            defended(x)
        return
    (grad,) = torch.autograd.grad(defended(x).sum(), x)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("option", TRANSFORMS)
def test_output_keeps_shape_and_dtype_and_stays_finite_in_unit_range(
    option: str, batch: str, request: pytest.FixtureRequest
) -> None:
    x = images(request, batch)
    torch.manual_seed(0)
    out = build(option).transform(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, x) is (option == IDENTITY), "a transform that protects must change the images"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("option", TRANSFORMS)
def test_float64_input_gives_float64_output(option: str, batch: str, request) -> None:
    x = images(request, batch).double()
    torch.manual_seed(0)
    out = build(option).transform(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, x) is (option == IDENTITY), "a transform that protects must change the images"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("option", RANDOM)
def test_random_transform_differs_between_calls_and_repeats_under_a_seed(option: str, batch: str, request) -> None:
    x = images(request, batch)
    transform = build(option)
    first, second = transform.transform(x), transform.transform(x)
    assert not torch.equal(first, second), "two calls of a random transform gave the same output"
    torch.manual_seed(123)
    seeded = transform.transform(x)
    torch.manual_seed(123)
    assert torch.equal(seeded, transform.transform(x)), "the same seed did not repeat the output"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("option", DETERMINISTIC)
def test_deterministic_transform_gives_the_same_output_whatever_the_seed(option: str, batch: str, request) -> None:
    x = images(request, batch)
    transform = build(option)
    torch.manual_seed(0)
    first = transform.transform(x)
    torch.manual_seed(1)
    assert torch.equal(first, transform.transform(x))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("option", TRANSFORMS)
def test_sender_side_call_is_detached_and_leaves_its_input_untouched(option: str, batch: str, request) -> None:
    x = images(request, batch).clone().requires_grad_(True)
    before = x.detach().clone()
    labels = request.getfixturevalue(batch)[1]
    torch.manual_seed(0)
    out = build(option)(x, labels)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert not out.requires_grad and out.grad_fn is None
    assert torch.equal(x.detach(), before)
    torch.manual_seed(0)
    assert torch.equal(out, build(option).transform(before)), "the call shape must apply the same g as transform"


def test_identity_returns_its_input_and_passes_gradients(cifar_batch) -> None:
    x = cifar_batch[0].clone().requires_grad_(True)
    out = Identity().transform(x)
    assert torch.equal(out, x)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("option", TRANSFORMS)
def test_approximated_is_g_in_the_forward_pass_with_a_gradient_in_the_backward(option: str, digits_batch) -> None:
    """What partial BPDA differentiates: the value `transform` gives under the same seed, and a gradient that
    reaches the input whatever g is (the identity through the stages autograd cannot follow)."""
    x = digits_batch[0][:4].clone().requires_grad_(True)
    transform = build(option)
    torch.manual_seed(0)
    value = transform.approximated(x)
    torch.manual_seed(0)
    torch.testing.assert_close(value, transform.transform(x.detach()))
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
