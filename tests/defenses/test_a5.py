"""A5's robustifier: the formula, the authors' checkpoint format, failures that name the file, and our R."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, accuracy, assert_in_budget
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from preempt.checkpoints import CheckpointError
from preempt.defenses import a5 as a5_module
from preempt.defenses.a5 import A5, Robustifier, RobustifierRecipe, load_or_train_robustifier
from preempt.defenses.learn_robustifier import learn_robustifier
from preempt.validation import ConfigError, validate_config

CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def saved_robustifier(path: Path, channels: int = 3, width: int = 64, kernel_size: int = 5) -> Robustifier:
    """A random R saved as the authors save theirs: {"state_dict": ..., "epoch": ...}."""
    torch.manual_seed(0)
    robustifier = Robustifier(channels, width, kernel_size)
    torch.save({"state_dict": robustifier.state_dict(), "epoch": 99}, path)
    return robustifier


def test_adapter_computes_the_robustifier_formula(tmp_path: Path) -> None:
    robustifier = saved_robustifier(tmp_path / "robustifier_best", width=8)
    eps = [0.03, 0.05, 0.02]
    defense = A5(eps=eps, checkpoint=str(tmp_path / "robustifier_best"), width=8, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    x = torch.rand(4, 3, 12, 12)
    mean, std, budget = (torch.tensor(v).view(1, 3, 1, 1) for v in (CIFAR10_MEAN, CIFAR10_STD, eps))
    with torch.no_grad():
        z = robustifier((x - mean) / std)
    expected = (x + budget * (2 * torch.sigmoid(z) - 1)).clamp(0, 1)
    protected = defense(x, torch.zeros(4).long())
    torch.testing.assert_close(protected, expected)
    assert ((protected - x).abs() <= budget + 1e-6).all()  # each channel within its own eps
    assert not protected.requires_grad


def test_checkpoint_of_another_architecture_names_the_file_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "robustifier_best"
    saved_robustifier(path, width=32)
    with pytest.raises(CheckpointError, match=re.escape(str(path))) as info:
        A5(eps=8 / 255, checkpoint=str(path))
    assert "(32, 3, 5, 5) in the file, (64, 3, 5, 5) expected" in str(info.value)
    assert "defense.width" in str(info.value)


def test_file_that_is_no_robustifier_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "classifier_best"
    torch.save({"state_dict": {"0.weight": torch.zeros(64, 3, 3, 3)}}, path)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} is not an A5 robustifier")):
        A5(eps=8 / 255, checkpoint=str(path))


def test_missing_checkpoint_is_refused_by_the_config_check_naming_the_file(compose_config, tmp_path: Path) -> None:
    missing = tmp_path / "a5" / "robustifier_best"
    cfg = compose_config("defense=a5", f"defense.checkpoint={missing}")
    with pytest.raises(ConfigError, match=re.escape(f"defense: checkpoint {missing} does not exist")):
        validate_config(cfg)


def test_refuses_other_norms_and_unpaired_normalization() -> None:
    with pytest.raises(ValueError, match=r"set threat\.norm=Linf"):
        A5(eps=0.5, norm="L2")
    with pytest.raises(ValueError, match="give both"):
        A5(eps=0.1, mean=[0.5])
    with pytest.raises(ValueError, match=r"unset them, or set defense\.checkpoint"):
        A5(eps=0.1, mean=[0.5], std=[0.2])
    with pytest.raises(ValueError, match="one eps for all channels"):
        A5(eps=[0.1, 0.2, 0.1])


def test_channel_mismatch_says_what_to_use(tmp_path: Path) -> None:
    saved_robustifier(tmp_path / "r.pt", channels=3, width=4)
    defense = A5(eps=0.1, checkpoint=str(tmp_path / "r.pt"), width=4)
    with pytest.raises(ValueError, match="takes 3-channel images and these have 1"):
        defense(torch.rand(2, 1, 8, 8), torch.zeros(2).long())


@pytest.fixture(scope="module")
def learned(zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The learn_robustifier command on the default digits config: trains R into the session zoo once (a run with
    defense=a5 then loads it) and reports the backbone's accuracy on the held-out images."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="learn_robustifier", overrides=[f"paths.cache_dir={zoo_dir}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path_factory.mktemp("learn_robustifier"))
    return learn_robustifier(cfg)


def test_learned_robustifier_makes_the_backbone_robust_on_held_out_digits(learned: dict[str, float]) -> None:
    assert learned["R's output, clean"] >= learned["x, clean"] - 0.02
    assert learned["R's output, attacked"] >= learned["x, attacked"] + 0.2


def test_learned_robustifier_is_cached_and_stays_in_budget(
    learned: dict[str, float], zoo_dir: Path, digits_models, digits_batch, compose_config, monkeypatch
) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("the cached robustifier was retrained")

    monkeypatch.setattr(a5_module, "train_robustifier", no_training)
    cfg = OmegaConf.to_container(compose_config("defense=a5"), resolve=True)
    defense = A5(**{key: value for key, value in cfg["defense"].items() if not key.startswith("_")})
    backbone = digits_models["digits_cnn_at"]
    robustifier = load_or_train_robustifier(defense, backbone, cfg["backbone"], cfg["dataset"], zoo_dir)
    x, y = digits_batch
    protected = A5(eps=0.2, robustifier=robustifier)(x, y)
    assert_in_budget(protected, x, 0.2, "Linf")
    assert accuracy(backbone, protected, y) >= accuracy(backbone, x, y)


def test_command_recipe_is_the_one_a_run_uses() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="learn_robustifier")
    assert OmegaConf.to_container(cfg.robustifier) == dataclasses.asdict(RobustifierRecipe())


def test_command_refuses_a_bad_recipe_key_and_a_loaded_robustifier(zoo_dir: Path, tmp_path: Path) -> None:
    def command(*overrides: str) -> None:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="learn_robustifier", overrides=[f"paths.cache_dir={zoo_dir}", *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        learn_robustifier(cfg)

    with pytest.raises(ConfigError, match=r"robustifier\.epochs=0"):
        command("robustifier.epochs=0")
    saved_robustifier(tmp_path / "r.pt", channels=1)
    with pytest.raises(ConfigError, match=r"drop defense\.checkpoint"):
        command(f"defense.checkpoint={tmp_path / 'r.pt'}")
