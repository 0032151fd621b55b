"""Images in a folder named `<index>_<label>.<ext>`, the format the Fast Preemption reference code exchanges."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from preempt.datasets.base import ImageDataset, select_slice
from preempt.parts.constraints import AtLeastOne, NonNegative
from preempt.threat import to_8bit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
NAME_PATTERN = re.compile(r"^(?:.*_)?(\d+)_(\d+)$")
CHANNEL_MODES = {1: "L", 3: "RGB"}


def labelled_files(paths: Iterable[Path]) -> list[tuple[int, int, Path]]:
    """(index, label, path) for every `<...>_<index>_<label>.<ext>` image, sorted by index."""
    entries = []
    for path in paths:
        match = NAME_PATTERN.match(path.stem)
        if path.suffix.lower() in IMAGE_SUFFIXES and match:
            entries.append((int(match.group(1)), int(match.group(2)), path))
    entries.sort(key=lambda entry: (entry[0], str(entry[2])))
    # The index is the sample's identity (seeding, sharding, slicing), so two files sharing one is ambiguous.
    for (index, _, first), (next_index, _, second) in itertools.pairwise(entries):
        if index == next_index:
            raise ValueError(
                f"{first} and {second} share index {index}; each image needs a unique `<index>` in its name, "
                f"so rename or remove one of them"
            )
    return entries


def read_image(path: Path, channels: int) -> torch.Tensor:
    """One image as (C, H, W) floats in [0,1].

    16-bit images are scaled by 65535 since `convert` would clip them to white; `load` runs inside the
    `try` because Pillow decodes lazily, so truncated files only fail there.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):
                pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535)
                return pixels.expand(channels, *pixels.shape).clone()
            return TF.to_tensor(image.convert(CHANNEL_MODES[channels]))
    except (OSError, SyntaxError) as error:
        raise ValueError(
            f"{path} is unreadable or corrupt ({error}); remove or replace it with a valid image"
        ) from error


def load_images(files: list[Path], channels: int, image_size: int | None, resize_to: int | None = None) -> torch.Tensor:
    """Read images as (N, C, H, W) floats in [0,1]; optional resize of the short side then center crop.

    A resized image is put back on the 8-bit grid, as the photo saved at that size would be: then an 8-bit
    transmission of its protection (`transmit_8bit`) stays within a budget of whole levels (4/255)."""
    if channels not in CHANNEL_MODES:
        raise ValueError(f"dataset.channels={channels} is not supported; use 1 (grayscale) or 3 (RGB)")
    tensors = []
    for path in files:
        tensor = read_image(path, channels)
        size = f"{tensor.shape[2]}x{tensor.shape[1]}"
        if resize_to is not None:
            tensor = to_8bit(TF.resize(tensor, resize_to, antialias=True).clamp(0, 1))
            size += f" ({tensor.shape[2]}x{tensor.shape[1]} after dataset.resize_to={resize_to})"
        if image_size is not None:
            # torchvision's center_crop zero-pads a crop larger than the image, which would add fake black borders.
            if image_size > min(tensor.shape[1:]):
                raise ValueError(
                    f"{path} is {size} (WxH), smaller than dataset.image_size={image_size}; set "
                    f"dataset.resize_to to at least {image_size} to resize first, or lower dataset.image_size"
                )
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
    num_classes: AtLeastOne,
    channels: Literal[1, 3] = 3,
    image_size: AtLeastOne | None = None,
    resize_to: AtLeastOne | None = None,
    n_samples: AtLeastOne | None = None,
    offset: NonNegative = 0,
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
