import re
import time
from pathlib import Path

import pytest
import torch
from conftest import accuracy
from torch import nn

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
    with pytest.raises(ImageShapeMismatchError, match=r"toy expects images of shape 1×2×2 .* got 3×2×2"):
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

    with pytest.raises(TypeError, match="ground_truth can only be the classifier"):
        PreemptiveEvaluation(
            classifier=GroundTruth(),
            backbone=digits_models["digits_cnn_at"],
            victim=GroundTruth(),
            defense=NoDefense,
            attack=NoAttack,
            num_classes=10,
        )
