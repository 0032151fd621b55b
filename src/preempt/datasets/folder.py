"""Images in a folder named `<index>_<label>.<ext>`, the format the Fast Preemption reference code exchanges."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from preempt.datasets.base import ImageDataset, select_slice
from preempt.parts import ConfigError
from preempt.parts.constraints import AtLeastOne, NonNegative
from preempt.threat import to_8bit

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
# Signed, so that `0_-1.png` is refused as a negative label rather than passed over as a stranger's file.
NAME_PATTERN = re.compile(r"^(?:.*_)?(-?\d+)_(-?\d+)$")
NAME_FORM = "`<index>_<label>.<ext>`"
NAMING = f"{NAME_FORM} (e.g. 0_3.png; <ext> one of {', '.join(sorted(IMAGE_SUFFIXES))})"
CHANNEL_MODES = {1: "L", 3: "RGB"}
MAX_NAMED = 5  # files named per reason in a message; the rest are counted


def labelled_files(paths: Iterable[Path]) -> list[tuple[int, int, Path]]:
    """(index, label, path) for every `<...>_<index>_<label>.<ext>` image, sorted by index."""
    entries = []
    for path in paths:
        match = NAME_PATTERN.match(path.stem)
        if path.suffix.lower() in IMAGE_SUFFIXES and match:
            index, label = int(match.group(1)), int(match.group(2))
            if index < 0 or label < 0:
                raise ConfigError(
                    f"{path} has a negative {'index' if index < 0 else 'label'} in its name; name it {NAMING} "
                    f"with both numbers 0 or more (labels are class numbers 0..num_classes-1), or remove it"
                )
            entries.append((index, label, path))
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
    `try` because Pillow decodes lazily, so truncated files only fail there. A header claiming more pixels than
    Pillow's decompression-bomb limit is refused before decoding, and so is an animation: its label fits no one
    frame in particular (a camera's MPO JPEG is not one: its second frame is a preview of the first).
    """
    try:
        with Image.open(path) as image:
            if getattr(image, "is_animated", False) and image.format != "MPO":
                raise ValueError(
                    f"{path} is animated ({image.n_frames} frames); a sample is one still image: save the frame "
                    f"you mean as an image of its own, or remove it"
                )
            image.load()
            if image.mode.startswith("I"):
                pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535)
                return pixels.expand(channels, *pixels.shape).clone()
            return TF.to_tensor(image.convert(CHANNEL_MODES[channels]))
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{path} claims more pixels than Pillow's decompression-bomb limit and is refused unread ({error}); "
            f"remove it, or save it at the size it is meant to have"
        ) from error
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


@dataclass
class FolderListing:
    """What a folder holds: its samples, sorted by index, and every other entry grouped by why it is not used."""

    directory: Path
    entries: list[tuple[int, int, Path]]
    unused: dict[str, list[str]]  # reason -> entry names

    def warnings(self) -> list[str]:
        """A folder that holds more than is used says what is left out, so a mistyped name cannot shrink a run
        unnoticed."""
        if not self.unused:
            return []
        total = len(self.entries) + sum(map(len, self.unused.values()))
        used = f"dataset.root={self.directory} uses {len(self.entries)} of its {total} entries"
        return [f"{used}; not used: {groups(self.unused)}"]


def named(names: list[str]) -> str:
    """The first few names, then a count of the rest."""
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more


def groups(unused: dict[str, list[str]]) -> str:
    """Unused entries by reason, each with its count and first names."""
    return "; ".join(f"{reason}: {len(names)} ({named(names)})" for reason, names in unused.items())


def list_folder(directory: Path, num_classes: int) -> FolderListing:
    """Every entry directly in `directory`, read or said why not, before any image is decoded.

    A file named as a sample must be a sample: one that is a link to nothing, not a regular file (a pipe would
    block the read forever), or whose label is outside 0..num_classes-1 refuses the folder, as a corrupt image
    does, since leaving it out would change what is scored. Everything else not in sample form is passed over
    and named in `FolderListing.warnings`.
    """
    if not directory.is_dir():
        raise ConfigError(f"dataset.root={directory} is not a folder: give the folder of images named {NAMING}")
    unused: dict[str, list[str]] = {}
    candidates = []
    for path in sorted(directory.iterdir()):
        sample_name = path.suffix.lower() in IMAGE_SUFFIXES and NAME_PATTERN.match(path.stem) is not None
        if path.name.startswith("."):
            reason = "hidden (name starts with a dot)"
        elif path.is_dir():
            reason = "a folder or a link to one (only files directly in dataset.root are read)"
        elif not path.is_file():
            broken = not path.exists()
            if sample_name:
                what = "a link to nothing (its target is gone)" if broken else "not a regular file"
                raise ConfigError(f"{path} is named as a sample but is {what}: replace it with the image, or remove it")
            reason = (
                "a link to nothing (its target is gone)" if broken else "not a regular file (a pipe, socket or device)"
            )
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            reason = "no image extension"
        elif not sample_name:
            reason = f"not named {NAME_FORM}"
        else:
            candidates.append(path)
            continue
        unused.setdefault(reason, []).append(path.name)
    entries = labelled_files(candidates)
    if not entries:
        found = f"what it holds: {groups(unused)}" if unused else "it is empty"
        raise ConfigError(f"dataset.root={directory} holds no usable image ({found}); name the images {NAMING}")
    too_high = [(label, path.name) for _, label, path in entries if label >= num_classes]
    if too_high:
        raise ConfigError(
            f"{len(too_high)} image(s) in {directory} have labels outside 0..{num_classes - 1} "
            f"(dataset.num_classes={num_classes}): {named([name for _, name in too_high])}; raise dataset.num_classes "
            f"to {max(too_high)[0] + 1} if those classes are real, or rename or remove the files"
        )
    return FolderListing(directory, entries, unused)


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
    listing = list_folder(directory, num_classes)
    for warning in listing.warnings():
        log.warning(warning)
    part = select_slice(len(listing.entries), n_samples, offset, f"folder {directory}")
    entries = listing.entries[part]
    labels = torch.tensor([label for _, label, _ in entries])
    images = load_images([path for _, _, path in entries], channels, image_size, resize_to)
    return ImageDataset(images, labels, num_classes=num_classes, name=f"folder:{directory.name}", offset=part.start)


def listing_warnings(root: str, num_classes: int, **settings: object) -> list[str]:
    """The folder listed as `folder` lists it, for validation: its refusals come before anything else starts and
    its warnings are recorded with the run's (results.json `run.warnings`)."""
    return list_folder(Path(root), num_classes).warnings()


folder.listing_warnings = listing_warnings
