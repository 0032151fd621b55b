"""The in-memory image dataset every loader returns, and the shared slicing rule."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


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
