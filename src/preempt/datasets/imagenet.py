"""ImageNet at paper scale, read from disk only: the NIPS 2017 adversarial-competition development set (the
Fast Preemption paper's 1,000 images) or an ImageNet validation folder. Nothing is downloaded, so a missing
folder fails at once naming the files to place. Images get RobustBench's ImageNet view (Res256Crop224)."""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path
from typing import Literal

import torch

from preempt.datasets.base import ImageDataset, select_slice
from preempt.datasets.cifar10 import DatasetNotFoundError
from preempt.datasets.folder import IMAGE_SUFFIXES, load_images
from preempt.files import installed_package_dir
from preempt.parts.constraints import AtLeastOne, NonNegative
from preempt.parts.model import ModelSpec, declares_spec

NUM_CLASSES = 1000
# Kaggle's copy of the dev set names its label file images.csv; the competition repository, dev_dataset.csv.
NIPS2017_CSV_NAMES = ("images.csv", "dev_dataset.csv")
NIPS2017_HEADER = "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL"
WNID_PATTERN = re.compile(r"^n\d{8}$")
Layout = Literal["auto", "nips2017", "val_folder"]


@functools.cache
def imagenet_wnids() -> dict[str, int]:
    """wnid -> ImageNet-1k label (the sorted-wnid order torchvision and every RobustBench model use), from the map
    robustbench ships, so a validation folder holding only some classes still gets the standard labels."""
    class_map = installed_package_dir("robustbench", "the ImageNet class map") / "helper_files"
    class_map /= "imagenet_class_to_id_map.json"
    return json.loads(class_map.read_text())


def nips2017_csv(directory: Path) -> Path | None:
    return next((path for name in NIPS2017_CSV_NAMES if (path := directory / name).is_file()), None)


def val_directory(directory: Path) -> Path:
    return directory / "val" if (directory / "val").is_dir() else directory


def wnid_folders(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_dir() and WNID_PATTERN.match(path.name))


def not_found_message(directory: Path, layouts: tuple[str, ...]) -> str:
    """Where each layout was looked for and how to put its images there."""
    looked = {
        "nips2017": f"{' or '.join(str(directory / name) for name in NIPS2017_CSV_NAMES)} with "
        f"{directory / 'images'}/<ImageId>.png (the NIPS 2017 dev set)",
        "val_folder": f"{directory / 'val'}/<wnid>/*.JPEG or {directory}/<wnid>/*.JPEG (an ImageNet validation folder)",
    }
    fixes = {
        "nips2017": "copy the NIPS 2017 adversarial-competition development set (nips-2017-adversarial-learning-"
        "development-set, distributed as dataset/dev_dataset.csv and images/) to "
        f"{directory / 'images.csv'} and {directory / 'images'}/",
        "val_folder": f"put the ImageNet validation images, one folder per wnid, in {directory / 'val'}/",
    }
    missing = "" if directory.is_dir() else " (the folder does not exist)"
    return (
        f"dataset=imagenet: no images in {directory}{missing}; looked for "
        f"{'; and for '.join(looked[layout] for layout in layouts)}. Nothing is downloaded: "
        f"{', or '.join(fixes[layout] for layout in layouts)}; or set dataset.root=<the folder holding them>"
    )


def detect_layout(directory: Path) -> str:
    if nips2017_csv(directory) is not None:
        return "nips2017"
    if wnid_folders(val_directory(directory)):
        return "val_folder"
    raise DatasetNotFoundError(not_found_message(directory, ("nips2017", "val_folder")))


def nips2017_entries(directory: Path, n_samples: int | None, offset: int) -> tuple[list[tuple[Path, int]], int]:
    """(png, 0-based label) for the asked slice of the CSV's rows sorted by ImageId, and the slice's start.

    Only the slice's files must exist, as only they are decoded."""
    csv_path = nips2017_csv(directory)
    if csv_path is None:
        raise DatasetNotFoundError(not_found_message(directory, ("nips2017",)))
    with csv_path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        for column in ("ImageId", "TrueLabel"):
            if column not in (reader.fieldnames or []):
                raise ValueError(
                    f"{csv_path} has no {column} column (header: {','.join(reader.fieldnames or []) or 'none'}); "
                    f"use the dev set's file unchanged, whose header is {NIPS2017_HEADER}"
                )
        # A short row leaves its missing fields None: read them as empty, to be refused below.
        rows = sorted((row["ImageId"] or "", row["TrueLabel"] or "") for row in reader)
    labels = {}
    for image_id, true_label in rows:
        if image_id in labels:
            raise ValueError(f"{csv_path} lists ImageId={image_id} twice; each image needs one row")
        # 1-based over 1,001 classes with 0 = background, so TrueLabel-1 is the ImageNet-1k label.
        if not (true_label.strip().isdigit() and 1 <= int(true_label) <= NUM_CLASSES):
            raise ValueError(
                f"{csv_path}: ImageId={image_id} has TrueLabel={true_label!r}, outside 1..{NUM_CLASSES} (the dev "
                f"set counts classes from 1, 0 being background); fix or remove that row"
            )
        labels[image_id] = int(true_label) - 1
    part = select_slice(len(rows), n_samples, offset, f"imagenet {csv_path}")
    images = directory / "images" if (directory / "images").is_dir() else directory
    entries = [(images / f"{image_id}.png", labels[image_id]) for image_id, _ in rows[part]]
    missing = [path for path, _ in entries if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{csv_path}: {len(missing)} of the {len(entries)} images asked for are missing, first "
            f"ImageId={missing[0].stem} ({missing[0]}); copy the dev set's images/ folder to {images}, or lower "
            f"dataset.n_samples / change dataset.offset to skip them"
        )
    return entries, part.start


def val_folder_entries(directory: Path, n_samples: int | None, offset: int) -> tuple[list[tuple[Path, int]], int]:
    """(image, ImageNet-1k label) for the asked slice of the sorted `<wnid>/<file>` paths, and the slice's start."""
    val = val_directory(directory)
    class_folders = wnid_folders(val)
    if not class_folders:
        raise DatasetNotFoundError(not_found_message(directory, ("val_folder",)))
    wnids = imagenet_wnids()
    entries = []
    for class_folder in class_folders:
        if class_folder.name not in wnids:
            raise ValueError(
                f"{class_folder}: {class_folder.name} is not one of the {NUM_CLASSES} ImageNet-1k wnids, so it has no "
                f"label; remove that folder"
            )
        files = sorted(path for path in class_folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        entries += [(path, wnids[class_folder.name]) for path in files]
    part = select_slice(len(entries), n_samples, offset, f"imagenet {val}")
    return entries[part], part.start


@declares_spec(lambda image_size=224, **settings: ModelSpec((3, image_size, image_size), NUM_CLASSES))
def imagenet(
    root: str,
    layout: Layout = "auto",
    image_size: AtLeastOne = 224,
    resize_to: AtLeastOne = 256,
    n_samples: AtLeastOne | None = 1000,
    offset: NonNegative = 0,
) -> ImageDataset:
    """The asked slice only (the rest is never decoded): short side to `resize_to`, then the center crop."""
    directory = Path(root)
    layout = detect_layout(directory) if layout == "auto" else layout
    read_entries = nips2017_entries if layout == "nips2017" else val_folder_entries
    entries, start = read_entries(directory, n_samples, offset)
    images = load_images([path for path, _ in entries], channels=3, image_size=image_size, resize_to=resize_to)
    labels = torch.tensor([label for _, label in entries])
    return ImageDataset(images, labels, num_classes=NUM_CLASSES, name=f"imagenet:{layout}", offset=start)
