"""dataset=imagenet on a small NIPS 2017-style dev set and validation folder built from the real foolbox images."""

import csv
import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision.transforms import functional as TF

from preempt.datasets.base import dataset_options_of_shape
from preempt.datasets.cifar10 import DatasetNotFoundError
from preempt.datasets.folder import labelled_files
from preempt.datasets.imagenet import NIPS2017_HEADER, imagenet, imagenet_wnids
from preempt.datasets.package_samples import foolbox_data_dir
from preempt.validation import validate_config

Sample = tuple[str, int, Path]  # ImageId, ImageNet-1k label, shipped JPEG


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """The 20 shipped ImageNet images with hex ImageIds, like the competition's, whose sorted order is not theirs."""
    shipped = labelled_files(path for path in foolbox_data_dir().iterdir() if path.name.startswith("imagenet_"))
    return [(hashlib.md5(path.name.encode()).hexdigest()[:16], label, path) for _, label, path in shipped]


def write_dev_set(
    root: Path, samples: list[Sample], csv_name: str = "images.csv", image_folder: str = "images"
) -> None:
    """The dev set's files: 299×299 PNGs named by ImageId and a CSV of 1-based labels, rows in shipped order."""
    images = root / image_folder
    images.mkdir(parents=True, exist_ok=True)
    with (root / csv_name).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(NIPS2017_HEADER.split(","))
        for image_id, label, path in samples:
            Image.open(path).convert("RGB").resize((299, 299)).save(images / f"{image_id}.png")
            writer.writerow([image_id, "http://x", 0, 0, 299, 299, label + 1, 1, "", "", "", ""])


def write_csv(root: Path, header: str, *rows: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "images.csv"


@pytest.fixture(scope="module")
def dev_set(samples: list[Sample], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nips2017")
    write_dev_set(root, samples)
    return root


def evaluation_view(path: Path) -> torch.Tensor:
    """The standard ImageNet evaluation transform, computed here independently of the loader, on the 8-bit grid
    (as the photo saved at 256 would be)."""
    resized = TF.resize(TF.to_tensor(Image.open(path).convert("RGB")), 256, antialias=True).clamp(0, 1)
    return TF.center_crop(torch.round(resized * 255) / 255, 224)


def test_dev_set_gives_224_crops_in_image_id_order_labelled_true_label_minus_one(
    dev_set: Path, samples: list[Sample]
) -> None:
    data = imagenet(str(dev_set), n_samples=None)
    ordered = sorted(samples)
    assert len(data) == 20 and data.image_shape == (3, 224, 224) and data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.labels.tolist() == [label for _, label, _ in ordered]
    assert data.indices.tolist() == list(range(20)) and data.num_classes == 1000 and data.name == "imagenet:nips2017"
    for k in (0, 7):
        expected = evaluation_view(dev_set / "images" / f"{ordered[k][0]}.png")
        torch.testing.assert_close(data.images[k], expected.clamp(0, 1))


def test_slices_match_the_full_set_and_carry_their_indices(dev_set: Path) -> None:
    full = imagenet(str(dev_set), n_samples=None)
    part = imagenet(str(dev_set), n_samples=4, offset=3)
    assert torch.equal(part.images, full.images[3:7]) and torch.equal(part.labels, full.labels[3:7])
    assert part.indices.tolist() == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="exceeds the 20 available samples"):
        imagenet(str(dev_set), n_samples=1000)


def test_only_the_asked_slice_is_decoded(dev_set: Path, samples: list[Sample], monkeypatch) -> None:
    opened = []
    open_image = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *args, **kwargs: opened.append(Path(path)) or open_image(path))
    imagenet(str(dev_set), n_samples=2, offset=5)
    assert opened == [dev_set / "images" / f"{image_id}.png" for image_id, _, _ in sorted(samples)[5:7]]


def test_the_competition_repository_layout_is_read_too(tmp_path: Path, samples: list[Sample], dev_set: Path) -> None:
    """dev_dataset.csv, with the images directly beside it."""
    write_dev_set(tmp_path, samples[:3], csv_name="dev_dataset.csv", image_folder=".")
    data = imagenet(str(tmp_path), layout="nips2017", n_samples=None)
    expected = imagenet(str(dev_set), n_samples=None)
    subset_ids = {image_id for image_id, _, _ in samples[:3]}
    in_subset = [k for k, (image_id, _, _) in enumerate(sorted(samples)) if image_id in subset_ids]
    assert torch.equal(data.images, expected.images[in_subset]) and torch.equal(data.labels, expected.labels[in_subset])


@pytest.mark.parametrize("under", ["val", "."])
def test_a_validation_folder_gets_the_standard_labels_in_sorted_path_order(
    tmp_path: Path, samples: list[Sample], under: str
) -> None:
    """Only two class folders present: labels still come from the 1,000-class wnid order, not from 0 and 1."""
    wnid_of = {label: wnid for wnid, label in imagenet_wnids().items()}
    by_label = {label: path for _, label, path in samples}
    for name, label in [("b.JPEG", 609), ("a.JPEG", 438), ("c.JPEG", 438)]:
        folder = tmp_path / under / wnid_of[label]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(by_label[label], folder / name)
    (tmp_path / under / wnid_of[438] / "notes.txt").write_text("ignored")
    data = imagenet(str(tmp_path), n_samples=None)
    assert data.name == "imagenet:val_folder" and data.image_shape == (3, 224, 224)
    assert data.labels.tolist() == [438, 438, 609]
    torch.testing.assert_close(data.images[2], evaluation_view(by_label[609]).clamp(0, 1))
    assert torch.equal(imagenet(str(tmp_path), layout="val_folder", n_samples=1, offset=1).images, data.images[1:2])


def test_a_missing_folder_fails_at_once_naming_the_files_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "absent"
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as error:
        imagenet(str(root))
    assert time.perf_counter() - start < 1
    message = str(error.value)
    for looked_for in (root / "images.csv", root / "dev_dataset.csv", root / "images", root / "val"):
        assert str(looked_for) in message
    assert "does not exist" in message and "dataset.root=" in message
    assert "nips-2017-adversarial-learning-development-set" in message and "dataset/dev_dataset.csv" in message


@pytest.mark.parametrize(
    ("layout", "looked_for", "not_looked_for"), [("nips2017", "images.csv", "val"), ("val_folder", "val", "images.csv")]
)
def test_a_forced_layout_names_only_its_own_files(
    tmp_path: Path, layout: str, looked_for: str, not_looked_for: str
) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        imagenet(str(tmp_path), layout=layout)
    assert str(tmp_path / looked_for) in str(error.value) and str(tmp_path / not_looked_for) not in str(error.value)


@pytest.mark.parametrize("column", ["ImageId", "TrueLabel"])
def test_a_csv_without_a_needed_column_is_refused_naming_it(tmp_path: Path, column: str) -> None:
    header = NIPS2017_HEADER.replace(column, "Other")
    csv_path = write_csv(tmp_path, header, "a,u,0,0,1,1,5,1,,,,")
    with pytest.raises(ValueError, match=f"{csv_path} has no {column} column"):
        imagenet(str(tmp_path))


@pytest.mark.parametrize("true_label", ["0", "1001", "-3", "cat", ""])
def test_labels_outside_the_1000_classes_are_refused_naming_the_row(tmp_path: Path, true_label: str) -> None:
    csv_path = write_csv(tmp_path, NIPS2017_HEADER, "ok,u,0,0,1,1,5,1,,,,", f"bad,u,0,0,1,1,{true_label},1,,,,")
    with pytest.raises(ValueError, match=rf"{csv_path}: ImageId=bad has TrueLabel='{true_label}', outside 1\.\.1000"):
        imagenet(str(tmp_path))


def test_a_truncated_row_is_refused_naming_it(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path, NIPS2017_HEADER, "ok,u,0,0,1,1,5,1,,,,", "short,u,0")
    with pytest.raises(ValueError, match=f"{csv_path}: ImageId=short has TrueLabel='', outside"):
        imagenet(str(tmp_path))


def test_a_repeated_image_id_is_refused(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path, NIPS2017_HEADER, "a,u,0,0,1,1,5,1,,,,", "a,u,0,0,1,1,6,1,,,,")
    with pytest.raises(ValueError, match=f"{csv_path} lists ImageId=a twice"):
        imagenet(str(tmp_path))


def test_a_missing_image_is_named_only_when_its_row_is_asked_for(tmp_path: Path, samples: list[Sample]) -> None:
    write_dev_set(tmp_path, samples[:3])
    missing_id = sorted(samples[:3])[1][0]
    (tmp_path / "images" / f"{missing_id}.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"images\.csv: 1 of the 3 images asked for are missing, first ImageId={missing_id}"
    ):
        imagenet(str(tmp_path), n_samples=None)
    assert len(imagenet(str(tmp_path), n_samples=1, offset=2)) == 1


def test_a_folder_that_is_no_imagenet_class_is_refused(tmp_path: Path) -> None:
    (tmp_path / "val" / "n99999999").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"n99999999 is not one of the 1000 ImageNet-1k wnids"):
        imagenet(str(tmp_path))


def test_the_config_composes_instantiates_and_validates(compose_config, dev_set: Path) -> None:
    cfg = compose_config("dataset=imagenet", f"dataset.root={dev_set}", "dataset.n_samples=2", "dataset.offset=4")
    assert cfg.threat.eps == pytest.approx(4 / 255) and cfg.threat.norm == "Linf"
    assert validate_config(cfg) == []
    data = instantiate(cfg.dataset)
    assert data.image_shape == (3, 224, 224) and data.indices.tolist() == [4, 5]
    assert "imagenet" in dataset_options_of_shape((3, 224, 224))
    assert compose_config("dataset=imagenet").dataset.root == str(Path(cfg.paths.data_dir) / "imagenet")
