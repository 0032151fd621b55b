"""`python -m preempt.commands.learn_robustifier`: trains A5's R a run would load and reports what it learned."""

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from preempt.commands.learn_robustifier import learn_robustifier
from preempt.defenses.a5 import Robustifier
from preempt.parts import ConfigError
from preempt.zoo.robustifiers import RobustifierRecipe


def test_the_command_reports_the_backbone_on_x_and_on_rs_output_clean_and_attacked(learned_robustifier) -> None:
    assert list(learned_robustifier) == ["x, clean", "x, attacked", "R's output, clean", "R's output, attacked"]
    assert all(0 <= value <= 1 for value in learned_robustifier.values())


def test_the_commands_recipe_is_the_one_a_run_uses() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="learn_robustifier")
    assert OmegaConf.to_container(cfg.robustifier) == dataclasses.asdict(RobustifierRecipe())


def test_the_command_refuses_a_bad_recipe_key_and_a_loaded_robustifier(zoo_dir: Path, tmp_path: Path) -> None:
    def command(*overrides: str) -> None:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="learn_robustifier", overrides=[f"paths.cache_dir={zoo_dir}", *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        learn_robustifier(cfg)

    with pytest.raises(ConfigError, match=r"robustifier\.epochs=0"):
        command("robustifier.epochs=0")
    torch.save({"state_dict": Robustifier(1).state_dict()}, tmp_path / "r.pt")
    with pytest.raises(ConfigError, match=r"drop defense\.checkpoint"):
        command(f"defense.checkpoint={tmp_path / 'r.pt'}")
