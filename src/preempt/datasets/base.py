"""The in-memory image dataset every loader returns, and the shared slicing rule."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from hydra.utils import get_object
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import Dataset

from preempt.parts.model import ModelSpec, spec_of

CIFAR10_SPEC = ModelSpec(input_shape=(3, 32, 32), num_classes=10)
DATASET_CONFIGS = Path(__file__).resolve().parents[3] / "conf" / "dataset"


class ImageDataset(Dataset):
    """Float images in [0,1] of shape (N, C, H, W), integer labels, and each sample's index in the source.

    The index travels with every sample so a run can seed and shard by sample, which keeps results
    identical across batch orders and process counts.
    """

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int, name: str, offset: int = 0) -> None:
        if images.dim() != 4:
            raise ValueError(f"{name}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        if len(images) and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"{name}: pixels must be in [0,1], got [{images.min():.3f}, {images.max():.3f}]")
        self.images = images.float().contiguous()
        self.labels = labels.long()
        self.indices = torch.arange(offset, offset + len(images))
        self.num_classes = num_classes
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.images[i], self.labels[i], self.indices[i]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, keep: Tensor) -> ImageDataset:
        """The samples where the boolean mask `keep` is true, each with its own index (which seeds it), so a
        sample's randomness is the same whichever others are kept."""
        kept = ImageDataset(self.images[keep], self.labels[keep], self.num_classes, self.name)
        kept.indices = self.indices[keep]
        return kept


def select_slice(available: int, n_samples: int | None, offset: int, name: str) -> slice:
    """The [offset, offset + n_samples) slice of a source holding `available` samples, validated."""
    if offset < 0 or offset >= max(available, 1):
        raise ValueError(f"{name}: offset={offset} is outside the {available} available samples")
    if n_samples is None:
        return slice(offset, available)
    if n_samples <= 0:
        raise ValueError(f"{name}: n_samples={n_samples} must be positive (or null for all)")
    if offset + n_samples > available:
        raise ValueError(
            f"{name}: offset={offset} + n_samples={n_samples} exceeds the {available} available samples; "
            f"lower dataset.n_samples or dataset.offset"
        )
    return slice(offset, offset + n_samples)


def dataset_options_of_shape(shape: tuple[int, ...]) -> list[str]:
    """The `dataset=` options whose images (at the option's own settings) have this (C, H, W) shape: what a
    model of that input shape can be run on."""
    options = []
    for path in sorted(DATASET_CONFIGS.glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("dataset", {})
        settings = {key: value for key, value in node.items() if not key.startswith("_")}
        spec = spec_of(get_object(node["_target_"]), settings) if "_target_" in node else None
        if spec is not None and tuple(spec.input_shape) == tuple(shape):
            options.append(path.stem)
    return options


def datasets_hint(shape: tuple[int, ...]) -> str:
    """Which `dataset=` options fit a model taking `shape` images, as a message ends it."""
    fitting = dataset_options_of_shape(shape)
    size = "×".join(map(str, shape))
    if not fitting:
        return f"no shipped dataset gives {size} images: use dataset=folder with images of that size"
    return f"datasets of {size} images: {', '.join(f'dataset={option}' for option in fitting)}"


def whole_training_split(dataset_config: dict) -> dict:
    """The dataset config of the loader's whole training split, where it has one; otherwise the config as given.

    What the project trains its own helpers on (A5's robustifier, the BPDA approximator): every evaluation slice
    of a dataset then shares one; g is public, so an attacker may apply it to any image, including those it attacks.
    """
    parameters = inspect.signature(get_object(dataset_config["_target_"])).parameters
    if "split" not in parameters:
        return dataset_config
    whole_split = {"split": "train", "n_samples": None, "offset": 0}
    return {**dataset_config, **{name: value for name, value in whole_split.items() if name in parameters}}
