"""The AutoAttack package breaks the shipped ResNet-18 and the digits MLP; its Square report is kept."""

import pytest
import torch
from conftest import accuracy, assert_in_budget

from preempt.attacks.autoattack import AutoAttack

EPS = 8 / 255


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


def test_unknown_autoattack_version_is_rejected(resnet18) -> None:
    with pytest.raises(ValueError, match="standard"):
        AutoAttack(resnet18, eps=EPS, version="plus-plus")
