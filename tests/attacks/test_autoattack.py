"""The AutoAttack package breaks the shipped ResNet-18 and the digits MLP; its Square report is kept."""

import pytest
import torch
from conftest import accuracy, assert_in_budget

from preempt.attacks.autoattack import AutoAttack

EPS = 8 / 255


@pytest.mark.slow
def test_autoattack_standard_breaks_resnet18(resnet18, cifar_batch) -> None:
    x, y = cifar_batch[0][:10], cifar_batch[1][:10]  # ten are enough to see every one broken
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
    first = attack(x[:8], y[:8])
    torch.manual_seed(3)
    assert torch.equal(first, attack(x[:8], y[:8]))


def test_unknown_autoattack_version_is_rejected(resnet18) -> None:
    with pytest.raises(ValueError, match="standard"):
        AutoAttack(resnet18, eps=EPS, version="plus-plus")


def test_normalized_l2_is_refused_naming_the_norms_it_supports() -> None:
    with pytest.raises(ValueError, match="Linf or L2"):
        AutoAttack(None, eps=0.05, norm="normalized_L2")


@pytest.mark.slow
def test_rand_version_attacks_the_victim_behind_a_random_transform(digits_models, digits_batch) -> None:
    from preempt.receiver_defenses.base import ReceiverDefended
    from preempt.receiver_defenses.random_resize_pad import RandomResizePad

    x, y = digits_batch
    receiver = ReceiverDefended(digits_models["digits_mlp"], RandomResizePad())
    torch.manual_seed(0)
    x_adv = AutoAttack(receiver, eps=0.2, norm="Linf", version="rand")(x[:16], y[:16])
    assert_in_budget(x_adv, x[:16], 0.2, "Linf")
    assert accuracy(receiver, x_adv, y[:16]) <= 0.25


class _MaskedGradients(torch.nn.Module):
    """Input rounding with an exactly zero gradient: the white-box attacks stall, a black-box one does not."""

    def __init__(self, victim: torch.nn.Module) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x):
        return self.victim(torch.round(x * 4) / 4 + 0 * x)


@pytest.mark.slow
def test_square_beating_the_white_box_attacks_is_reported(digits_models, digits_batch) -> None:
    x, y = digits_batch
    masked = _MaskedGradients(digits_models["digits_mlp"])
    attack = AutoAttack(masked, eps=0.2, norm="Linf")
    torch.manual_seed(0)
    attack(x[:16], y[:16])
    assert attack.square_beat_white_box
    assert not AutoAttack(masked, eps=0.2).square_beat_white_box


def test_a_subset_of_the_versions_attacks_runs_only_those(digits_models, digits_batch, monkeypatch) -> None:
    """`attacks: [apgd-ce, apgd-t]` keeps the standard version's settings and runs those two only."""
    from pyautoattack import AutoAttack as PackageAutoAttack

    ran = []
    evaluate = PackageAutoAttack.run_standard_evaluation

    def recorded(self, *args, **kwargs):
        ran.append((list(self.attacks_to_run), self.apgd_targeted.n_target_classes))
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(PackageAutoAttack, "run_standard_evaluation", recorded)
    x, y = digits_batch
    mlp = digits_models["digits_mlp"]
    torch.manual_seed(0)
    x_adv = AutoAttack(mlp, eps=0.2, attacks=["apgd-ce", "apgd-t"])(x[:16], y[:16])
    assert ran == [(["apgd-ce", "apgd-t"], 9)]
    assert_in_budget(x_adv, x[:16], 0.2, "Linf")
    assert accuracy(mlp, x_adv, y[:16]) <= 0.05


def test_an_attack_outside_the_version_is_refused_naming_the_versions_attacks(resnet18) -> None:
    with pytest.raises(ValueError, match="apgd-dlr"):
        AutoAttack(resnet18, eps=EPS, version="rand", attacks=["square"])
