"""A folder of `<index>_<label>` images: read at their true scale, or refused naming the file and the fix."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from preempt.datasets.base import ImageDataset
from preempt.datasets.folder import folder


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
