"""`python -m preempt.commands.learn_score_model`: trains or loads the digits score model, scores and draws."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF_DIR, TEST_SCORE_MODEL
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from preempt.commands.learn_score_model import learn_score_model
from preempt.parts import ConfigError

pytestmark = pytest.mark.slow


def compose_command(tmp_path: Path, zoo_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="learn_score_model",
            overrides=[f"paths.cache_dir={zoo_dir}", f"purify.picture={tmp_path / 'purified.png'}", *overrides],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def test_the_command_scores_each_t_star_and_draws_one_row_each(
    tmp_path: Path, zoo_dir: Path, digits_score_model, digits_models, capsys
) -> None:
    cfg = compose_command(
        tmp_path, zoo_dir, *TEST_SCORE_MODEL, "purify.t_stars=[0.05,0.3]", "purify.images=5", "purify.scale=2",
        "dataset.n_samples=40",
    )  # fmt: skip
    accuracy = learn_score_model(cfg)
    assert list(accuracy) == [0.05, 0.3] and accuracy[0.05] >= 0.7 and accuracy[0.05] >= accuracy[0.3]
    picture = Image.open(tmp_path / "purified.png")
    assert picture.size == (5 * 17 * 2, 3 * 17 * 2)  # five images; the originals and two rows of purified ones
    assert "t* = 0.05" in capsys.readouterr().out


def test_the_command_refuses_another_receiver_defense(tmp_path: Path, zoo_dir: Path) -> None:
    with pytest.raises(ConfigError, match="receiver_defense=diffpure"):
        learn_score_model(compose_command(tmp_path, zoo_dir, "receiver_defense=jpeg"))
