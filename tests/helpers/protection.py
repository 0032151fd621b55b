"""Folders of real images for the `preempt protect` tests, and protecting them as the command does."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from preempt.config import compose_run, composer
from preempt.datasets.digits import digits
from preempt.datasets.package_samples import foolbox_data_dir
from preempt.protection.folder import Summary, protect_folder

FAST = "defense.n_samples=4"  # the protection's N: 4 keeps the CIFAR-10 ResNet-18 tests to seconds


DIGITS = ["classifier=digits_cnn", "backbone=digits_cnn_at", "threat.eps=0.2"]


def protect(input_dir: Path, output_dir: Path, zoo_dir: Path, *overrides: str, force: bool = False) -> Summary:
    with composer():
        cfg = compose_run("protect", [f"paths.cache_dir={zoo_dir}", *overrides], output_dir)
        return protect_folder(cfg, input_dir, output_dir, force=force, progress=False)


def cifar_array(index: int) -> np.ndarray:
    path = sorted(foolbox_data_dir().glob("cifar10_*.png"))[index]
    return np.asarray(Image.open(path).convert("RGB"))


def mixed_folder(folder: Path) -> dict[str, str]:
    """Real images in every size, mode and format protect reads, one corrupt file and one text file; returns the
    good files' expected output modes."""
    (folder / "sub").mkdir(parents=True)
    for index in range(3):
        Image.fromarray(cifar_array(index)).save(folder / f"cifar_{index}.png")
    shutil.copy(next(foolbox_data_dir().glob("imagenet_*.jpg")), folder / "sub" / "photo.jpg")
    Image.fromarray(cifar_array(3)).convert("L").resize((40, 30)).save(folder / "sub" / "gray.png")
    rgba = np.concatenate([cifar_array(4), np.linspace(0, 255, 32 * 32).reshape(32, 32, 1).astype(np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    wide = (np.asarray(Image.fromarray(cifar_array(5)).convert("L"), dtype=np.uint16) * 257)[:20, :20]
    Image.fromarray(wide).save(folder / "wide16.png")
    Image.fromarray(cifar_array(6)).resize((48, 48)).save(folder / "pic.webp", lossless=True)
    Image.fromarray(cifar_array(7)).save(folder / "broken.png")
    (folder / "broken.png").write_bytes((folder / "broken.png").read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")
    outputs = {f"cifar_{index}.png": "RGB" for index in range(3)}
    return outputs | {"sub/photo.png": "RGB", "sub/gray.png": "RGB", "rgba.png": "RGBA", "wide16.png": "RGB",
                      "pic.png": "RGB"}  # fmt: skip


def write_digits(folder: Path, n_samples: int) -> None:
    """Held-out digits as 8-bit grayscale PNGs named `<index>_<label>.png` (the folder dataset's format)."""
    folder.mkdir(parents=True)
    dataset = digits(n_samples=n_samples)
    for index, (image, label) in enumerate(zip(dataset.images, dataset.labels, strict=True)):
        pixels = (image[0] * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels, mode="L").save(folder / f"{index:04d}_{int(label)}.png")


def protect_command(source: Path, target: Path, zoo_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "preempt.commands.protect", str(source), str(target), f"paths.cache_dir={zoo_dir}",
            *DIGITS, *overrides, "--no-progress"]  # fmt: skip
