import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from preempt.datasets.base import ImageDataset
from preempt.datasets.cifar10 import DatasetNotFoundError, cifar10
from preempt.datasets.digits import digits, split_indices
from preempt.datasets.folder import folder
from preempt.datasets.package_samples import cifar10_samples, imagenet_samples
from preempt.evaluation.datamodule import BatchShardSampler


def assert_images(data: ImageDataset, n: int, shape: tuple[int, int, int]) -> None:
    assert len(data) == n
    assert data.image_shape == shape
    assert data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.labels.dtype == torch.long
    assert ((data.labels >= 0) & (data.labels < data.num_classes)).all()


def test_digits_train_and_test_splits_are_disjoint() -> None:
    from sklearn.datasets import load_digits

    splits = split_indices(torch.tensor(load_digits().target))
    train, test = set(splits["train"].tolist()), set(splits["test"].tolist())
    assert not train & test
    assert len(train | test) == 1797 and len(test) == 360


def test_digits_are_upsampled_real_images() -> None:
    data = digits(split="test", image_size=16, n_samples=None)
    assert_images(data, 360, (1, 16, 16))
    assert len(data.labels.unique()) == 10


def test_slices_carry_their_source_indices() -> None:
    data = digits(n_samples=10, offset=50)
    images, labels, index = data[0]
    assert index.item() == 50
    full = digits(n_samples=None)
    assert torch.equal(images, full.images[50]) and labels == full.labels[50]


@pytest.mark.parametrize(
    ("n_samples", "offset", "message"), [(400, 0, "exceeds"), (10, 360, "outside"), (0, 0, "positive")]
)
def test_bad_slices_are_rejected(n_samples: int, offset: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        digits(n_samples=n_samples, offset=offset)


def test_cifar10_samples_take_labels_from_file_names() -> None:
    data = cifar10_samples()
    assert_images(data, 20, (3, 32, 32))
    assert data.labels[:4].tolist() == [3, 8, 8, 0]  # cifar10_00_3.png, cifar10_01_8.png, ...


def test_imagenet_samples_are_224_crops() -> None:
    data = imagenet_samples(n_samples=4, offset=2)
    assert_images(data, 4, (3, 224, 224))
    assert data.labels.tolist() == [438, 990, 949, 853]


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


def test_cifar10_offline_fails_fast_naming_the_folder(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        cifar10(str(tmp_path), n_samples=10)
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(("n", "batch_size", "world_size"), [(19, 4, 2), (20, 5, 3), (3, 8, 2)])
def test_batch_shards_cover_every_sample_once_in_the_same_batches(n: int, batch_size: int, world_size: int) -> None:
    single = list(BatchShardSampler(n, batch_size))
    shards = [list(BatchShardSampler(n, batch_size, rank, world_size)) for rank in range(world_size)]
    assert sorted(batch for shard in shards for batch in shard) == single
    assert sorted(i for batch in single for i in batch) == list(range(n))


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


def _valid_png_bytes(tmp_path: Path) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "valid.png")
    return (tmp_path / "valid.png").read_bytes()


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


@pytest.mark.parametrize(("device", "workers", "pinned"), [("cpu", 0, False), ("cuda", 4, True)])
def test_the_loader_feeds_a_gpu_from_worker_processes_into_pinned_memory(
    device: str, workers: int, pinned: bool
) -> None:
    """On a GPU, batches are decoded ahead by loader processes and pinned for an overlapped copy; on the CPU the
    in-memory datasets are read in the main process."""
    from types import SimpleNamespace

    from preempt.datasets.digits import digits
    from preempt.evaluation import EvaluationDataModule

    datamodule = EvaluationDataModule(digits(n_samples=8), batch_size=4)
    trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=SimpleNamespace(root_device=torch.device(device)))
    datamodule.trainer = trainer
    loader = datamodule.test_dataloader()
    assert loader.num_workers == workers and loader.pin_memory is pinned
