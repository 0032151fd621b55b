"""Carlini & Wagner L2 through foolbox: near-minimal perturbations, clipped into the L2 budgets, batched."""

import pytest
import torch
from conftest import accuracy, assert_in_budget

from preempt.attacks.base import predict
from preempt.attacks.cw import CarliniWagner
from preempt.attacks.pgd import PGD
from preempt.threat import distance

EPS = 0.5
# An L2 budget beyond every minimal adversarial of these models: what the attack finds is what it returns.
UNBOUNDED = 10.0
# Two solves of 20 Adam steps from a larger first c keep the 20-image ResNet-18 run to seconds on CPU.
FAST = {"binary_search_steps": 2, "steps": 20, "initial_const": 0.1}


@pytest.fixture(scope="module")
def resnet18_adversarials(resnet18, cifar_batch) -> torch.Tensor:
    x, y = cifar_batch
    return CarliniWagner(resnet18, eps=EPS, norm="L2", **FAST)(x, y)


def test_cw_breaks_resnet18_within_the_l2_budget(resnet18, cifar_batch, resnet18_adversarials) -> None:
    x, y = cifar_batch
    assert_in_budget(resnet18_adversarials, x, EPS, "L2")
    assert accuracy(resnet18, resnet18_adversarials, y) <= 0.1


def test_cw_perturbations_are_smaller_than_pgds(resnet18, cifar_batch, resnet18_adversarials) -> None:
    """PGD spends its whole budget; C&W looks for the closest adversarial, so it needs far less of it."""
    x, y = cifar_batch
    torch.manual_seed(0)
    pgd_adversarials = PGD(resnet18, eps=EPS, norm="L2", steps=10)(x, y)
    both = (predict(resnet18, resnet18_adversarials) != y) & (predict(resnet18, pgd_adversarials) != y)
    assert both.sum() >= len(x) // 2
    cw_l2 = distance(resnet18_adversarials, x, "L2")[both]
    pgd_l2 = distance(pgd_adversarials, x, "L2")[both]
    assert cw_l2.median() < 0.6 * pgd_l2.median()


@pytest.mark.parametrize(("norm", "eps"), [("L2", 0.5), ("normalized_L2", 0.05)])
def test_cw_clips_its_minimal_adversarials_into_the_budget(norm: str, eps: float, digits_models, digits_batch) -> None:
    """Most minimal adversarials of the digits MLP lie beyond these budgets: clipping must bring them back."""
    x, y = digits_batch
    x_adv = CarliniWagner(digits_models["digits_mlp"], eps=eps, norm=norm)(x, y)
    assert_in_budget(x_adv, x, eps, norm)
    assert (distance(x_adv, x, norm) > 0.99 * eps).sum() >= len(x) // 2


def test_cw_perturbations_are_minimal(digits_models, digits_batch) -> None:
    """Shrinking a C&W perturbation by 10% undoes it: it stops close to the decision boundary."""
    x, y = digits_batch
    mlp = digits_models["digits_mlp"]
    x_adv = CarliniWagner(mlp, eps=UNBOUNDED, norm="L2")(x, y)
    correct = predict(mlp, x) == y
    assert (predict(mlp, x_adv) != y)[correct].all()
    shrunk = x + 0.9 * (x_adv - x)
    assert (predict(mlp, shrunk) == y)[correct].float().mean() >= 0.9


def test_targeted_cw_hits_its_targets(digits_models, digits_batch) -> None:
    x, y = digits_batch
    target = (y + 1) % 10
    mlp = digits_models["digits_mlp"]
    x_adv = CarliniWagner(mlp, eps=UNBOUNDED, norm="L2", targeted=True)(x, y, target)
    assert_in_budget(x_adv, x, UNBOUNDED, "L2")
    assert (predict(mlp, x_adv) == target).float().mean() >= 0.9


def test_images_cw_cannot_break_come_back_unchanged(digits_models, digits_batch) -> None:
    """foolbox returns all-zero images where it found no adversarial; the wrapper must return the clean ones."""
    x, y = digits_batch
    mlp = digits_models["digits_mlp"]
    x_adv = CarliniWagner(mlp, eps=0.5, norm="L2", binary_search_steps=1, steps=1, initial_const=1e-6)(x, y)
    correct = predict(mlp, x) == y
    assert torch.equal(x_adv[correct], x[correct])


def test_linf_is_refused_with_the_setting_to_change() -> None:
    with pytest.raises(ValueError, match=r"threat\.norm"):
        CarliniWagner(None, eps=8 / 255, norm="Linf")
