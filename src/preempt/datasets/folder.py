"""Images in a folder named `<index>_<label>.<ext>`, the format the Fast Preemption reference code exchanges."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from preempt.datasets.base import ImageDataset, select_slice

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
NAME_PATTERN = re.compile(r"^(?:.*_)?(\d+)_(\d+)$")


def labelled_files(paths: Iterable[Path]) -> list[tuple[int, int, Path]]:
    """(index, label, path) for every `<...>_<index>_<label>.<ext>` image, sorted by index."""
    entries = []
    for path in paths:
        match = NAME_PATTERN.match(path.stem)
        if path.suffix.lower() in IMAGE_SUFFIXES and match:
            entries.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(entries, key=lambda entry: entry[0])


def load_images(files: list[Path], channels: int, image_size: int | None, resize_to: int | None = None) -> torch.Tensor:
    """Read images as (N, C, H, W) floats in [0,1]; optional resize of the short side then center crop."""
    mode = {1: "L", 3: "RGB"}[channels]
    tensors = []
    for path in files:
        with Image.open(path) as image:
            tensor = TF.to_tensor(image.convert(mode))
        if resize_to is not None:
            tensor = TF.resize(tensor, resize_to, antialias=True)
        if image_size is not None:
            tensor = TF.center_crop(tensor, image_size)
        tensors.append(tensor)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(
            f"images have different sizes {sorted(shapes)}; set dataset.image_size to center-crop them "
            f"(and dataset.resize_to to resize first)"
        )
    return torch.stack(tensors).clamp(0, 1)


def folder(
    root: str,
    num_classes: int,
    channels: int = 3,
    image_size: int | None = None,
    resize_to: int | None = None,
    n_samples: int | None = None,
    offset: int = 0,
) -> ImageDataset:
    directory = Path(root)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset.root={root} is not a folder of `<index>_<label>.png` images")
    entries = labelled_files(directory.iterdir())
    if not entries:
        raise FileNotFoundError(f"no images named `<index>_<label>.<ext>` in {directory}")
    part = select_slice(len(entries), n_samples, offset, f"folder {directory}")
    entries = entries[part]
    labels = torch.tensor([label for _, label, _ in entries])
    if labels.max() >= num_classes:
        raise ValueError(f"label {int(labels.max())} in {directory} is >= dataset.num_classes={num_classes}")
    images = load_images([path for _, _, path in entries], channels, image_size, resize_to)
    return ImageDataset(images, labels, num_classes=num_classes, name=f"folder:{directory.name}", offset=part.start)
