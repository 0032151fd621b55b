"""A5's robustifier adapter: the formula, the authors' checkpoint format, and failures that name the file or fix."""

import re
from pathlib import Path

import pytest
import torch

from preempt.assembly import Assembly
from preempt.checkpoints import CheckpointError
from preempt.defenses.a5 import A5, Robustifier
from preempt.parts import ConfigError
from preempt.validation import validate_config

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


def test_a_robustifier_for_other_images_is_refused_when_bound_before_any_image_is_protected(
    compose_config, tmp_path: Path
) -> None:
    saved_robustifier(tmp_path / "r.pt", channels=3, width=4)
    cfg = compose_config("defense=a5", f"defense.checkpoint={tmp_path / 'r.pt'}", "defense.width=4")
    with pytest.raises(ConfigError, match=r"defense=\w+: the A5 robustifier takes 3-channel images and these have 1"):
        Assembly(cfg).defense(torch.nn.Identity(), image_shape=(1, 16, 16))


def test_only_a5_without_a_checkpoint_is_given_the_projects_robustifier() -> None:
    assert A5.models_to_bind({"checkpoint": None, "robustifier": None}) == ("robustifier",)
    assert A5.models_to_bind({"checkpoint": "robustifier_best", "robustifier": None}) == ()
