"""I-FGSM (BIM): PGD from the clean image with Kurakin et al.'s step size."""

import torch
from conftest import accuracy, assert_in_budget

from preempt.attacks.ifgsm import IFGSM

EPS = 8 / 255


def test_ifgsm_breaks_resnet18(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    x_adv = IFGSM(resnet18, eps=EPS, steps=10)(x, y)
    assert_in_budget(x_adv, x, EPS, "Linf")
    assert accuracy(resnet18, x_adv, y) <= 0.05


def test_ifgsm_is_deterministic_and_travels_kurakins_distance() -> None:
    attack = IFGSM(None, eps=EPS, steps=10)
    assert not attack.random_start
    assert abs(attack.step_size * attack.steps - 1.25 * EPS) < 1e-12


def test_targeted_ifgsm_hits_its_targets(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    target = (y + 5) % 10
    x_adv = IFGSM(resnet18, eps=EPS, steps=10, targeted=True)(x, y, target)
    with torch.no_grad():
        assert (resnet18(x_adv).argmax(dim=1) == target).float().mean() >= 0.8
