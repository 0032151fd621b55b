"""BPDA, EOT and BPDA+EOT (one attack, two gradient estimators) against receiver-side transforms on digits."""

import pytest
import torch
from conftest import accuracy, assert_in_budget
from torch import nn

from preempt.attacks.adaptive import AdaptiveAttack, StraightThrough
from preempt.attacks.base import predict
from preempt.attacks.ifgsm import IFGSM
from preempt.parts import NonDifferentiableTransformError
from preempt.receiver_defenses.base import ReceiverDefended
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.dct_distortion import DCTDistortion
from preempt.receiver_defenses.random_crop import RandomCrop
from preempt.receiver_defenses.random_resize_pad import RandomResizePad
from preempt.threat import distance


class AutogradThrough(nn.Module):
    """victim(g(x)) with autograd through g as it is: what a naive attack differentiates (zero through rounding)."""

    def __init__(self, victim: nn.Module, transform) -> None:
        super().__init__()
        self.victim, self.transform = victim, transform

    def forward(self, x):
        return self.victim(self.transform.transform(x))


def fresh_draw_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 10) -> float:
    """Accuracy of a random receiver averaged over independent draws of its transform."""
    return sum(accuracy(model, x, y) for _ in range(draws)) / draws


def test_bpda_with_the_identity_breaks_a_quantizer_that_plain_gradients_cannot_move(
    digits_models, digits_batch
) -> None:
    x, y = digits_batch
    victim, quantizer = digits_models["digits_mlp"], BitDepth(bits=3)
    receiver = ReceiverDefended(victim, quantizer)
    naive = IFGSM(AutogradThrough(victim, quantizer), eps=0.2, steps=20)(x, y)
    assert torch.equal(naive, x)  # rounding has a zero gradient almost everywhere: the attack never moves
    torch.manual_seed(0)
    bpda = AdaptiveAttack(receiver, eps=0.2, norm="Linf", steps=20, step_size=0.025, targeted=False)(x, y)
    assert_in_budget(bpda, x, 0.2, "Linf")
    assert accuracy(receiver, x, y) >= 0.85
    assert accuracy(receiver, bpda, y) <= 0.1


def test_eot_beats_a_random_transform_more_often_than_a_single_draw(digits_models, digits_batch) -> None:
    x, y = digits_batch
    receiver = ReceiverDefended(digits_models["digits_mlp"], RandomCrop(crop_fraction=0.75))
    robust = {}
    for samples in (1, 20):
        torch.manual_seed(0)
        attack = AdaptiveAttack(
            receiver, eps=0.1, norm="Linf", steps=20, lr=1.0, approximation="none", eot_samples=samples,
            targeted=False, early_stop=False, record_every=None,
        )  # fmt: skip
        robust[samples] = fresh_draw_accuracy(receiver, attack(x, y), y)
    assert robust[20] < robust[1] - 0.03


def test_eot_through_a_deterministic_g_draws_once_and_equals_bpda(digits_models, digits_batch) -> None:
    """Every draw of a deterministic g is the same: EOT over 30 of them is BPDA, computed once."""
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    victim = digits_models["digits_mlp"]
    deterministic = ReceiverDefended(victim, BitDepth(bits=3))
    found = {}
    for samples in (1, 30):
        attack = AdaptiveAttack(deterministic, eps=0.3, norm="normalized_L2", steps=5, step_size=0.02,
                                eot_samples=samples)  # fmt: skip
        assert attack.draws == 1
        torch.manual_seed(0)
        found[samples] = attack(x, y, (y + 1) % 10)
    assert torch.equal(found[1], found[30])
    assert AdaptiveAttack(ReceiverDefended(victim, RandomCrop(crop_fraction=0.75)), eps=0.1, eot_samples=30).draws == 30
    assert AdaptiveAttack(victim, eps=0.1, eot_samples=30).draws == 1  # oblivious: the bare victim


def test_bpda_eot_targets_hit_and_the_record_has_one_entry_per_round(digits_models, digits_batch) -> None:
    x, y = digits_batch
    receiver = ReceiverDefended(digits_models["digits_mlp"], BitDepth(bits=3))
    target = (y + 1) % 10
    attack = AdaptiveAttack(receiver, eps=0.3, norm="normalized_L2", steps=30, step_size=0.02, eot_samples=2)
    torch.manual_seed(0)
    x_adv = attack(x, y, target)
    assert_in_budget(x_adv, x, 0.3, "normalized_L2")
    record = attack.record
    assert record.rounds == tuple(range(1, 31)) and len(record.correct) == len(record.success) == 30
    assert (record.success.diff() >= 0).all()  # early stop keeps each first hit (accuracy may move: not targeted)
    with torch.no_grad():
        hit = receiver(x_adv).argmax(dim=1) == target
    assert hit.float().mean() >= 0.7 and int(hit.sum()) == record.success[-1]


def test_straight_through_is_g_forward_and_the_approximation_backward(digits_models, digits_batch) -> None:
    x, _ = digits_batch
    victim, quantizer = digits_models["digits_mlp"], BitDepth(bits=2)
    model = StraightThrough(victim, quantizer, nn.Identity())
    x = x[:4].clone().requires_grad_(True)
    out = model(x)
    assert torch.allclose(out, victim(quantizer(x)))
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    at_quantized = quantizer(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(victim(at_quantized)[:, 0].sum(), at_quantized)
    assert torch.allclose(grad, expected)  # the victim's gradient at g(x), passed straight through g


def test_without_bpda_a_non_differentiable_transform_raises(digits_models, digits_batch) -> None:
    x, y = digits_batch
    receiver = ReceiverDefended(digits_models["digits_mlp"], BitDepth())
    attack = AdaptiveAttack(receiver, eps=0.1, norm="Linf", approximation="none", eot_samples=30, steps=1)
    with pytest.raises(NonDifferentiableTransformError, match="attack=bpda"):
        attack(x[:2], y[:2])


def test_learned_approximation_needs_its_approximator(digits_models, digits_batch) -> None:
    x, y = digits_batch
    receiver = ReceiverDefended(digits_models["digits_mlp"], BitDepth())
    attack = AdaptiveAttack(receiver, eps=0.1, norm="Linf", approximation="learned", steps=1)
    with pytest.raises(ValueError, match="learn_approximator"):
        attack(x[:2], y[:2])


def test_bpda_declares_it_needs_no_gradient_through_g_and_eot_does() -> None:
    assert not AdaptiveAttack(None, eps=0.05).needs_gradients
    assert AdaptiveAttack(None, eps=0.05, approximation="none", eot_samples=30).needs_gradients


def input_gradient(model: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """∇ₓ of the first logit summed over the batch, with torch's generator at `seed` (the draw of a random g)."""
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    return grad


def test_partial_bpda_through_a_differentiable_g_is_autograd_through_it(digits_models, digits_batch) -> None:
    """Rand's resize-and-pad is differentiable: BPDA approximates nothing there (Athalye et al.), unlike the
    identity through all of g."""
    x, victim = digits_batch[0][:8], digits_models["digits_mlp"]
    receiver = ReceiverDefended(victim, RandomResizePad())
    exact = input_gradient(AutogradThrough(victim, receiver.transform), x)
    partial = AdaptiveAttack(receiver, eps=0.1).gradient_model
    torch.testing.assert_close(input_gradient(partial, x), exact)
    identity = AdaptiveAttack(receiver, eps=0.1, approximation="identity").gradient_model
    assert not torch.allclose(input_gradient(identity, x), exact)


def test_identity_bpda_passes_the_victims_gradient_at_g_x_through_all_of_g(digits_models, digits_batch) -> None:
    """`identity` (the second paper's code): the victim's gradient at g(x), as if g were not there; `partial`
    also carries it back through the distortion, so it differs."""
    x, victim = digits_batch[0][:8], digits_models["digits_mlp"]
    receiver = ReceiverDefended(victim, DCTDistortion())
    torch.manual_seed(0)
    at_g = receiver.transform.transform(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(victim(at_g)[:, 0].sum(), at_g)
    identity = AdaptiveAttack(receiver, eps=0.1, approximation="identity").gradient_model
    torch.testing.assert_close(input_gradient(identity, x), expected)
    partial = AdaptiveAttack(receiver, eps=0.1, approximation="partial").gradient_model
    assert not torch.allclose(input_gradient(partial, x), expected)


def test_partial_is_the_default_and_every_bpda_is_named_bpda() -> None:
    assert AdaptiveAttack(None, eps=0.05).approximation == "partial"
    assert AdaptiveAttack.label({"eot_samples": 30, "targeted": True}) == "BPDA+EOT targeted"
    assert AdaptiveAttack.label({"approximation": "identity", "eot_samples": 1}) == "BPDA"
    assert not AdaptiveAttack(None, eps=0.05, approximation="partial").needs_gradients


def test_until_bound_runs_each_image_to_its_success_or_the_budgets_boundary() -> None:
    torch.manual_seed(0)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    x = 0.25 + 0.5 * torch.rand(32, 3, 4, 4)  # inside the box by more than the budget: the ball's sphere is reachable
    y = predict(victim, x)
    target = (y + 1) % 10
    steps, eps = 200, 0.05
    attack = AdaptiveAttack(victim, eps=eps, norm="RMS", steps=steps, step_size=0.01, until_bound=True, record_every=3)
    x_adv = attack(x, y, target)
    succeeded = predict(victim, x_adv) == target
    on_boundary = distance(x_adv, x, "RMS") >= (1 - 1e-3) * eps
    assert (succeeded | on_boundary).all()
    assert succeeded.any() and not succeeded.all()  # both ways of stopping happen in this batch
    rounds = attack.rounds_run
    assert rounds.dtype == torch.long and rounds.shape == (32,)
    assert (rounds >= 1).all() and (rounds <= steps).all()
    assert rounds.max() < steps  # the loop ended when no image was left, long before the cap
    recorded = attack.record.rounds
    assert recorded[-1] == rounds.max() and all(r % 3 == 0 for r in recorded[:-1])
    assert len(attack.record.correct) == len(recorded)


def test_without_until_bound_an_attack_runs_every_round_and_counts_none(digits_models, digits_batch) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    attack = AdaptiveAttack(digits_models["digits_mlp"], eps=0.3, steps=6, step_size=0.1, early_stop=False)
    attack(x, y)
    assert attack.rounds_run is None and attack.record.rounds == tuple(range(1, 7))
