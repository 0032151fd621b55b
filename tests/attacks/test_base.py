"""The call shape every attack shares: the identity, targets drawn among the wrong classes, names in tables."""

import torch

from preempt.attacks.base import NoAttack
from preempt.attacks.pgd import PGD


def test_no_attack_is_identity(resnet18, cifar_batch) -> None:
    x, y = cifar_batch
    assert torch.equal(NoAttack(resnet18)(x, y), x)


def test_a_targeted_attack_without_targets_draws_wrong_classes(digits_models, digits_batch) -> None:
    x, y = digits_batch
    model = digits_models["digits_mlp"]
    attack = PGD(model, eps=0.3, steps=10, targeted=True, early_stop=True, record_every=10)
    torch.manual_seed(0)
    first = attack(x, y)
    torch.manual_seed(0)
    assert torch.equal(first, attack(x, y))  # the drawn targets follow torch's seed
    with torch.no_grad():
        predicted = model(first).argmax(dim=1)
    assert (predicted != y).float().mean() >= 0.8


def test_an_attack_is_given_its_model_at_test_start_and_named_for_tables() -> None:
    from preempt.attacks.adaptive import AdaptiveAttack
    from preempt.attacks.autoattack import AutoAttack
    from preempt.attacks.base import Attack, NoAttack
    from preempt.attacks.pgd import PGD

    assert Attack.bound == ("model",) and PGD.models_to_bind({"model": None}) == ("model",)
    assert PGD.label({"targeted": True}) == "PGD targeted" and PGD.label({}) == "PGD"
    assert AutoAttack.label({"attacks": ["apgd-ce", "apgd-t"]}) == "AutoAttack (apgd-ce, apgd-t)"
    assert AdaptiveAttack.label({"approximation": "none", "eot_samples": 1}) == "GradientDescent"
    assert NoAttack(None).eps == 0 and not NoAttack.needs_gradients


def test_untargeted_success_is_any_mistake_and_targeted_success_the_target() -> None:
    from preempt.attacks.base import attack_succeeded

    predictions, y, target = torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2]), torch.tensor([1, 1, 0])
    assert attack_succeeded(predictions, y, None).tolist() == [False, True, False]
    assert attack_succeeded(predictions, y, target).tolist() == [False, True, False]
    assert attack_succeeded(torch.tensor([1, 0, 0]), y, target).tolist() == [True, False, True]
