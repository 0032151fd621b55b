"""Checks against the loaded dataset and the built models: shapes, class counts and budgets, before any work."""

from pathlib import Path

import pytest
import torch
from conftest import refusal
from PIL import Image
from torch import nn

from preempt.datasets.base import ImageDataset
from preempt.models import PixelClassifier
from preempt.parts import ConfigError
from preempt.validation import check_models_fit_dataset


def write_digit_folder(folder: Path, labels: list[int], size: int = 16, channels: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mode = "L" if channels == 1 else "RGB"
    for index, label in enumerate(labels):
        Image.new(mode, (size, size), color=index * 10).save(folder / f"{index}_{label}.png")
    return folder


def test_models_with_another_class_count_are_refused_before_they_are_built(
    compose_config, tmp_path: Path, no_model_building
) -> None:
    """Labels up to 49 and digits models with 10 outputs: once ran to 0.000 accuracy, or IndexError under PGD."""
    root = write_digit_folder(tmp_path / "fifty", labels=[3, 49, 12, 7])
    cfg = compose_config("dataset=folder", f"dataset.root={root}", "dataset.num_classes=50", "dataset.channels=1")
    message = refusal(cfg)
    assert "outputs 10 classes" in message and "has 50" in message and "dataset.num_classes" in message


def test_models_for_other_images_are_refused_before_they_are_built(compose_config, no_model_building) -> None:
    message = refusal(compose_config("dataset=cifar10_samples"))
    assert "takes 1×16×16 images" in message and "gives 3×32×32" in message
    # The hint names what fits the model, not the dataset already in use.
    assert "datasets of 1×16×16 images: dataset=digits)" in message and "dataset=cifar10_samples" not in message


def test_a_built_model_is_tried_on_one_image_for_its_class_count() -> None:
    """Models whose config declares nothing (your own `_target_`) are checked once built."""
    five_classes = PixelClassifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)), name="five", input_shape=(1, 4, 4))
    dataset = ImageDataset(torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]), num_classes=10, name="toy")
    with pytest.raises(ConfigError, match=r"victim five outputs 5 classes but dataset toy has 10"):
        check_models_fit_dataset({"victim": five_classes}, dataset)
    with pytest.raises(ConfigError, match=r"fails on one toy image"):
        check_models_fit_dataset(
            {"victim": five_classes}, ImageDataset(torch.rand(3, 1, 5, 5), torch.zeros(3), 10, "toy")
        )


def test_l2_budgets_beyond_the_image_are_refused(compose_config, no_model_building) -> None:
    message = refusal(compose_config("threat.norm=L2", "threat.eps=40", "attack=pgd"))
    assert "largest L2 distance between two 1×16×16 images" in message


def test_models_for_other_images_are_refused_from_the_declared_shape_without_the_data(compose_config) -> None:
    """What a paper-scale plan checks offline: CIFAR-10's shape is declared, its files need not be there."""
    from omegaconf import OmegaConf

    from preempt.validation import check_parts_fit_declared_dataset

    def container(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_config(*overrides), resolve=True)

    with pytest.raises(ConfigError, match=r"backbone digits_model takes 1×16×16 images .* dataset cifar10 gives"):
        check_parts_fit_declared_dataset(container("dataset=cifar10", "classifier=ground_truth"))
    models = ("classifier=autoattack_resnet18", "backbone=autoattack_resnet18", "victim=autoattack_resnet18")
    check_parts_fit_declared_dataset(container("dataset=cifar10", *models))
    check_parts_fit_declared_dataset(container("dataset=folder"))  # its shape is known once it is read
