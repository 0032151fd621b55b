"""RobustBench models offline: loaded from a placed checkpoint, tensors only, or refused in seconds naming the file."""

import os
import re
import time
from pathlib import Path

import pytest
import torch

from preempt.checkpoints import CheckpointError
from preempt.models import PixelClassifier
from preempt.models.robustbench import CheckpointNotFoundError, load_robustbench_model


def test_robustbench_model_loads_offline_from_a_placed_checkpoint(tmp_path: Path) -> None:
    """Put a checkpoint of the right architecture where RobustBench expects it; the real loader reads it."""
    from preempt.models.robustbench import _import_robustbench

    _, model_dicts, benchmark_dataset, threat = _import_robustbench()
    name = "Gowal2021Improving_R18_ddpm_100m"
    torch.manual_seed(0)
    architecture = model_dicts[benchmark_dataset("cifar10")][threat("Linf")][name]["model"]()
    path = tmp_path / "cifar10" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in architecture.state_dict().items()}}, path)

    model = load_robustbench_model(name, "cifar10", "Linf", str(tmp_path))
    assert isinstance(model, PixelClassifier) and not model.training
    for key, value in architecture.state_dict().items():
        assert torch.equal(model.network.state_dict()[key], value)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "dataset", "threat_model", "expected_file"),
    [
        ("Gowal2021Improving_R18_ddpm_100m", "cifar10", "Linf", "cifar10/Linf/Gowal2021Improving_R18_ddpm_100m.pt"),
        ("Tian2022Deeper_DeiT-B", "imagenet", "corruptions", "hub/checkpoints/tian2022deeper-deit-b.pth"),
    ],
)
def test_missing_checkpoint_fails_fast_naming_the_file(tmp_path, name, dataset, threat_model, expected_file) -> None:
    start = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError, match=re.escape(str(tmp_path / expected_file))):
        load_robustbench_model(name, dataset, threat_model, str(tmp_path))
    assert time.perf_counter() - start < 30


def test_unknown_robustbench_model_suggests_close_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Peng2023Robust"):
        load_robustbench_model("Peng2023Robst", "cifar10", "Linf", str(tmp_path))


UNPICKLED = []


class Payload:
    """Stands for any pickled object in a checkpoint: unpickling it runs this module's code."""

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append(self)
        self.__dict__.update(state)


@pytest.mark.parametrize(
    ("name", "dataset", "threat_model"),
    [("Gowal2021Improving_R18_ddpm_100m", "cifar10", "Linf"), ("Tian2022Deeper_DeiT-B", "imagenet", "corruptions")],
)
def test_robustbench_refuses_pickled_code_even_when_the_environment_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, dataset: str, threat_model: str
) -> None:
    from preempt.models.robustbench import checkpoint_path

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    path = checkpoint_path(name, dataset, threat_model, tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "args": Payload()}, path)
    UNPICKLED.clear()
    with pytest.raises(CheckpointError) as info:
        load_robustbench_model(name, dataset, threat_model, str(tmp_path))
    assert not UNPICKLED, "robustbench unpickled the checkpoint's objects"
    message = str(info.value)
    assert str(path) in message and "pickled Python objects" in message and f"{__name__}.Payload" in message
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in message
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    assert path.is_file()  # the user's file is theirs to convert


GOWAL = ("Gowal2021Improving_R18_ddpm_100m", "cifar10", "Linf")


def _html(path: Path) -> None:
    path.write_text("\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></html>")


def _truncated_checkpoint(path: Path) -> None:
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])


@pytest.mark.parametrize(("write", "problem"), [(_html, "web page"), (_truncated_checkpoint, "truncated or corrupt")])
def test_robustbench_checks_a_placed_checkpoint_before_loading(tmp_path: Path, write, problem: str) -> None:
    path = tmp_path / "cifar10" / "Linf" / f"{GOWAL[0]}.pt"
    path.parent.mkdir(parents=True)
    write(path)
    with pytest.raises(CheckpointError, match=re.escape(problem)) as info:
        load_robustbench_model(*GOWAL, str(tmp_path))
    assert str(path) in str(info.value)
    assert path.is_file()  # placed by the user: reported, not deleted


def test_robustbench_deletes_what_a_failed_download_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quota page saved as the checkpoint must not be taken for weights by the next run."""
    from preempt.models import robustbench

    utils = robustbench._import_robustbench()[0]
    monkeypatch.setattr(robustbench, "reachable", lambda url: True)
    monkeypatch.setattr(utils, "download_gdrive_new", lambda gdrive_id, fname_save: _html(Path(fname_save)))
    path = tmp_path / "cifar10" / "Linf" / f"{GOWAL[0]}.pt"
    with pytest.raises(CheckpointError, match="web page") as info:
        load_robustbench_model(*GOWAL, str(tmp_path))
    assert str(path) in str(info.value) and "deleted" in str(info.value)
    assert not path.exists()


def test_robustbench_refuses_a_checkpoint_with_non_finite_weights_naming_the_file(tmp_path: Path) -> None:
    """robustbench loads the file its own way; the loaded network's parameters and buffers are checked."""
    from preempt.models.robustbench import _import_robustbench, checkpoint_path

    _, model_dicts, benchmark_dataset, threat = _import_robustbench()
    state = model_dicts[benchmark_dataset("cifar10")][threat("Linf")][GOWAL[0]]["model"]().state_dict()
    buffer = next(key for key in state if key.endswith("running_var"))
    state[buffer][:3] = float("nan")
    path = checkpoint_path(*GOWAL, tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} holds non-finite weights: {buffer} has 3")):
        load_robustbench_model(*GOWAL, str(tmp_path))


def test_robustbench_refuses_a_folder_where_the_checkpoint_goes(tmp_path: Path) -> None:
    path = tmp_path / "cifar10" / "Linf" / f"{GOWAL[0]}.pt"
    path.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} is a folder, not a regular file")):
        load_robustbench_model(*GOWAL, str(tmp_path))
