"""A sender's image files: PNG, JPEG or WebP of any size and mode in; lossless 8-bit PNG out.

The rules that turn a file into the model's pixels, and back, are stated once here, and `preempt verify` reads
the originals with the same rules:
- EXIF orientation is applied, so the image is protected (and written) the way viewers show it.
- 16-bit and 32-bit integer images are scaled to 8 bits (value/257, rounded); an 8-bit file is read as is, so the
  original's pixels are exact multiples of 1/255 and the budget is measured on the values a file stores.
- Colour becomes the model's channels: grayscale (L, 1-bit, I;16) is copied into R, G and B for an RGB model,
  and the output is RGB (the perturbation differs per channel); colour becomes grayscale for a one-channel
  model with Pillow's ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B. Palette, CMYK and YCbCr go through
  Pillow's RGB conversion.
- Transparency (RGBA, LA, a palette's transparent index) is split off before protection and written back
  unchanged (an RGBA or LA PNG): the model sees the colour channels as `Image.convert("RGB")` gives them.
- The ICC colour profile is copied into the PNG, so viewers show the same colours; other metadata is dropped.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from preempt.threat import LEVELS, to_levels

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
COLOUR_MODES = {1: "L", 3: "RGB"}
WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# EXIF orientations 5 to 8 turn the image by 90° (the stored width becomes the shown height).
TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
EXIF_ORIENTATION = 0x0112


class UnreadableImageError(ValueError):
    """A file that is not an image Pillow can decode (corrupt, truncated, or of an unsupported mode)."""


@dataclass
class Photo:
    """One file's pixels as the model takes them, and what is put back around them when it is written."""

    pixels: Tensor  # (C, H, W) in [0,1] on the 8-bit grid, C the model's channels
    alpha: np.ndarray | None  # (H, W) uint8 transparency, written back unchanged
    conversion: str  # how the file's mode became `pixels`, for the manifest
    icc_profile: bytes | None


def shown_size(path: Path) -> tuple[int, int]:
    """(width, height) as viewers show the file, read from its header without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"{path.name} is not a readable image ({error})") from None
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def read_photo(path: Path, channels: int) -> Photo:
    """The file's pixels in the model's `channels` (1 or 3) by the rules above; corrupt files raise
    UnreadableImageError (Pillow decodes lazily, so `load` runs inside the `try`)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            mode, icc_profile = opened.mode, opened.info.get("icc_profile")
            turned = opened.getexif().get(EXIF_ORIENTATION, 1) != 1
            image = ImageOps.exif_transpose(opened)
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"{path.name} is not a readable image ({error})") from None
    notes = ["EXIF orientation applied"] if turned else []
    if mode == "F":
        raise UnreadableImageError(f"{path.name} holds 32-bit float pixels (mode F), which have no 8-bit reading")
    if mode in WIDE_INTEGER_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257), 0, LEVELS).astype(np.uint8), mode="L")
        notes.append("16-bit ÷ 257")
    alpha = None
    if "A" in image.mode or "transparency" in image.info:
        with_alpha = image.convert("LA" if image.mode in ("L", "LA", "La") else "RGBA")
        alpha = np.asarray(with_alpha.getchannel("A")).copy()
        notes.append("alpha kept")
    target = COLOUR_MODES[channels]
    colour = image.convert(target)
    conversion = ", ".join([mode if mode == target else f"{mode} → {target}", *notes])
    return Photo(pixels_of(colour), alpha, conversion, icc_profile)


def pixels_of(image: Image.Image) -> Tensor:
    """An 8-bit L or RGB image as (C, H, W) floats k/255."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).float() / LEVELS
    return (pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)).contiguous()


def encode_png(pixels: Tensor, alpha: np.ndarray | None, icc_profile: bytes | None) -> bytes:
    """(C, H, W) pixels already on the 8-bit grid as PNG bytes, with the original's transparency and profile."""
    levels = to_levels(pixels).to(torch.uint8).cpu().numpy()
    array = levels[0] if levels.shape[0] == 1 else levels.transpose(1, 2, 0)
    image = Image.fromarray(array, mode=COLOUR_MODES[levels.shape[0]])
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, mode="L"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", icc_profile=icc_profile) if icc_profile else image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes, channels: int) -> Tensor:
    """The colour channels of PNG bytes as (C, H, W) in [0,1]: what a receiver reading the file gets."""
    with Image.open(io.BytesIO(data)) as image:
        return pixels_of(image.convert(COLOUR_MODES[channels]))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
