"""The whole composed config is checked before any model is built; every refusal names the key and the fix."""

import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from preempt import run
from preempt.datasets.base import ImageDataset
from preempt.models import PixelClassifier
from preempt.validation import (
    ConfigError,
    check_every_process_gets_a_batch,
    check_models_fit_dataset,
    expected_processes,
    validate_config,
)


@pytest.fixture
def no_model_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if the run gets as far as building (or training) a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("models were built before the config was refused")

    monkeypatch.setattr(run, "instantiate_models", refuse)


def refusal(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        run.evaluate(cfg)
    return str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("threat.eps=8", "8/255"),
        ("batch_size=abc", "batch_size='abc'"),
        ("+defence=none", "Did you mean defense?"),
        ("defense.eta=7", "defense.eta=7"),
        ("+defense.etaa=0.5", "Did you mean eta?"),
        ("defense.n_samples=0", "defense.n_samples=0"),
        ("attack=pgd", None),
        ("attack=autoattack", None),
        ("attack.version=plus", "attack.version='plus'"),
        ("threat.norm=L1", "threat.norm='L1'"),
        ("seed=-1", "seed=-1"),
        ("victim.architecture=resnet", "victim.architecture='resnet'"),
        ("backbone=ground_truth", "can only be the classifier"),
        ("victim=ground_truth", "can only be the classifier"),
        ("defense.forward_steps=0 defense.backward_steps=0", "defense=none"),
    ],
)
def test_bad_settings_are_refused_before_any_model_is_built(
    override: str, expected: str | None, compose_config, no_model_building
) -> None:
    cfg = compose_config(*override.split())
    if expected is None:  # a valid config reaches model building, which the fixture stops
        with pytest.raises(AssertionError, match="models were built"):
            run.evaluate(cfg)
        return
    start = time.perf_counter()
    assert expected in refusal(cfg)
    assert time.perf_counter() - start < 10


def test_eps_written_as_a_fraction_is_read_as_one(compose_config) -> None:
    cfg = compose_config("threat.eps=8/255")
    validate_config(cfg)
    assert cfg.threat.eps == pytest.approx(8 / 255)
    assert cfg.defense.eps == pytest.approx(8 / 255) and cfg.attack.eps == pytest.approx(8 / 255)


def test_an_empty_model_cache_is_not_trained_for_a_refused_config(compose_config, tmp_path: Path) -> None:
    cache = tmp_path / "empty_cache"
    cfg = compose_config("threat.eps=8", f"paths.cache_dir={cache}")
    start = time.perf_counter()
    assert "8/255" in refusal(cfg)
    assert time.perf_counter() - start < 10
    assert not cache.exists() or not any(cache.iterdir())


def write_digit_folder(folder: Path, labels: list[int], size: int = 16, channels: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mode = "L" if channels == 1 else "RGB"
    for index, label in enumerate(labels):
        Image.new(mode, (size, size), color=index * 10).save(folder / f"{index}_{label}.png")
    return folder


def test_models_with_another_class_count_are_refused_before_they_are_built(
    compose_config, tmp_path: Path, no_model_building
) -> None:
    """Labels up to 49 and digits models with 10 outputs: once ran to 0.000 accuracy, or IndexError under PGD."""
    root = write_digit_folder(tmp_path / "fifty", labels=[3, 49, 12, 7])
    cfg = compose_config("dataset=folder", f"dataset.root={root}", "dataset.num_classes=50", "dataset.channels=1")
    message = refusal(cfg)
    assert "outputs 10 classes" in message and "has 50" in message and "dataset.num_classes" in message


def test_models_for_other_images_are_refused_before_they_are_built(compose_config, no_model_building) -> None:
    message = refusal(compose_config("dataset=cifar10_samples"))
    assert "takes 1×16×16 images" in message and "gives 3×32×32" in message
    # The hint names what fits the model, not the dataset already in use.
    assert "datasets of 1×16×16 images: dataset=digits)" in message and "dataset=cifar10_samples" not in message


def test_a_built_model_is_tried_on_one_image_for_its_class_count() -> None:
    """Models whose config declares nothing (your own `_target_`) are checked once built."""
    five_classes = PixelClassifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)), name="five", input_shape=(1, 4, 4))
    dataset = ImageDataset(torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]), num_classes=10, name="toy")
    with pytest.raises(ConfigError, match=r"victim five outputs 5 classes but dataset toy has 10"):
        check_models_fit_dataset({"victim": five_classes}, dataset)
    with pytest.raises(ConfigError, match=r"fails on one toy image"):
        check_models_fit_dataset(
            {"victim": five_classes}, ImageDataset(torch.rand(3, 1, 5, 5), torch.zeros(3), 10, "toy")
        )


def test_channels_outside_one_or_three_name_the_key(compose_config, tmp_path: Path) -> None:
    cfg = compose_config("dataset=folder", f"dataset.root={tmp_path}", "dataset.channels=4")
    with pytest.raises(ConfigError, match=r"dataset\.channels=4"):
        validate_config(cfg)


def test_a_required_key_left_unset_is_named(compose_config) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.root must be set"):
        validate_config(compose_config("dataset=folder"))


def test_l2_budgets_beyond_the_image_are_refused(compose_config, no_model_building) -> None:
    message = refusal(compose_config("threat.norm=L2", "threat.eps=40", "attack=pgd"))
    assert "largest L2 distance between two 1×16×16 images" in message


@pytest.mark.parametrize(
    ("n_samples", "batch_size", "processes", "fix"),
    [(40, 128, 2, "batch_size=20"), (5, 4, 4, "batch_size=1"), (1, 8, 2, "trainer.devices=1")],
)
def test_fewer_batches_than_processes_are_refused_with_the_fix(n_samples, batch_size, processes, fix) -> None:
    with pytest.raises(ConfigError, match=fix):
        check_every_process_gets_a_batch(n_samples, batch_size, processes)
    check_every_process_gets_a_batch(n_samples, 1 if n_samples < processes else int(fix.split("=")[1]), 1)


def test_ddp_with_one_batch_is_refused_before_models_are_built(compose_config, no_model_building) -> None:
    """`trainer=ddp dataset.n_samples=40` (one batch of 128 for two processes) once crashed in gloo, exit 137."""
    cfg = compose_config("trainer=ddp", "trainer.accelerator=cpu", "dataset.n_samples=40")
    assert expected_processes(dict(cfg.trainer)) == 2
    assert "set batch_size=20" in refusal(cfg)


def test_paper_condition_on_eta_is_a_warning_not_an_error(compose_config) -> None:
    assert validate_config(compose_config()) == []
    (warning,) = validate_config(compose_config("defense.forward_steps=0", "defense.backward_steps=1"))
    assert "eta·(forward_steps+backward_steps) = 0.70" in warning


def test_evaluating_on_the_zoo_training_split_is_flagged(compose_config) -> None:
    (warning,) = validate_config(compose_config("dataset.split=train"))
    assert "trained on these images" in warning and "dataset.split=test" in warning


def test_a_finished_run_folder_is_refused(compose_config, no_model_building) -> None:
    cfg = compose_config()
    output = Path(cfg.paths.output_dir)
    output.mkdir(parents=True)
    (output / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="finished run"):
        run.evaluate(cfg)
    assert (output / "results.json").read_text() == "{}"
