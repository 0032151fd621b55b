"""The BPDA approximator: a [0,1]-valued auto-encoder with gradients, that learns g, cached like the digits zoo."""

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, ROOT
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from preempt.attacks import approximator as approximator_module
from preempt.attacks.approximator import (
    DEFAULT_RECIPE,
    DenseAutoEncoder,
    approximation_fidelity,
    approximator_path,
    load_or_train_approximator,
    train_approximator,
)
from preempt.attacks.learn_approximator import learn_approximator
from preempt.datasets.digits import digits
from preempt.receiver_defenses.base import Identity
from preempt.receiver_defenses.bit_depth import BitDepth
from preempt.receiver_defenses.dct_distortion import DCTDistortion
from preempt.validation import ConfigError

TINY_RECIPE = {"layers": 2, "growth": 4, "steps": 5, "batch_size": 16, "lr": 1e-2, "seed": 0}
DIGITS = {
    "_target_": "preempt.datasets.digits.digits",
    "split": "test",
    "image_size": 16,
    "n_samples": 200,
    "offset": 0,
}
ONE_BIT = {"_target_": "preempt.receiver_defenses.bit_depth.BitDepth", "bits": 1}


def randomized(model: DenseAutoEncoder) -> DenseAutoEncoder:
    """The AE with a last layer far from its identity start, so the shifts reach toward ±1."""
    torch.manual_seed(0)
    nn.init.normal_(model.shift.weight, std=3.0)
    nn.init.normal_(model.shift.bias, std=3.0)
    return model


@pytest.mark.parametrize(("channels", "height", "width"), [(1, 16, 16), (3, 7, 13), (1, 1, 5), (3, 32, 32)])
def test_output_keeps_the_shape_and_stays_in_the_unit_range(channels: int, height: int, width: int) -> None:
    model = DenseAutoEncoder(channels)
    x = torch.rand(4, channels, height, width)
    x[0] = 0.0
    x[1] = 1.0
    assert torch.equal(model(x), x)  # untrained: the identity, the naive BPDA approximation
    out = randomized(model)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().max() > 0.5


def test_gradients_reach_the_input_of_a_frozen_approximator(digits_batch) -> None:
    model = randomized(DenseAutoEncoder(1, layers=3, growth=4)).eval().requires_grad_(False)
    x = digits_batch[0][:8].clone().requires_grad_(True)
    model(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.9  # black and white pixels included: nothing is squashed flat


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


def test_fidelity_of_g_itself_is_perfect(digits_batch) -> None:
    fidelity = approximation_fidelity(nn.Identity(), Identity(), digits_batch[0])
    assert fidelity == pytest.approx({"normalized_l2": 0.0, "ssim": 1.0})


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
    assert "has no train split" in caplog.text and "cached the approximator at" in caplog.text
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def compose_command_config(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="learn_approximator", overrides=[f"paths.cache_dir={tmp_path}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "output")
    return cfg


def test_the_commands_recipe_is_the_default_recipe_a_run_uses(tmp_path: Path) -> None:
    cfg = compose_command_config(tmp_path)
    assert OmegaConf.to_container(cfg.approximator) == dataclasses.asdict(DEFAULT_RECIPE)
    assert cfg.receiver_defense._target_.endswith("DCTDistortion")


def test_the_command_prints_the_fidelity_beside_the_identitys(tmp_path: Path, capsys) -> None:
    overrides = [f"approximator.{name}={value}" for name, value in TINY_RECIPE.items()]
    fidelity = learn_approximator(compose_command_config(tmp_path, "receiver_defense=bit_depth", *overrides))
    printed = capsys.readouterr().out
    assert list(fidelity) == ["approximator", "identity (naive BPDA)"]  # a deterministic g: no second draw
    assert "receiver_defense=BitDepth, on 200 held-out images of digits_test" in printed
    assert f"{fidelity['approximator']['normalized_l2']:.3f}" in printed
    assert printed.strip().endswith(".pt") and len(list((tmp_path / "approximators").glob("*.pt"))) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("approximator.steps=0", r"approximator\.steps=0: Input should be greater than or equal to 1"),
        ("+approximator.depth=3", r"approximator\.depth=3: Unexpected keyword argument"),
        ("receiver_defense=none", "receiver_defense=Identity is differentiable"),
    ],
)
def test_the_command_refuses_before_training(override: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        learn_approximator(compose_command_config(tmp_path, override))
    assert not (tmp_path / "approximators").exists()


@pytest.mark.slow
def test_the_command_caches_the_approximator_and_prints_its_fidelity(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "preempt.attacks.learn_approximator",
        "receiver_defense=dct_distortion",
        "dataset=digits",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path}",
        *(f"approximator.{name}={value}" for name, value in TINY_RECIPE.items()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "on 200 held-out images of digits_test" in done.stdout
    for row in ("approximator", "identity (naive BPDA)", "g itself, another draw"):
        assert any(line.startswith(row) and len(line.split()) >= 3 for line in done.stdout.splitlines())
    path = Path(done.stdout.strip().splitlines()[-1].removeprefix("approximator: "))
    assert path.exists() and path.parent == tmp_path / "approximators"
