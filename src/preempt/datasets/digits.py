"""scikit-learn's 1,797 real handwritten digits, upsampled so SSIM's 11-pixel window fits."""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from preempt.datasets.base import ImageDataset, select_slice
from preempt.parts.constraints import AtLeastOne, NonNegative
from preempt.parts.model import ModelSpec, declares_spec

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def split_indices(labels: Tensor) -> dict[str, Tensor]:
    """A fixed stratified train/test split (1,437 / 360); models train on one, runs evaluate on the other."""
    train, test = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION, stratify=labels.numpy(), random_state=SPLIT_SEED
    )
    return {"train": torch.as_tensor(train), "test": torch.as_tensor(test)}


@functools.lru_cache(maxsize=4)
def digits_split(split: str, image_size: int) -> tuple[Tensor, Tensor]:
    """Images in [0,1] of shape (N, 1, image_size, image_size) and labels of one split."""
    if split not in ("train", "test"):
        raise ValueError(f"digits split={split!r}; use 'train' or 'test'")
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    idx = split_indices(labels)[split]
    images = images[idx]
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1), labels[idx]


@declares_spec(lambda image_size=16, **settings: ModelSpec(input_shape=(1, image_size, image_size), num_classes=10))
def digits(
    split: Literal["train", "test"] = "test",
    image_size: AtLeastOne = 16,
    n_samples: AtLeastOne | None = None,
    offset: NonNegative = 0,
) -> ImageDataset:
    images, labels = digits_split(split, image_size)
    part = select_slice(len(labels), n_samples, offset, "digits")
    return ImageDataset(images[part], labels[part], num_classes=10, name=f"digits_{split}", offset=part.start)


# The split the digits zoo trains on: evaluating there is flagged (`preempt.validation.rules.dataset_warnings`).
digits.zoo_training_split = "train"
