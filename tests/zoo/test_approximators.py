"""The BPDA approximator as the project trains it: it learns g, deterministically, cached like the digits zoo."""

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from preempt.attacks.approximator import approximation_fidelity
from preempt.datasets.digits import digits
from preempt.parts import ConfigError
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.dct_distortion import DCTDistortion
from preempt.validation import read_section
from preempt.zoo import approximators as approximator_module
from preempt.zoo.approximators import (
    DEFAULT_RECIPE,
    ApproximatorRecipe,
    approximator_path,
    load_or_train_approximator,
    train_approximator,
)

TINY_RECIPE = {"layers": 2, "growth": 4, "steps": 5, "batch_size": 16, "lr": 1e-2, "seed": 0}
DIGITS = {
    "_target_": "preempt.datasets.digits.digits",
    "split": "test",
    "image_size": 16,
    "n_samples": 200,
    "offset": 0,
}
ONE_BIT = {"_target_": "preempt.receiver_defenses.bit_depth.BitDepth", "bits": 1}


def test_a_recipe_seed_beyond_32_bits_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"approximator\.seed=4294967296: Value error, a seed is an integer from 0"):
        read_section(ApproximatorRecipe, {"seed": 2**32}, "approximator")


def test_training_imitates_a_non_differentiable_g_far_better_than_the_identity() -> None:
    """1-bit depth reduction (Xu et al.'s MNIST setting): a step function the identity approximates badly."""
    one_bit = BitDepth(bits=1)
    recipe = {**TINY_RECIPE, "layers": 3, "growth": 8, "steps": 100, "batch_size": 32}
    model = train_approximator(one_bit, digits("train").images, **recipe)
    held_out = digits("test").images
    learned = approximation_fidelity(model, one_bit, held_out)
    identity = approximation_fidelity(nn.Identity(), one_bit, held_out)
    assert learned["normalized_l2"] < 0.6 * identity["normalized_l2"]  # 0.19 against 0.41
    assert learned["ssim"] > identity["ssim"] + 0.2  # 0.94 against 0.62


def test_training_is_deterministic_frozen_and_leaves_the_global_random_state_alone(digits_batch) -> None:
    images = digits_batch[0]
    state = torch.get_rng_state()
    first = train_approximator(DCTDistortion(), images, **TINY_RECIPE)  # random: a fresh draw of g every step
    assert torch.equal(torch.get_rng_state(), state)
    second = train_approximator(DCTDistortion(), images, **TINY_RECIPE)
    other_seed = train_approximator(DCTDistortion(), images, **{**TINY_RECIPE, "seed": 1})
    for name, weights in first.state_dict().items():
        assert torch.equal(weights, second.state_dict()[name])
    assert not torch.equal(first.shift.weight, other_seed.shift.weight)
    assert not first.training and not any(p.requires_grad for p in first.parameters())


def test_a_second_call_loads_the_cache_instead_of_training(tmp_path: Path, monkeypatch) -> None:
    trained = load_or_train_approximator(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    path = approximator_path(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    assert path.parent == tmp_path / "approximators" and path.exists() and path.with_suffix(".json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although an intact cache exists")

    monkeypatch.setattr(approximator_module, "train_approximator", no_training)
    loaded = load_or_train_approximator(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for name, weights in trained.state_dict().items():
        assert torch.equal(weights, loaded.state_dict()[name])


def test_the_key_is_the_transform_the_training_images_and_the_recipe(tmp_path: Path) -> None:
    path = approximator_path(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    assert approximator_path({**ONE_BIT, "bits": 2}, DIGITS, tmp_path, TINY_RECIPE) != path
    assert approximator_path(ONE_BIT, {**DIGITS, "image_size": 32}, tmp_path, TINY_RECIPE) != path
    assert approximator_path(ONE_BIT, DIGITS, tmp_path, {**TINY_RECIPE, "steps": 6}) != path
    # Every evaluation slice of digits trains on the same train split, so it shares the approximator.
    assert approximator_path(ONE_BIT, {**DIGITS, "n_samples": 50, "offset": 100}, tmp_path, TINY_RECIPE) == path
    # A partial recipe is completed from the defaults, so it names the same entry as the full one.
    assert approximator_path(ONE_BIT, DIGITS, tmp_path) == approximator_path(
        ONE_BIT, DIGITS, tmp_path, {"steps": DEFAULT_RECIPE.steps}
    )


@pytest.mark.parametrize("damage", ["truncate", "alter", "drop_sidecar", "other_recipe_in_sidecar"])
def test_a_damaged_cache_is_retrained_not_loaded(damage: str, tmp_path: Path, monkeypatch, caplog) -> None:
    load_or_train_approximator(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    path = approximator_path(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    sidecar = path.with_suffix(".json")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "alter":
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "drop_sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text(sidecar.read_text().replace('"steps": 5', '"steps": 7'))
    trainings = []
    monkeypatch.setattr(
        approximator_module,
        "train_approximator",
        lambda *args, **kwargs: trainings.append(1) or train_approximator(*args, **kwargs),
    )
    with caplog.at_level(logging.WARNING):
        load_or_train_approximator(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)
    assert trainings == [1] and "unusable, retraining" in caplog.text
    load_or_train_approximator(ONE_BIT, DIGITS, tmp_path, TINY_RECIPE)  # the retrained cache is intact again
    assert trainings == [1]


def test_a_dataset_without_a_train_split_trains_on_the_configs_images(tmp_path: Path, caplog) -> None:
    samples = {"_target_": "preempt.datasets.package_samples.cifar10_samples", "n_samples": 4, "offset": 0}
    with caplog.at_level(logging.INFO):
        model = load_or_train_approximator(ONE_BIT, samples, tmp_path, TINY_RECIPE)
    assert "has no train split" in caplog.text and "caching the approximator at" in caplog.text
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
