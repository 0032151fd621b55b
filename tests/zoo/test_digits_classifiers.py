"""The digits zoo: accurate, deterministic, cached by recipe, and retrained (not loaded) when damaged."""

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import accuracy

from preempt.models import PixelClassifier
from preempt.zoo import digits_classifiers


def test_digits_zoo_models_are_accurate(digits_models, digits_batch) -> None:
    x, y = digits_batch
    assert accuracy(digits_models["digits_cnn"], x, y) >= 0.95
    assert accuracy(digits_models["digits_mlp"], x, y) >= 0.9
    assert accuracy(digits_models["digits_cnn_at"], x, y) >= 0.85
    assert accuracy(digits_models["digits_lenet_at"], x, y) >= 0.8


def test_digits_zoo_is_deterministic_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = digits_classifiers.digits_model("mlp", str(tmp_path / "a"), epochs=2)
    second = digits_classifiers.digits_model("mlp", str(tmp_path / "b"), epochs=2)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(list((tmp_path / "a").glob("digits_mlp_std_*.pt"))) == 1

    def no_training(*args):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(digits_classifiers, "_train", no_training)
    cached = digits_classifiers.digits_model("mlp", str(tmp_path / "a"), epochs=2)
    assert torch.equal(cached.state_dict()["network.1.weight"], first.state_dict()["network.1.weight"])
    with pytest.raises(AssertionError, match="retrained"):  # another recipe is another cache key
        digits_classifiers.digits_model("mlp", str(tmp_path / "a"), epochs=3)


def test_unknown_digits_architecture_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cnn"):
        digits_classifiers.digits_model("resnet9000", str(tmp_path))


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
    return digits_classifiers.digits_model("mlp", str(folder), epochs=1), folder


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

    with caplog.at_level(logging.WARNING, logger="preempt.checkpoints"):
        model = digits_classifiers.digits_model("mlp", str(tmp_path / "cache"), epochs=1)
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "retraining" in warning.getMessage()
    assert reason in warning.getMessage()
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    rewritten = json.loads(path.with_suffix(".json").read_text())  # both files rewritten, consistent again
    assert rewritten["recipe"] == sidecar["recipe"]
    assert rewritten["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
