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
- Only one still picture is read: an animation (APNG, animated WebP or GIF) is refused rather than cut to its
  first frame, and so is a header claiming more pixels than Pillow's decompression-bomb limit. A multi-picture
  JPEG (MPO, a phone's photo with its previews) is read as the picture it shows.

Files are read into 8-bit numpy arrays; `Photo.pixels` and `decode_png` turn them into tensors where protect
needs them, so `preempt verify` reads files without importing torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from torch import Tensor

LEVELS = 255  # an 8-bit file's largest value, `preempt.threat.LEVELS`, here without importing torch
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
COLOUR_MODES = {1: "L", 3: "RGB"}
WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# EXIF orientations 5 to 8 turn the image by 90° (the stored width becomes the shown height).
TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
EXIF_ORIENTATION = 0x0112


class UnreadableImageError(ValueError):
    """A file that is not one still image Pillow can decode (corrupt, truncated, animated, a decompression bomb,
    or of an unsupported mode)."""


@dataclass
class Photo:
    """One file's pixels as the model takes them, and what is put back around them when it is written."""

    levels: np.ndarray  # (C, H, W) uint8, C the model's channels
    alpha: np.ndarray | None  # (H, W) uint8 transparency, written back unchanged
    conversion: str  # how the file's mode became `levels`, for the manifest
    icc_profile: bytes | None

    @property
    def pixels(self) -> Tensor:
        """(C, H, W) in [0,1] on the 8-bit grid: the levels as the model takes them."""
        return as_pixels(self.levels)


@contextlib.contextmanager
def still_image(source: Path | bytes, name: str) -> Iterator[Image.Image]:
    """The one still picture in `source`; Pillow's errors (also those of the caller's decoding inside the `with`:
    Pillow decodes lazily), a decompression bomb and an animation become UnreadableImageError naming `name`."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":  # MPO: a JPEG, its further pictures previews
                raise UnreadableImageError(
                    f"{name} is animated, {frames} frames: protect takes still images; save the frame you want as "
                    f"a still image"
                )
            yield image
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(
            f"{name} is refused as a likely decompression bomb: its header claims more pixels than Pillow decodes "
            f"({error}); if the image is real, save a smaller copy and protect that"
        ) from None
    except (OSError, EOFError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"{name} is not a readable image ({error})") from None


def shown_size(path: Path) -> tuple[int, int]:
    """(width, height) as viewers show the file, read from its header without decoding the pixels."""
    with still_image(path, path.name) as image:
        width, height = image.size
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def read_photo(path: Path, channels: int) -> Photo:
    """The file's pixels in the model's `channels` (1 or 3) by the rules above; a file that is not one still,
    decodable image raises UnreadableImageError."""
    with still_image(path, path.name) as opened:
        opened.load()
        mode, icc_profile = opened.mode, opened.info.get("icc_profile")
        turned = opened.getexif().get(EXIF_ORIENTATION, 1) != 1
        image = ImageOps.exif_transpose(opened)
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
    return Photo(levels_of(colour), alpha, conversion, icc_profile)


def levels_of(image: Image.Image) -> np.ndarray:
    """An 8-bit L or RGB image as (C, H, W) uint8."""
    levels = np.array(image, dtype=np.uint8)
    return np.ascontiguousarray(levels[None] if levels.ndim == 2 else levels.transpose(2, 0, 1))


def as_pixels(levels: np.ndarray) -> Tensor:
    """(C, H, W) uint8 levels as the floats k/255 the models take."""
    import torch

    return torch.from_numpy(levels).float() / LEVELS


def encode_png(pixels: Tensor, alpha: np.ndarray | None, icc_profile: bytes | None) -> bytes:
    """(C, H, W) pixels already on the 8-bit grid as PNG bytes, with the original's transparency and profile."""
    import torch

    from preempt.threat import to_levels

    levels = to_levels(pixels).to(torch.uint8).cpu().numpy()
    array = levels[0] if levels.shape[0] == 1 else levels.transpose(1, 2, 0)
    image = Image.fromarray(array, mode=COLOUR_MODES[levels.shape[0]])
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, mode="L"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", icc_profile=icc_profile) if icc_profile else image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_levels(data: bytes, channels: int, name: str = "PNG data") -> np.ndarray:
    """The colour channels of PNG bytes as (C, H, W) uint8: what a receiver reading the file gets."""
    with still_image(data, name) as image:
        return levels_of(image.convert(COLOUR_MODES[channels]))


def decode_png(data: bytes, channels: int) -> Tensor:
    """`decode_levels` as (C, H, W) in [0,1]."""
    return as_pixels(decode_levels(data, channels))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
