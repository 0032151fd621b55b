"""Box-constrained L-BFGS: the closed-form minimal perturbation of a linear model, ResNet-18, the L2 budgets."""

import pytest
import torch
from conftest import accuracy, assert_in_budget
from torch import nn

from preempt.attacks.base import predict
from preempt.attacks.lbfgs import LBFGS
from preempt.attacks.pgd import PGD
from preempt.threat import distance

EPS = 0.5
# An L2 budget beyond every minimal adversarial of these models: what the attack finds is what it returns.
UNBOUNDED = 10.0
# ResNet-18 costs a forward and backward pass per L-BFGS-B evaluation on CPU: 8 of the 20 images, three solves
# of 10 iterations from a larger first c keep the run to seconds.
RESNET_IMAGES = 8
FAST = {"search_steps": 3, "max_iterations": 10, "initial_const": 0.03}


@pytest.fixture(scope="module")
def resnet18_sample(cifar_batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = cifar_batch
    return x[:RESNET_IMAGES], y[:RESNET_IMAGES]


@pytest.fixture(scope="module")
def resnet18_adversarials(resnet18, resnet18_sample) -> torch.Tensor:
    return LBFGS(resnet18, eps=EPS, norm="L2", **FAST)(*resnet18_sample)


def linear_oracle(images: int = 32, classes: int = 3, side: int = 4) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 linear classifier with its boundaries near mid-gray images, the images, and its labels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, classes)).double().eval()
    with torch.no_grad():
        model[1].bias.copy_(-0.5 * model[1].weight.sum(dim=1) + 0.1 * torch.randn(classes, dtype=torch.float64))
    x = 0.5 + 0.05 * (2 * torch.rand(images, 1, side, side, dtype=torch.float64) - 1)
    return model, x, predict(model, x)


def closest_misclassified(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """For a linear model, the nearest point of the nearest boundary z_j = z_y, without the [0,1] box."""
    with torch.no_grad():
        logits = model(x)
    weight = model[1].weight.detach()
    normals = weight[None] - weight[y][:, None]  # z_j − z_y grows along normals[:, j]
    distances = (logits.gather(1, y[:, None]) - logits) / normals.norm(dim=2)
    nearest_distance, nearest = distances.scatter(1, y[:, None], torch.inf).min(dim=1)
    normal = normals[torch.arange(len(x)), nearest]
    step = nearest_distance[:, None] * normal / normal.norm(dim=1, keepdim=True)
    return x + step.view_as(x)


def test_lbfgs_finds_the_closed_form_minimal_perturbation_of_a_linear_model() -> None:
    model, x, y = linear_oracle()
    closest = closest_misclassified(model, x, y)
    assert closest.min() > 0 and closest.max() < 1, "the box must not bind for the closed form to be the answer"
    x_adv = LBFGS(model, eps=UNBOUNDED, norm="L2")(x, y)
    assert x_adv.dtype == torch.float64
    assert (predict(model, x_adv) != y).all()
    ratio = distance(x_adv, x, "L2") / distance(closest, x, "L2")
    assert (ratio >= 1 - 1e-6).all() and (ratio <= 1.1).all()


def test_lbfgs_breaks_resnet18_within_the_l2_budget(resnet18, resnet18_sample, resnet18_adversarials) -> None:
    x, y = resnet18_sample
    assert_in_budget(resnet18_adversarials, x, EPS, "L2")
    assert accuracy(resnet18, resnet18_adversarials, y) <= 1 / RESNET_IMAGES


def test_lbfgs_perturbations_are_smaller_than_pgds(resnet18, resnet18_sample, resnet18_adversarials) -> None:
    x, y = resnet18_sample
    torch.manual_seed(0)
    pgd_adversarials = PGD(resnet18, eps=EPS, norm="L2", steps=10)(x, y)
    both = (predict(resnet18, resnet18_adversarials) != y) & (predict(resnet18, pgd_adversarials) != y)
    assert both.sum() >= len(x) // 2
    lbfgs_l2 = distance(resnet18_adversarials, x, "L2")[both]
    pgd_l2 = distance(pgd_adversarials, x, "L2")[both]
    assert lbfgs_l2.median() < 0.6 * pgd_l2.median()


def test_lbfgs_perturbations_are_minimal(digits_models, digits_batch) -> None:
    """Shrinking an L-BFGS perturbation by 10% undoes it: the search stops just across the decision boundary."""
    x, y = digits_batch
    mlp = digits_models["digits_mlp"]
    x_adv = LBFGS(mlp, eps=UNBOUNDED, norm="L2")(x, y)
    correct = predict(mlp, x) == y
    assert (predict(mlp, x_adv) != y)[correct].all()
    shrunk = x + 0.9 * (x_adv - x)
    assert (predict(mlp, shrunk) == y)[correct].float().mean() >= 0.9


@pytest.mark.parametrize(("norm", "eps"), [("L2", 0.5), ("normalized_L2", 0.05)])
def test_lbfgs_clips_its_minimal_adversarials_into_the_budget(
    norm: str, eps: float, digits_models, digits_batch
) -> None:
    """Most minimal adversarials of the digits MLP lie beyond these budgets: clipping must bring them back."""
    x, y = digits_batch
    x_adv = LBFGS(digits_models["digits_mlp"], eps=eps, norm=norm, search_steps=3, max_iterations=20)(x, y)
    assert_in_budget(x_adv, x, eps, norm)
    assert (distance(x_adv, x, norm) > 0.99 * eps).sum() >= len(x) // 2


def test_targeted_lbfgs_hits_its_targets(digits_models, digits_batch) -> None:
    x, y = digits_batch
    target = (y + 1) % 10
    mlp = digits_models["digits_mlp"]
    x_adv = LBFGS(mlp, eps=UNBOUNDED, norm="L2", targeted=True, search_steps=3, max_iterations=20)(x, y, target)
    assert_in_budget(x_adv, x, UNBOUNDED, "L2")
    assert (predict(mlp, x_adv) == target).float().mean() >= 0.9


def test_linf_is_refused_with_the_setting_to_change() -> None:
    with pytest.raises(ValueError, match=r"threat\.norm"):
        LBFGS(None, eps=8 / 255, norm="Linf")
