"""The stated rules that turn any image file into the model's pixels and back into a lossless 8-bit PNG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preempt.datasets.package_samples import foolbox_data_dir
from preempt.protection.photos import UnreadableImageError, decode_png, encode_png, read_photo, shown_size

RNG = np.random.default_rng(0)


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def test_rgb_png_is_read_exactly_and_round_trips_through_png(tmp_path: Path) -> None:
    array = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    photo = read_photo(save(Image.fromarray(array), tmp_path / "a.png"), channels=3)
    assert photo.pixels.shape == (3, 5, 7) and photo.alpha is None and photo.conversion == "RGB"
    assert torch.equal(photo.pixels, torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    assert torch.equal(decode_png(encode_png(photo.pixels, None, None), 3), photo.pixels)


def test_transparency_is_split_off_and_written_back_unchanged(tmp_path: Path) -> None:
    array = RNG.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    photo = read_photo(save(Image.fromarray(array, mode="RGBA"), tmp_path / "a.png"), channels=3)
    assert photo.conversion == "RGBA → RGB, alpha kept"
    assert torch.equal(photo.pixels, torch.from_numpy(array[..., :3]).permute(2, 0, 1).float() / 255)
    data = encode_png(photo.pixels, photo.alpha, None)
    written = tmp_path / "out.png"
    written.write_bytes(data)
    with Image.open(written) as image:
        assert image.mode == "RGBA"
        assert np.array_equal(np.asarray(image), array)


def test_grayscale_becomes_rgb_for_an_rgb_model_and_colour_becomes_luma_for_a_gray_one(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    photo = read_photo(save(Image.fromarray(gray, mode="L"), tmp_path / "g.png"), channels=3)
    assert photo.conversion == "L → RGB"
    assert all(torch.equal(channel, torch.from_numpy(gray).float() / 255) for channel in photo.pixels)
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[..., 0] = 200  # pure red: ITU-R 601-2 luma 0.299 · 200 = 59.8
    gray_photo = read_photo(save(Image.fromarray(colour), tmp_path / "c.png"), channels=1)
    assert gray_photo.conversion == "RGB → L" and torch.all(gray_photo.pixels * 255 == 60)


def test_16_bit_images_are_scaled_to_8_bits(tmp_path: Path) -> None:
    wide = np.array([[0, 257 * 100, 65535, 257 * 7 + 100]], dtype=np.uint16)
    photo = read_photo(save(Image.fromarray(wide), tmp_path / "w.png"), channels=1)
    assert "16-bit ÷ 257" in photo.conversion
    assert (photo.pixels * 255).round().flatten().tolist() == [0, 100, 255, 7]


def test_exif_orientation_is_applied_to_pixels_and_size(tmp_path: Path) -> None:
    array = RNG.integers(0, 256, (4, 10, 3), dtype=np.uint8)  # 10 wide, 4 high as stored
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned by 90°
    path = save(image, tmp_path / "turned.jpg", exif=exif, quality=100)
    assert shown_size(path) == (4, 10)
    photo = read_photo(path, channels=3)
    assert photo.pixels.shape == (3, 10, 4) and "EXIF orientation applied" in photo.conversion


def test_palette_with_a_transparent_index_keeps_its_transparency(tmp_path: Path) -> None:
    image = Image.fromarray(RNG.integers(0, 4, (3, 3), dtype=np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    photo = read_photo(save(image, tmp_path / "p.png", transparency=0), channels=3)
    assert photo.alpha is not None and set(np.unique(photo.alpha)) <= {0, 255}


def test_jpeg_and_webp_samples_are_read(tmp_path: Path) -> None:
    jpeg = next(foolbox_data_dir().glob("imagenet_*.jpg"))
    photo = read_photo(jpeg, channels=3)
    assert photo.pixels.shape == (3, 512, 512)
    webp = save(Image.open(jpeg), tmp_path / "a.webp", lossless=True)
    assert torch.equal(read_photo(webp, channels=3).pixels, photo.pixels)


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_files_raise_a_named_error(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "bad.png"
    if content == "truncated":
        save(Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)), path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match=r"bad\.png"):
        read_photo(path, channels=3)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims `width`x`height` pixels (IHDR patched, its CRC recomputed)."""
    save(Image.fromarray(np.zeros((1, 1), dtype=np.uint8)), path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_refused_naming_the_file_and_its_claimed_size(tmp_path: Path) -> None:
    path = bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    for read in (shown_size, lambda path: read_photo(path, channels=3)):
        with pytest.raises(UnreadableImageError, match=r"bomb\.png .*decompression bomb.*10000000000 pixels"):
            read(path)


@pytest.mark.parametrize(("name", "options"), [("a.png", {}), ("a.webp", {"lossless": True}), ("a.gif", {})])
def test_animated_images_are_refused_rather_than_cut_to_their_first_frame(tmp_path: Path, name: str, options) -> None:
    frames = [Image.fromarray(RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)) for _ in range(3)]
    path = save(frames[0], tmp_path / name, save_all=True, append_images=frames[1:], **options)
    for read in (shown_size, lambda path: read_photo(path, channels=3)):
        with pytest.raises(UnreadableImageError, match=rf"{name} is animated, 3 frames: .*save the frame you want"):
            read(path)


def test_a_multi_picture_jpeg_is_read_as_the_picture_it_shows(tmp_path: Path) -> None:
    shown, preview = (Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)) for value in (40, 200))
    path = save(shown, tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[preview], quality=100)
    assert shown_size(path) == (8, 8)
    assert abs(read_photo(path, channels=3).levels.astype(int) - 40).max() <= 1
