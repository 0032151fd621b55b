"""The real CIFAR-10 and ImageNet test images shipped inside the foolbox wheel (20 each)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from preempt.datasets.base import CIFAR10_SPEC, ImageDataset, select_slice
from preempt.datasets.folder import labelled_files, load_images
from preempt.files import installed_package_dir
from preempt.parts.constraints import AtLeastOne, NonNegative
from preempt.parts.model import ModelSpec, declares_spec


def foolbox_data_dir() -> Path:
    return installed_package_dir("foolbox", "the sample images") / "data"


def _samples(prefix: str, n_samples: int | None, offset: int, **load_args) -> tuple[torch.Tensor, torch.Tensor, int]:
    files = [path for path in foolbox_data_dir().iterdir() if path.name.startswith(f"{prefix}_")]
    entries = labelled_files(files)
    part = select_slice(len(entries), n_samples, offset, f"{prefix}_samples")
    entries = entries[part]
    images = load_images([path for _, _, path in entries], channels=3, **load_args)
    return images, torch.tensor([label for _, label, _ in entries]), part.start


@declares_spec(lambda **settings: CIFAR10_SPEC)
def cifar10_samples(n_samples: AtLeastOne | None = None, offset: NonNegative = 0) -> ImageDataset:
    images, labels, start = _samples("cifar10", n_samples, offset, image_size=None)
    return ImageDataset(images, labels, num_classes=10, name="cifar10_samples", offset=start)


@declares_spec(lambda image_size=224, **settings: ModelSpec((3, image_size, image_size), 1000))
def imagenet_samples(
    n_samples: AtLeastOne | None = None, offset: NonNegative = 0, image_size: AtLeastOne = 224
) -> ImageDataset:
    images, labels, start = _samples("imagenet", n_samples, offset, image_size=image_size, resize_to=image_size)
    return ImageDataset(images, labels, num_classes=1000, name="imagenet_samples", offset=start)


def export_samples(prefix: str, folder: Path) -> list[Path]:
    """Copy the shipped `<prefix>_<index>_<label>` files into `folder` (to try `preempt protect` on real images)."""
    sources = sorted(path for path in foolbox_data_dir().iterdir() if path.name.startswith(f"{prefix}_"))
    if not sources:
        raise FileNotFoundError(f"no {prefix}_* sample files in {foolbox_data_dir()}; prefixes: cifar10, imagenet")
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(source, folder / source.name)) for source in sources]
