"""A folder of `<index>_<label>` images: read at their true scale, or refused naming the file and the fix."""

import logging
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from preempt.datasets.base import ImageDataset
from preempt.datasets.folder import NAME_FORM, NAMING, folder
from preempt.parts import ConfigError


def assert_images(data: ImageDataset, n: int, shape: tuple[int, int, int]) -> None:
    assert len(data) == n
    assert data.image_shape == shape
    assert data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.labels.dtype == torch.long
    assert ((data.labels >= 0) & (data.labels < data.num_classes)).all()


def _valid_png_bytes(tmp_path: Path) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "valid.png")
    return (tmp_path / "valid.png").read_bytes()


def test_folder_round_trips_png_images(tmp_path: Path) -> None:
    pixels = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}_{i % 3}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    data = folder(str(tmp_path), num_classes=3, n_samples=4, offset=1)
    assert_images(data, 4, (3, 12, 12))
    assert torch.equal(data.images, pixels[1:5].float() / 255)
    assert data.labels.tolist() == [1, 2, 0, 1]


def test_folder_with_mixed_sizes_names_the_fix(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "0_1.png")
    Image.new("RGB", (12, 12)).save(tmp_path / "1_1.png")
    with pytest.raises(ValueError, match=r"dataset\.image_size"):
        folder(str(tmp_path), num_classes=2)
    assert folder(str(tmp_path), num_classes=2, image_size=8).image_shape == (3, 8, 8)


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_reads_16_bit_grayscale_at_full_scale(tmp_path: Path, channels: int) -> None:
    gradient = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    Image.fromarray(gradient).save(tmp_path / "0_0.png")
    assert Image.open(tmp_path / "0_0.png").mode.startswith("I")
    data = folder(str(tmp_path), num_classes=1, channels=channels)
    assert_images(data, 1, (channels, 8, 8))
    expected = torch.from_numpy(gradient.astype(np.float32) / 65535)
    for channel in data.images[0]:
        assert torch.allclose(channel, expected)
    assert data.images.min() == 0 and data.images.max() == 1


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_drops_alpha_and_expands_palettes(tmp_path: Path, channels: int) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    alpha = np.full((6, 6, 1), 7, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(tmp_path / "0_0.png")
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "1_0.png")
    data = folder(str(tmp_path), num_classes=1, channels=channels)
    mode = {1: "L", 3: "RGB"}[channels]
    expected = [Image.fromarray(rgb).convert(mode), palette.convert("RGB").convert(mode)]
    for image, reference in zip(data.images, expected, strict=True):
        assert torch.equal(image, pil_to_tensor(reference).float() / 255)


@pytest.mark.parametrize("content", ["truncated", "text"])
def test_folder_names_a_corrupt_image_and_the_fix(tmp_path: Path, content: str) -> None:
    data = _valid_png_bytes(tmp_path)[:100] if content == "truncated" else b"not an image at all"
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    (tmp_path / "3_1.png").write_bytes(data)
    with pytest.raises(ValueError, match="corrupt") as error:
        folder(str(tmp_path), num_classes=2)
    assert str(tmp_path / "3_1.png") in str(error.value)
    assert "remove or replace" in str(error.value)


def test_folder_refuses_crops_larger_than_the_images(tmp_path: Path) -> None:
    Image.new("RGB", (10, 12), "red").save(tmp_path / "0_1.png")
    with pytest.raises(ValueError, match=r"10x12.*dataset\.image_size=16.*dataset\.resize_to"):
        folder(str(tmp_path), num_classes=2, image_size=16)
    with pytest.raises(ValueError, match=r"dataset\.resize_to=8.*dataset\.image_size=10"):
        folder(str(tmp_path), num_classes=2, image_size=10, resize_to=8)
    data = folder(str(tmp_path), num_classes=2, image_size=16, resize_to=16)
    assert_images(data, 1, (3, 16, 16))
    assert torch.allclose(data.images[:, 0], torch.ones(1, 16, 16))  # no zero padding
    assert data.images[:, 1:].max() == 0


def test_folder_refuses_duplicate_indices(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "7_1.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "a_7_3.png")
    with pytest.raises(ValueError, match="index 7") as error:
        folder(str(tmp_path), num_classes=4)
    assert str(tmp_path / "7_1.png") in str(error.value) and str(tmp_path / "a_7_3.png") in str(error.value)


@pytest.mark.parametrize("channels", [2, 4])
def test_folder_rejects_unsupported_channels(tmp_path: Path, channels: int) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    with pytest.raises(ValueError, match=rf"dataset\.channels={channels}.*1.*3"):
        folder(str(tmp_path), num_classes=2, channels=channels)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_folder_names_every_entry_it_does_not_use_with_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Once a folder of 5 files with 4 misnamed ran on 1 image, and links and subfolders were passed over, unsaid."""
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    for name in ("cat.png", "1-2.png", "img_3.png", "0_1 copy.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("labels")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "more").mkdir()
    (tmp_path / "elsewhere").symlink_to(tmp_path / "more")
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    with caplog.at_level(logging.WARNING):
        data = folder(str(tmp_path), num_classes=2)
    assert len(data) == 1
    (warning,) = warnings_logged(caplog)
    assert f"dataset.root={tmp_path} uses 1 of its 10 entries" in warning
    assert f"not named {NAME_FORM}: 4 (0_1 copy.png, 1-2.png, cat.png, img_3.png)" in warning
    assert "a folder or a link to one (only files directly in dataset.root are read): 2 (elsewhere, more)" in warning
    assert "a link to nothing (its target is gone): 1 (gone.png)" in warning
    assert (
        "no image extension: 1 (notes.txt)" in warning and "hidden (name starts with a dot): 1 (.DS_Store)" in warning
    )
    assert folder.listing_warnings(root=str(tmp_path), num_classes=2, channels=3) == [warning]


def test_a_folder_that_uses_everything_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    with caplog.at_level(logging.WARNING):
        folder(str(tmp_path), num_classes=2)
    assert warnings_logged(caplog) == [] and folder.listing_warnings(root=str(tmp_path), num_classes=2) == []


def test_many_unused_files_are_counted_after_the_first_few(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    for i in range(8):
        (tmp_path / f"photo{i}.png").write_bytes(b"")
    (warning,) = folder.listing_warnings(root=str(tmp_path), num_classes=2)
    assert ": 8 (photo0.png" in warning and "photo4.png and 3 more" in warning and "photo5.png" not in warning


@pytest.mark.parametrize("names", [[], ["cat.png", "notes.txt"]])
def test_a_folder_with_no_usable_image_is_refused_naming_what_it_holds(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ConfigError, match="holds no usable image") as error:
        folder(str(tmp_path), num_classes=2)
    message = str(error.value)
    assert f"dataset.root={tmp_path}" in message and NAMING in message
    assert ("cat.png" in message and "no image extension: 1 (notes.txt)" in message) if names else "empty" in message


@pytest.mark.parametrize(("name", "what"), [("0_-1.png", "negative label"), ("-3_1.png", "negative index")])
def test_negative_numbers_in_a_name_are_refused(tmp_path: Path, name: str, what: str) -> None:
    """`0_-1.png` was passed over in silence, as if it were no sample."""
    Image.new("RGB", (4, 4)).save(tmp_path / "1_0.png")
    Image.new("RGB", (4, 4)).save(tmp_path / name)
    with pytest.raises(ConfigError, match=what) as error:
        folder(str(tmp_path), num_classes=2)
    assert str(tmp_path / name) in str(error.value)


def test_labels_outside_the_class_range_are_refused_wherever_they_are(tmp_path: Path) -> None:
    """Even outside the slice evaluated: such a label says dataset.num_classes is wrong for the folder."""
    for name in ("0_1.png", "1_12.png", "2_10.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    with pytest.raises(ConfigError, match=r"outside 0\.\.9 \(dataset\.num_classes=10\)") as error:
        folder(str(tmp_path), num_classes=10, n_samples=1)
    assert "1_12.png, 2_10.png" in str(error.value) and "dataset.num_classes to 13" in str(error.value)


@pytest.mark.parametrize("kind", ["link to nothing", "socket"])
def test_a_sample_name_on_something_unreadable_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Not passed over (a sample would go missing) and never opened (a pipe would block the read forever)."""
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    if kind == "socket":
        monkeypatch.chdir(tmp_path)  # a socket's path must be short
        server = socket.socket(socket.AF_UNIX)
        server.bind("3_1.png")
        server.close()
    else:
        (tmp_path / "3_1.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(ConfigError, match="named as a sample but is") as error:
        folder(str(tmp_path), num_classes=2)
    assert str(tmp_path / "3_1.png") in str(error.value) and "remove it" in str(error.value)


def _bomb_png(path: Path) -> None:
    """A valid 4x4 PNG whose header claims 100000x100000 pixels, its checksum fixed so only the size is wrong."""
    Image.new("RGB", (4, 4)).save(path)
    data = bytearray(path.read_bytes())
    header = bytearray(data[16:29])  # IHDR's 13 bytes, after the signature, the length and the chunk type
    header[:8] = struct.pack(">II", 100_000, 100_000)
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header)))
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_is_refused_by_name_unread(tmp_path: Path) -> None:
    """It ended the run with Pillow's own DecompressionBombError, which names no file."""
    Image.new("RGB", (4, 4)).save(tmp_path / "0_1.png")
    _bomb_png(tmp_path / "1_1.png")
    with pytest.raises(ValueError, match="decompression-bomb limit and is refused unread") as error:
        folder(str(tmp_path), num_classes=2)
    assert str(tmp_path / "1_1.png") in str(error.value) and "remove it" in str(error.value)


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_animated_images_are_refused(tmp_path: Path, suffix: str) -> None:
    """An APNG or animated WebP was read as its first frame, unsaid."""
    frames = [Image.new("RGB", (4, 4), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / f"0_1{suffix}", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(ValueError, match=r"animated \(2 frames\)") as error:
        folder(str(tmp_path), num_classes=2)
    assert str(tmp_path / f"0_1{suffix}") in str(error.value)


def test_a_camera_jpeg_with_a_preview_frame_is_read_as_its_photo(tmp_path: Path) -> None:
    """Cameras save MPO JPEGs: two frames, the second a preview, so not an animation."""
    photo = Image.new("RGB", (8, 8), "red")
    photo.save(tmp_path / "0_1.jpg", "MPO", save_all=True, append_images=[Image.new("RGB", (4, 4), "blue")])
    assert folder(str(tmp_path), num_classes=2).image_shape == (3, 8, 8)


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (2, 40)])
def test_tiny_images_are_refused_for_a_crop_or_resized(tmp_path: Path, size: tuple[int, int]) -> None:
    """Sides of 5 px or less: a crop larger than the image names dataset.resize_to, and resizing makes them whole."""
    Image.new("RGB", size, "white").save(tmp_path / "0_0.png")
    with pytest.raises(ValueError, match=r"dataset\.resize_to"):
        folder(str(tmp_path), num_classes=1, image_size=8)
    data = folder(str(tmp_path), num_classes=1, image_size=8, resize_to=8)
    assert_images(data, 1, (3, 8, 8))
    assert torch.allclose(data.images, torch.ones(1, 3, 8, 8))
