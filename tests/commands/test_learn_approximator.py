"""`python -m preempt.commands.learn_approximator`: trains the approximator a run would load, prints its fidelity."""

import dataclasses
from pathlib import Path

import pytest
from conftest import CONF_DIR, run_main
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from preempt.commands.learn_approximator import learn_approximator, main
from preempt.parts import ConfigError
from preempt.zoo.approximators import DEFAULT_RECIPE

TINY_RECIPE = {"layers": 2, "growth": 4, "steps": 5, "batch_size": 16, "lr": 1e-2, "seed": 0}


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


def test_the_command_caches_the_approximator_and_prints_its_fidelity(tmp_path: Path, capfd) -> None:
    arguments = [
        "receiver_defense=dct_distortion",
        "dataset=digits",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path}",
        *(f"approximator.{name}={value}" for name, value in TINY_RECIPE.items()),
    ]
    assert run_main(arguments, main) == 0
    printed = capfd.readouterr().out
    assert "on 200 held-out images of digits_test" in printed
    for row in ("approximator", "identity (naive BPDA)", "g itself, another draw"):
        assert any(line.startswith(row) and len(line.split()) >= 3 for line in printed.splitlines())
    path = Path(printed.strip().splitlines()[-1].removeprefix("approximator: "))
    assert path.exists() and path.parent == tmp_path / "approximators"
