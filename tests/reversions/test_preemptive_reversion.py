"""reversion=preemptive_reversion: Algorithm 2 of the Fast Preemption paper, white-box and black-box."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from preempt.commands.evaluate import evaluate
from preempt.defenses.fast_preemption import FastPreemption
from preempt.models.pixel_classifier import PixelClassifier
from preempt.parts import ConfigError
from preempt.reversions.preemptive_reversion import PreemptiveReversion, reverse_secondary_defense
from preempt.validation import validate_config

SHAPE = (1, 4, 4)


def tiny_backbone() -> nn.Module:
    torch.manual_seed(0)
    return PixelClassifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), name="tiny", input_shape=SHAPE)


def bound_reversion(eps: float) -> tuple[PreemptiveReversion, FastPreemption]:
    defense = FastPreemption(backbone=tiny_backbone(), eps=eps, n_samples=4)
    return PreemptiveReversion(secondary_defense=defense, labeler=lambda x, y, index: y), defense


def test_algorithm_2_on_a_tiny_model_is_the_formula() -> None:
    reversion, defense = bound_reversion(eps=0.1)
    protected = torch.rand(8, *SHAPE) * 0.6 + 0.2  # away from the box: the clip must not act
    y, index = torch.randint(0, 3, (8,)), torch.arange(8)
    torch.manual_seed(1)
    reverted = reversion(protected, y, index)
    torch.manual_seed(1)
    defended_again = defense(protected, y)
    assert torch.allclose(reverted, protected - (defended_again - protected), atol=1e-6)
    assert not torch.equal(reverted, protected)
    assert reversion.knowledge == "white-box"


@settings(max_examples=25, deadline=None, derandomize=True)
@given(eps=st.floats(0.01, 1.0), seed=st.integers(0, 2**16), edge=st.sampled_from([0.0, 1.0, None]))
def test_the_reverted_image_stays_in_the_box_and_within_eps_of_what_was_received(
    eps: float, seed: int, edge: float | None
) -> None:
    reversion, _ = bound_reversion(eps)
    torch.manual_seed(seed)
    protected = torch.rand(6, *SHAPE)
    if edge is not None:  # pixels on the box's faces, where 2·x_r − x_rr leaves it
        protected[:, :, :2] = edge
    reverted = reversion(protected, torch.randint(0, 3, (6,)), torch.arange(6))
    assert reverted.shape == protected.shape and reverted.dtype == protected.dtype
    assert reverted.min() >= 0 and reverted.max() <= 1
    assert (reverted - protected).abs().max() <= eps + 1e-6


def test_the_formula_clips_to_the_box() -> None:
    protected, again = torch.tensor([0.05, 0.95, 0.5]), torch.tensor([0.2, 0.8, 0.4])
    assert torch.allclose(reverse_secondary_defense(protected, again), torch.tensor([0.0, 1.0, 0.6]))


def test_what_the_attacker_knows_decides_white_or_black_box() -> None:
    model = tiny_backbone()
    assert PreemptiveReversion().knowledge == "white-box"
    assert PreemptiveReversion(backbone=model).knowledge == "black-box"
    assert PreemptiveReversion(classifier=model).knowledge == "black-box"
    assert PreemptiveReversion(defense_settings={"n_samples": 5}).knowledge == "black-box"
    with pytest.raises(RuntimeError, match="secondary_defense and labeler"):
        PreemptiveReversion()(torch.rand(1, *SHAPE), torch.zeros(1, dtype=torch.long), torch.zeros(1))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["+reversion.defense_settings.n_sample=5"],
            r"reversion.defense_settings.n_sample is not a setting.*n_samples",
        ),
        (["+reversion.defense_settings.eta=2"], r"reversion.defense_settings.eta=2"),
        (
            ["+reversion.defense_settings.forward_steps=0", "+reversion.defense_settings.backward_steps=0"],
            r"reversion.defense_settings: forward_steps=0 and backward_steps=0",
        ),
        (["+model@reversion.backbone=ground_truth"], r"reversion.backbone=.*label-only model"),
    ],
)
def test_bad_reversion_settings_are_refused_naming_the_key(overrides, expected, compose_config) -> None:
    with pytest.raises(ConfigError, match=expected):
        validate_config(compose_config("reversion=preemptive_reversion", *overrides))


def test_a_sender_defense_is_not_a_reversion(compose_config) -> None:
    with pytest.raises(ConfigError, match=r"reversion=NoDefense is neither a reversion attack .* nor an input"):
        validate_config(compose_config("reversion=none", "reversion._target_=preempt.parts.NoDefense"))


def test_reverting_an_unprotected_image_is_flagged(compose_config) -> None:
    warnings = validate_config(compose_config("reversion=preemptive_reversion", "defense=none"))
    assert any("no protection to revert" in warning for warning in warnings)


def test_an_attacker_backbone_of_other_images_is_refused_before_the_loop(compose_config) -> None:
    cfg = compose_config(
        "experiment=cifar10_resnet18", "reversion=preemptive_reversion", "+model@reversion.backbone=digits_cnn"
    )
    with pytest.raises(
        ConfigError, match=r"reversion.backbone \w+ takes 1×16×16 images .* cifar10_samples gives 3×32×32"
    ):
        evaluate(cfg)


def _protocol_run(compose_config, reversion: str) -> dict:
    cfg = compose_config(
        "classifier=noisy_labels",
        "attack=fgsm",
        "dataset.n_samples=360",
        "defense.n_samples=10",
        "logger=none",
        f"reversion={reversion}",
    )
    cfg.paths.output_dir += f"/{reversion}"
    return evaluate(cfg)


@pytest.mark.slow
def test_on_noisy_digits_white_box_reverts_and_black_box_reverts_less(compose_config, digits_models) -> None:
    """The issue's protocol on the whole digits test split (FGSM after the reversion, for the budget check):
    protection with 50% wrong labels lowers clean accuracy; the white-box reversion brings it back to the
    original's; the black-box one (re-run on the victim, the model the attacker has) less, and leaves more of the
    protective perturbation."""
    white = _protocol_run(compose_config, "preemptive_reversion")
    black = _protocol_run(compose_config, "preemptive_reversion_black_box")
    for result in (white, black):
        verdict, metrics = result["reversion"], result["metrics"]
        assert verdict["protected_acc"] < verdict["original_acc"] - verdict["margin"]
        assert metrics["test/attack_distance"] <= 0.2 + 1e-5  # the attack after reversion keeps the budget
    assert (white["reversion"]["knowledge"], black["reversion"]["knowledge"]) == ("white-box", "black-box")
    assert white["reversion"]["verdict"] == "succeeded"
    assert white["reversion"]["reverted_acc"] >= white["reversion"]["original_acc"] - 0.01
    assert black["reversion"]["reverted_acc"] < white["reversion"]["reverted_acc"]
    assert white["reversion"]["residual"] < 1 and white["reversion"]["residual"] < black["reversion"]["residual"]
