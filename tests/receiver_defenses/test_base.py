"""What the receiver runs: victim∘g, whose gradient through a non-differentiable g raises instead of being zero; and
the output variance of g (the second paper's Table 1)."""

from pathlib import Path

import pytest
import torch

from preempt.commands.evaluate import evaluate
from preempt.parts import Identity, NonDifferentiableTransformError
from preempt.receiver_defenses import ReceiverDefended, receiver_model
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.random_resize_pad import RandomResizePad


def test_a_gradient_through_a_non_differentiable_transform_raises_instead_of_returning_zeros(digits_models) -> None:
    defended = ReceiverDefended(digits_models["digits_lenet_at"], BitDepth(bits=1))
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    with pytest.raises(NonDifferentiableTransformError, match="BPDA"):
        defended(x)
    with torch.no_grad():
        assert defended(x).shape == (2, 10)


def test_a_differentiable_transform_passes_gradients_to_the_input(digits_models) -> None:
    defended = ReceiverDefended(digits_models["digits_lenet_at"], RandomResizePad())
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(defended(x).sum(), x)
    assert grad.abs().sum() > 0


def test_without_a_receiver_defense_the_victim_is_not_wrapped() -> None:
    victim = torch.nn.Linear(4, 2)
    assert receiver_model(victim, Identity()) is victim
    wrapped = receiver_model(victim, BitDepth())
    assert isinstance(wrapped, ReceiverDefended) and wrapped.victim is victim


def test_variance_is_measured_for_random_transforms_and_exact_for_deterministic_ones(
    compose_config, digits_models, tmp_path: Path
) -> None:
    metrics = {}
    for option in ("random_resize_pad", "jpeg"):
        cfg = compose_config(
            f"receiver_defense={option}", "defense=none", "attack=none", "dataset.n_samples=32", "logger=none"
        )
        cfg.paths.output_dir = str(tmp_path / option)
        metrics[option] = evaluate(cfg)["metrics"]
    random, fixed = metrics["random_resize_pad"], metrics["jpeg"]
    assert random["test/receiver_variance_l2"] > 0 and random["test/receiver_variance_ssim"] < 1
    assert fixed["test/receiver_variance_l2"] == 0 and fixed["test/receiver_variance_ssim"] == 1
    # No attack: robust accuracy is the receiver's accuracy on what was sent.
    assert fixed["test/robust_acc"] == fixed["test/protected_clean_acc"]
