"""The contract every input transform keeps: shape, dtype, range, randomness as declared, and a detached call."""

from __future__ import annotations

import pytest
import torch

from preempt.receiver_defenses import Identity, InputTransform
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.dct_distortion import DCTDistortion
from preempt.receiver_defenses.feature_distillation import FeatureDistillation
from preempt.receiver_defenses.jpeg import JPEG
from preempt.receiver_defenses.pixel_deflection import PixelDeflection
from preempt.receiver_defenses.random_crop import RandomCrop
from preempt.receiver_defenses.random_resize_pad import RandomResizePad
from preempt.receiver_defenses.shield import Shield
from preempt.receiver_defenses.total_variation import TotalVariation

TRANSFORMS: list[type[InputTransform]] = [
    Identity,
    FeatureDistillation,
    DCTDistortion,
    JPEG,
    Shield,
    BitDepth,
    RandomResizePad,
    RandomCrop,
    TotalVariation,
    PixelDeflection,
]
RANDOM = [cls for cls in TRANSFORMS if cls.random]
DETERMINISTIC = [cls for cls in TRANSFORMS if not cls.random]
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


def test_the_declared_facts_match_the_transforms() -> None:
    assert set(RANDOM) == {DCTDistortion, Shield, RandomResizePad, RandomCrop, TotalVariation, PixelDeflection}
    assert {cls for cls in TRANSFORMS if cls.differentiable} == {Identity, RandomResizePad, RandomCrop}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cls", TRANSFORMS, ids=lambda cls: cls.__name__)
def test_output_keeps_shape_and_dtype_and_stays_finite_in_unit_range(
    cls: type[InputTransform], batch: str, request: pytest.FixtureRequest
) -> None:
    x = images(request, batch)
    torch.manual_seed(0)
    out = cls().transform(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cls", TRANSFORMS, ids=lambda cls: cls.__name__)
def test_float64_input_gives_float64_output(cls: type[InputTransform], batch: str, request) -> None:
    x = images(request, batch).double()
    torch.manual_seed(0)
    out = cls().transform(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cls", RANDOM, ids=lambda cls: cls.__name__)
def test_random_transform_differs_between_calls_and_repeats_under_a_seed(
    cls: type[InputTransform], batch: str, request
) -> None:
    x = images(request, batch)
    transform = cls()
    first, second = transform.transform(x), transform.transform(x)
    assert not torch.equal(first, second), "two calls of a random transform gave the same output"
    torch.manual_seed(123)
    seeded = transform.transform(x)
    torch.manual_seed(123)
    assert torch.equal(seeded, transform.transform(x)), "the same seed did not repeat the output"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cls", DETERMINISTIC, ids=lambda cls: cls.__name__)
def test_deterministic_transform_gives_the_same_output_whatever_the_seed(
    cls: type[InputTransform], batch: str, request
) -> None:
    x = images(request, batch)
    transform = cls()
    torch.manual_seed(0)
    first = transform.transform(x)
    torch.manual_seed(1)
    assert torch.equal(first, transform.transform(x))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cls", TRANSFORMS, ids=lambda cls: cls.__name__)
def test_sender_side_call_is_detached_and_leaves_its_input_untouched(
    cls: type[InputTransform], batch: str, request
) -> None:
    x = images(request, batch).clone().requires_grad_(True)
    before = x.detach().clone()
    labels = request.getfixturevalue(batch)[1]
    torch.manual_seed(0)
    out = cls()(x, labels)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert not out.requires_grad and out.grad_fn is None
    assert torch.equal(x.detach(), before)
    torch.manual_seed(0)
    assert torch.equal(out, cls().transform(before)), "the call shape must apply the same g as transform"


def test_identity_returns_its_input_and_passes_gradients(cifar_batch) -> None:
    x = cifar_batch[0].clone().requires_grad_(True)
    out = Identity().transform(x)
    assert torch.equal(out, x)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
