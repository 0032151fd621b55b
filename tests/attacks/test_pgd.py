"""PGD under Linf, L2 and normalized L2: it breaks the shipped ResNet-18, hits targets, stops early, starts from a
guess."""

import torch
from conftest import accuracy, assert_in_budget

from preempt.attacks.base import NoAttack
from preempt.attacks.pgd import PGD
from preempt.threat import project

EPS = 8 / 255


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


def test_targeted_pgd_hits_its_targets(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    target = (y + 1) % 10
    torch.manual_seed(0)
    x_adv = PGD(resnet18, eps=EPS, norm="Linf", steps=10, targeted=True)(x, y, target)
    assert_in_budget(x_adv, x, EPS, "Linf")
    with torch.no_grad():
        assert (resnet18(x_adv).argmax(dim=1) == target).float().mean() >= 0.8


def test_pgd_breaks_resnet18_within_the_second_papers_normalized_l2_budget(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    torch.manual_seed(0)
    x_adv = PGD(resnet18, eps=0.05, norm="normalized_L2", steps=10)(x, y)
    assert_in_budget(x_adv, x, 0.05, "normalized_L2")
    assert accuracy(resnet18, x_adv, y) <= 0.1


def test_early_stop_keeps_each_first_success_and_records_every_round(resnet18, cifar_batch) -> None:
    """With early stop an image is frozen at its first success: accuracy can only fall, success only rise."""
    x, y = cifar_batch
    torch.manual_seed(0)
    attack = PGD(resnet18, eps=EPS, norm="Linf", steps=6, step_size=EPS / 8, early_stop=True, record_every=1)
    x_adv = attack(x, y)
    record = attack.record
    assert record.rounds == (1, 2, 3, 4, 5, 6) and record.total == len(x)
    assert (record.correct.diff() <= 0).all() and (record.success.diff() >= 0).all()
    assert record.correct[-1] < record.correct[0]  # the small steps need several rounds: the curve moves
    with torch.no_grad():
        assert int((resnet18(x_adv).argmax(dim=1) != y).sum()) == record.success[-1]


def test_record_every_k_keeps_the_last_round() -> None:
    attack = PGD(None, eps=EPS, steps=10, record_every=4)
    assert attack.recorded_rounds == (4, 8, 10)
    assert PGD(None, eps=EPS, steps=10).recorded_rounds == ()


def test_from_a_reversions_guess_pgd_starts_there_and_keeps_the_budget_around_what_arrived(
    digits_models, digits_batch
) -> None:
    x, y = digits_batch
    model = digits_models["digits_mlp"]
    guess = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)  # partly outside the ball around x
    barely_moving = PGD(model, eps=0.2, norm="Linf", steps=1, step_size=1e-9)
    first = project(guess, x, 0.2, "Linf")
    assert torch.allclose(barely_moving(x, y, start=guess), first, atol=1e-6)  # no random start either
    attacked = PGD(model, eps=0.2, norm="Linf", steps=10)(x, y, start=guess)
    assert_in_budget(attacked, x, 0.2, "Linf")
    assert accuracy(model, attacked, y) < accuracy(model, first, y)
    assert torch.equal(NoAttack(model)(x, y, start=guess), guess)  # no attack sends the guess as it is
