"""PGD and the AutoAttack package break the shipped standard ResNet-18 on real CIFAR-10 images."""

import pytest
import torch
from conftest import accuracy

from preempt.attacks.autoattack import AutoAttack
from preempt.attacks.base import NoAttack
from preempt.attacks.pgd import PGD
from preempt.threat import distance

EPS = 8 / 255


def assert_in_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (distance(x_adv, x, norm) <= eps + 1e-5).all()


def test_shipped_resnet18_is_accurate_on_clean_samples(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    assert accuracy(resnet18, x, y) >= 0.85


def test_pgd_linf_breaks_resnet18(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    torch.manual_seed(0)
    x_adv = PGD(resnet18, eps=EPS, norm="Linf", steps=10)(x, y)
    assert_in_budget(x_adv, x, EPS, "Linf")
    assert accuracy(resnet18, x_adv, y) <= 0.05


def test_pgd_l2_breaks_resnet18(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    torch.manual_seed(0)
    x_adv = PGD(resnet18, eps=0.5, norm="L2", steps=10)(x, y)
    assert_in_budget(x_adv, x, 0.5, "L2")
    assert accuracy(resnet18, x_adv, y) <= 0.1


@pytest.mark.slow
def test_autoattack_standard_breaks_resnet18(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    torch.manual_seed(0)
    x_adv = AutoAttack(resnet18, eps=EPS, norm="Linf", version="standard")(x, y)
    assert_in_budget(x_adv, x, EPS, "Linf")
    assert accuracy(resnet18, x_adv, y) <= 0.05


@pytest.mark.slow
def test_autoattack_rand_breaks_standard_digits_mlp(digits_models, digits_batch) -> None:
    x, y = digits_batch
    mlp = digits_models["digits_mlp"]
    torch.manual_seed(0)
    x_adv = AutoAttack(mlp, eps=0.2, norm="Linf", version="rand")(x[:32], y[:32])
    assert_in_budget(x_adv, x[:32], 0.2, "Linf")
    assert accuracy(mlp, x_adv, y[:32]) <= 0.05


def test_autoattack_is_reproducible_under_the_same_torch_seed(digits_models, digits_batch) -> None:
    x, y = digits_batch
    attack = AutoAttack(digits_models["digits_mlp"], eps=0.05, norm="Linf")
    torch.manual_seed(3)
    first = attack(x[:16], y[:16])
    torch.manual_seed(3)
    assert torch.equal(first, attack(x[:16], y[:16]))


def test_no_attack_is_identity(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    assert torch.equal(NoAttack(resnet18)(x, y), x)


def test_unknown_autoattack_version_is_rejected(resnet18) -> None:
    with pytest.raises(ValueError, match="standard"):
        AutoAttack(resnet18, eps=EPS, version="plus-plus")
