"""torchvision's CIFAR-10 test split: downloaded when the network allows, a clear error offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from preempt.datasets.base import CIFAR10_SPEC, ImageDataset, select_slice
from preempt.network import reachable, socket_timeout
from preempt.parts.model import declares_spec


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not on disk and could not be downloaded."""


@declares_spec(lambda **settings: CIFAR10_SPEC)
def cifar10(data_dir: str, n_samples: int | None = 1000, offset: int = 0, download: bool = True) -> ImageDataset:
    """The test split under `data_dir`; the paper evaluates two disjoint slices of 1,000 (offset 0 and 1000)."""
    from torchvision.datasets import CIFAR10

    root = Path(data_dir)
    try:
        dataset = CIFAR10(root=str(root), train=False, download=False)
    except RuntimeError:
        dataset = _download(root) if download else None
    if dataset is None:
        raise DatasetNotFoundError(
            f"CIFAR-10 is not in {root} (torchvision expects {root / 'cifar-10-batches-py'}). Copy the "
            f"extracted 'cifar-10-python.tar.gz' there, set paths.data_dir, or run once with network access."
        )
    part = select_slice(len(dataset.targets), n_samples, offset, "cifar10")
    images = torch.from_numpy(np.ascontiguousarray(dataset.data[part])).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.tensor(dataset.targets[part])
    return ImageDataset(images, labels, num_classes=10, name="cifar10", offset=part.start)


def _download(root: Path):
    """Try torchvision's download after a bounded probe of its server, with a socket timeout, so a dead or stalled
    network fails in seconds, not minutes or never."""
    from torchvision.datasets import CIFAR10

    if not reachable(CIFAR10.url):
        return None
    try:
        with socket_timeout():
            return CIFAR10(root=str(root), train=False, download=True)
    except OSError:
        return None
