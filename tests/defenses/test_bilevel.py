"""Bi-Level preemptive robustification: it lowers the worst-case loss it optimizes, within the budget."""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_in_budget

from preempt.attacks.pgd import PGD
from preempt.defenses.bilevel import BiLevel
from preempt.defenses.fast_preemption import FastPreemption


def worst_case_loss(backbone: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float, norm: str) -> float:
    """The backbone's mean cross-entropy at a fixed-seed PGD attack of x (a fresh one, not Bi-Level's own)."""
    torch.manual_seed(123)
    attacked = PGD(backbone, eps, norm, steps=20, step_size=eps / 4)(x, labels)
    with torch.no_grad():
        return F.cross_entropy(backbone(attacked), labels).item()


@pytest.fixture(scope="module")
def digits_case(digits_models, digits_batch) -> tuple:
    x = digits_batch[0][:32]
    with torch.no_grad():
        labels = digits_models["digits_cnn"](x).argmax(dim=1)
    return digits_models["digits_cnn_at"], x, labels


def test_worst_case_loss_falls_over_iterations_within_the_box(digits_case) -> None:
    backbone, x, labels = digits_case
    losses = [worst_case_loss(backbone, x, labels, 0.2, "Linf")]
    for iterations in (2, 10, 40):
        torch.manual_seed(0)
        robust = BiLevel(backbone, eps=0.2, iterations=iterations)(x, labels)
        assert_in_budget(robust, x, 0.2, "Linf")
        assert not robust.requires_grad
        losses.append(worst_case_loss(backbone, robust, labels, 0.2, "Linf"))
    assert losses == sorted(losses, reverse=True), losses
    assert losses[-1] < 0.5 * losses[0], losses


def test_l2_variant_lowers_the_worst_case_loss_within_the_ball(digits_case) -> None:
    backbone, x, labels = digits_case
    torch.manual_seed(0)
    robust = BiLevel(backbone, eps=1.5, norm="L2", iterations=20, lr=0.05)(x, labels)
    assert_in_budget(robust, x, 1.5, "L2")
    assert worst_case_loss(backbone, robust, labels, 1.5, "L2") < worst_case_loss(backbone, x, labels, 1.5, "L2")


def test_differs_from_fast_preemption_on_the_same_images(digits_case) -> None:
    backbone, x, labels = digits_case
    torch.manual_seed(0)
    bilevel = BiLevel(backbone, eps=0.2, iterations=10)(x, labels)
    torch.manual_seed(0)
    fast = FastPreemption(backbone, eps=0.2)(x, labels)
    assert (bilevel - fast).abs().amax(dim=(1, 2, 3)).min() > 0.05  # every image differs, not just by rounding


def test_authors_settings_are_the_defaults() -> None:
    linf = BiLevel(None, eps=8 / 255)
    assert (linf.iterations, linf.lr) == (100, 0.1)
    assert (linf.inner_attack.steps, linf.inner_attack.step_size) == (20, pytest.approx(2 / 255))
    l2 = BiLevel(None, eps=0.5, norm="L2")
    assert (l2.lr, l2.inner_attack.step_size) == (0.001, 0.125)


def test_images_are_robustified_independently(digits_case) -> None:
    """The summed loss and the element-wise optimizer keep images apart: a batch gives each image what it alone
    would get, given the same random draws."""
    backbone, x, labels = digits_case
    defense = BiLevel(backbone, eps=0.2, iterations=3, inner_steps=2)
    torch.manual_seed(0)
    whole = defense(x[:4], labels[:4])
    torch.manual_seed(0)
    again = defense(x[:4], labels[:4])
    assert torch.equal(whole, again)
    perturbed = x[:4].clone()
    perturbed[1:] = torch.rand_like(perturbed[1:])  # other images change; image 0 and the draws do not
    torch.manual_seed(0)
    torch.testing.assert_close(defense(perturbed, labels[:4])[0], whole[0], atol=1e-6, rtol=0)
