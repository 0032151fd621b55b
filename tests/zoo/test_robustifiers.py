"""A5's robustifier as the project trains it: it makes the backbone robust, it is cached, it keeps the budget."""

from pathlib import Path

import pytest
from conftest import accuracy, assert_in_budget
from omegaconf import OmegaConf

from preempt.defenses.a5 import A5
from preempt.parts import ConfigError
from preempt.validation import read_section
from preempt.zoo import robustifiers
from preempt.zoo.robustifiers import RobustifierRecipe, RobustifierShape, full_recipe, load_or_train_robustifier


def test_the_learned_robustifier_makes_the_backbone_robust_on_held_out_digits(learned_robustifier) -> None:
    assert learned_robustifier["R's output, clean"] >= learned_robustifier["x, clean"] - 0.02
    assert learned_robustifier["R's output, attacked"] >= learned_robustifier["x, attacked"] + 0.2


def test_the_learned_robustifier_is_cached_and_stays_in_budget(
    learned_robustifier, zoo_dir: Path, digits_models, digits_batch, compose_config, monkeypatch
) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("the cached robustifier was retrained")

    monkeypatch.setattr(robustifiers, "train_robustifier", no_training)
    cfg = OmegaConf.to_container(compose_config("defense=a5"), resolve=True)
    shape = RobustifierShape(cfg["defense"]["eps"], cfg["defense"]["width"], cfg["defense"]["kernel_size"])
    backbone = digits_models["digits_cnn_at"]
    robustifier = load_or_train_robustifier(shape, backbone, cfg["backbone"], cfg["dataset"], zoo_dir)
    x, y = digits_batch
    protected = A5(eps=0.2, robustifier=robustifier)(x, y)
    assert_in_budget(protected, x, 0.2, "Linf")
    assert accuracy(backbone, protected, y) >= accuracy(backbone, x, y)


def test_the_key_is_the_backbone_the_training_split_the_shape_and_the_recipe(compose_config) -> None:
    cfg = OmegaConf.to_container(compose_config("defense=a5"), resolve=True)
    shape = RobustifierShape(0.2, 64, 5)
    key = full_recipe(shape, cfg["backbone"], cfg["dataset"])
    assert key != full_recipe(RobustifierShape(0.1, 64, 5), cfg["backbone"], cfg["dataset"])
    assert key != full_recipe(shape, {**cfg["backbone"], "seed": 1}, cfg["dataset"])
    assert key != full_recipe(shape, cfg["backbone"], cfg["dataset"], {"epochs": 3})
    # Every slice of the test split trains on the same train split, and the folders files live in are no part of it.
    assert key == full_recipe(shape, cfg["backbone"], {**cfg["dataset"], "n_samples": 7, "offset": 3})
    assert key == full_recipe(shape, {**cfg["backbone"], "cache_dir": "/elsewhere"}, cfg["dataset"])
    assert key["training_images"]["split"] == "train"


def test_a_recipe_seed_below_zero_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"robustifier\.seed=-1: Value error, a seed is an integer from 0 to"):
        read_section(RobustifierRecipe, {"seed": -1}, "robustifier")
