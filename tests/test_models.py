import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import accuracy
from torch import nn

from preempt.checkpoints import CheckpointError
from preempt.evaluation import PreemptiveEvaluation
from preempt.models import GroundTruth, ImageShapeMismatchError, PixelClassifier, digits_zoo
from preempt.models.robustbench import CheckpointNotFoundError, load_robustbench_model


def test_pixel_classifier_is_frozen_normalizes_and_checks_shape() -> None:
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    model = PixelClassifier(network, name="toy", input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,))
    model.train()
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(3, 1, 2, 2)
    assert torch.allclose(model(x), network((x - 0.5) / 0.25))
    with pytest.raises(ImageShapeMismatchError, match=r"toy expects .* 1×2×2 .* got 3×2×2.*dataset=folder"):
        model(torch.rand(3, 3, 2, 2))


def test_digits_zoo_models_are_accurate(digits_models, digits_batch) -> None:
    x, y = digits_batch
    assert accuracy(digits_models["digits_cnn"], x, y) >= 0.95
    assert accuracy(digits_models["digits_mlp"], x, y) >= 0.9
    assert accuracy(digits_models["digits_cnn_at"], x, y) >= 0.85
    assert accuracy(digits_models["digits_lenet_at"], x, y) >= 0.8


def test_digits_zoo_is_deterministic_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = digits_zoo.digits_model("mlp", str(tmp_path / "a"), epochs=2)
    second = digits_zoo.digits_model("mlp", str(tmp_path / "b"), epochs=2)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(list((tmp_path / "a").glob("digits_mlp_std_*.pt"))) == 1

    def no_training(*args):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(digits_zoo, "_train", no_training)
    cached = digits_zoo.digits_model("mlp", str(tmp_path / "a"), epochs=2)
    assert torch.equal(cached.state_dict()["network.1.weight"], first.state_dict()["network.1.weight"])
    with pytest.raises(AssertionError, match="retrained"):  # another recipe is another cache key
        digits_zoo.digits_model("mlp", str(tmp_path / "a"), epochs=3)


def test_unknown_digits_architecture_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cnn"):
        digits_zoo.digits_model("resnet9000", str(tmp_path))


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


def test_ground_truth_cannot_be_the_victim(digits_models) -> None:
    from preempt.attacks.base import NoAttack
    from preempt.defenses.base import NoDefense

    with pytest.raises(TypeError, match="ground_truth, noisy_labels\\) can only be the classifier"):
        PreemptiveEvaluation(
            classifier=GroundTruth(),
            backbone=digits_models["digits_cnn_at"],
            victim=GroundTruth(),
            defense=NoDefense,
            attack=NoAttack,
            num_classes=10,
        )


def _damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def _damage_flip_a_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor's data: torch still loads the file, only the checksum sees it."""
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    data[largest.header_offset + largest.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def fresh_mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[PixelClassifier, Path]:
    """A tiny digits model trained once, and the cache folder it was written to."""
    folder = tmp_path_factory.mktemp("fresh_mlp")
    return digits_zoo.digits_model("mlp", str(folder), epochs=1), folder


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_damage_truncate, "truncated or corrupt"),
        (_damage_empty, "empty (0 bytes)"),
        (_damage_flip_a_tensor_byte, "sha256"),
    ],
)
def test_damaged_digits_cache_is_retrained_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_mlp, damage, reason: str
) -> None:
    fresh, fresh_dir = fresh_mlp
    shutil.copytree(fresh_dir, tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("digits_mlp_std_*.pt")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["recipe"]["epochs"] == 1 and sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    damage(path)

    with caplog.at_level(logging.WARNING, logger="preempt.models.digits_zoo"):
        model = digits_zoo.digits_model("mlp", str(tmp_path / "cache"), epochs=1)
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "retraining" in warning.getMessage()
    assert reason in warning.getMessage()
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    rewritten = json.loads(path.with_suffix(".json").read_text())  # both files rewritten, consistent again
    assert rewritten["recipe"] == sidecar["recipe"]
    assert rewritten["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


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
