"""FGSM: one step of exactly eps; the shared FGSM step behaves the same for attacks and Fast Preemption."""

import pytest
import torch
from conftest import accuracy, assert_in_budget

from preempt.attacks.fgsm import FGSM, fgsm_step, loss_gradient
from preempt.threat import NORMS, distance, project

EPS = 8 / 255


@pytest.mark.parametrize("norm", NORMS)
def test_fgsm_takes_one_step_of_exactly_eps_inside_the_image_box(norm: str, digits_models, digits_batch) -> None:
    x, y = digits_batch
    x = x.clamp(0.1, 0.9)  # away from the box, so clipping cannot shorten the step
    eps = {"Linf": 0.05, "L2": 0.5, "normalized_L2": 0.05, "RMS": 0.03}[norm]
    x_adv = FGSM(digits_models["digits_mlp"], eps=eps, norm=norm)(x, y)
    assert_in_budget(x_adv, x, eps, norm)
    assert torch.allclose(distance(x_adv, x, norm), torch.full((len(x),), eps), rtol=1e-4)


def test_fgsm_lowers_resnet18_accuracy(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    x_adv = FGSM(resnet18, eps=EPS)(x, y)
    assert_in_budget(x_adv, x, EPS, "Linf")
    assert accuracy(resnet18, x_adv, y) <= 0.3


def test_targeted_fgsm_lowers_the_targets_loss(digits_models, digits_batch) -> None:
    x, y = digits_batch
    model = digits_models["digits_mlp"]
    target = (y + 3) % 10
    x_adv = FGSM(model, eps=0.1, targeted=True)(x, y, target)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(x), target)
        after = torch.nn.functional.cross_entropy(model(x_adv), target)
    assert after < before


def test_fgsm_step_moves_along_the_gradient_sign() -> None:
    """On a linear model the cross-entropy gradient's sign is known: the step must follow it, or oppose it."""
    weight = torch.zeros(2, 4)
    weight[1] = torch.tensor([1.0, -1.0, 2.0, -2.0])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    model[1].weight.data = weight
    x = torch.full((1, 1, 2, 2), 0.5)
    labels = torch.tensor([0])
    raised = fgsm_step(model, x, labels, 0.1, x, 0.1, "Linf")
    assert torch.allclose((raised - x).flatten(), 0.1 * weight[1].sign())
    lowered = fgsm_step(model, x, labels, 0.1, x, 0.1, "Linf", toward_labels=True)
    assert torch.allclose((lowered - x).flatten(), -0.1 * weight[1].sign())


def test_eot_gradient_is_the_mean_over_draws() -> None:
    """With `samples` copies through a random model, the gradient is the mean of the per-draw gradients."""

    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1) * torch.randn(len(x), 1)

    x, labels = torch.rand(3, 1, 1, 2), torch.tensor([0, 1, 0])
    torch.manual_seed(0)
    averaged = loss_gradient(Noisy(), x, labels, samples=5)
    torch.manual_seed(0)
    scales = torch.randn(15, 1).view(3, 5)
    draws = torch.stack([loss_gradient(_Scaled(scales[:, k]), x, labels) for k in range(5)]).mean(dim=0)
    assert torch.allclose(averaged, draws, atol=1e-6)


class _Scaled(torch.nn.Module):
    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x.flatten(1) * self.scale.view(-1, 1)


def test_an_attack_without_a_start_point_attacks_the_guess_and_is_projected_around_what_arrived(
    digits_models, digits_batch
) -> None:
    x, y = digits_batch
    attack = FGSM(digits_models["digits_mlp"], eps=0.1, norm="Linf")
    guess = (x + 0.15).clamp(0, 1)
    from_guess = attack(x, y, start=guess)
    assert_in_budget(from_guess, x, 0.1, "Linf")
    assert torch.equal(from_guess, project(attack(guess, y), x, 0.1, "Linf"))
