"""Protecting a folder of real images: mixed files, reruns, refusals, sizes, and the victim's view of the files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.protection import DIGITS, FAST, mixed_folder, protect, write_digits
from omegaconf import open_dict
from PIL import Image

from preempt.commands.evaluate import evaluate
from preempt.datasets.package_samples import export_samples
from preempt.parts import ConfigError
from preempt.protection.manifest import MANIFEST_FILE, read_manifest
from preempt.protection.photos import read_photo
from preempt.protection.verification import WITHIN, verify


def test_a_mixed_folder_is_protected_within_budget_and_a_rerun_does_nothing(tmp_path: Path, zoo_dir: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    expected = mixed_folder(source)
    summary = protect(source, target, zoo_dir, FAST)

    assert sorted(Path(name).with_suffix(".png").as_posix() for name in summary.protected) == sorted(expected)
    assert list(summary.failed) == ["broken.png"] and "broken.png" in summary.failed["broken.png"]
    assert summary.ignored == ["notes.txt"]
    assert not (target / "broken.png").exists()
    assert not list(target.rglob("*.tmp")), "no half-written output"
    manifest = read_manifest(target)
    assert manifest["broken.png"]["status"] == "failed"
    for entry in (entry for entry in manifest.values() if entry["status"] == "protected"):
        original, output = source / entry["input"], target / entry["output"]
        with Image.open(output) as written, Image.open(original) as read:
            assert written.format == "PNG" and written.mode == expected[entry["output"]]
            assert written.size == read.size  # the file's own resolution, whatever the model's
        before = read_photo(original, 3).pixels
        after = read_photo(output, 3).pixels
        assert (after - before).abs().max() * 255 <= 8 + 1e-3, "within 8/255 after the 8-bit round trip"
        assert entry["linf_levels"] == round(float((after - before).abs().max()) * 255)
        assert 0 <= entry["confidence_before"] <= 1 and 0 <= entry["confidence_after"] <= 1
        assert entry["loss_before"] >= 0 and entry["loss_after"] >= 0 and entry["software"]["versions"]["torch"]
        assert 0 < entry["ssim"] <= 1 and entry["seconds"] > 0 and 0 <= entry["label"] < 10
        assert entry["settings"]["budget"] == {"eps": 8 / 255, "norm": "Linf"}
    assert manifest["rgba.png"]["conversion"] == "RGBA → RGB, alpha kept"
    with Image.open(source / "rgba.png") as read, Image.open(target / "rgba.png") as written:
        assert np.array_equal(np.asarray(read)[..., 3], np.asarray(written)[..., 3]), "alpha written back unchanged"
    assert [check.verdict for check in verify(target)] == [WITHIN] * len(expected)

    outputs_before = {path: path.read_bytes() for path in target.rglob("*.png")}
    lines_before = (target / MANIFEST_FILE).read_text()
    rerun = protect(source, target, zoo_dir, FAST)
    assert rerun.protected == [] and len(rerun.done_before) == len(expected) and list(rerun.failed) == ["broken.png"]
    assert (target / MANIFEST_FILE).read_text() == lines_before
    assert {path: path.read_bytes() for path in target.rglob("*.png")} == outputs_before

    redone = protect(source, target, zoo_dir, FAST, force=True)
    assert len(redone.protected) == len(expected)
    assert {path: path.read_bytes() for path in target.rglob("*.png")} == outputs_before, "same settings, same files"


def victim_robust_accuracy(
    compose_config: Callable, folder: Path, run_dir: Path, channels: int, *overrides: str
) -> dict[str, float]:
    cfg = compose_config(
        "dataset=folder", f"dataset.root={folder}", f"dataset.channels={channels}", "attack=pgd", "logger=none",
        # No random start: the two evaluations reach PGD with their generators in different states (one protected
        # first), so random starts would differ by chance, by 3 of 64 digits on one machine of this kind.
        "attack.random_start=false", *overrides,
    )  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return evaluate(cfg)["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "models", "defense", "channels"),
    [
        ("digits", [*DIGITS, "victim=digits_lenet_at"], [], 1),
        (
            "cifar10",
            [  # PGD at 2/255 on the 8/255 protection: at 8/255 the standard ResNet-18 falls to 0 either way
                "classifier=autoattack_resnet18",
                "backbone=autoattack_resnet18",
                "victim=autoattack_resnet18",
                "threat.eps=8/255",
                "attack.eps=2/255",
            ],
            [FAST],
            3,
        ),
    ],
)
def test_protected_files_read_from_disk_score_as_the_in_memory_evaluation(
    name: str,
    models: list[str],
    defense: list[str],
    channels: int,
    tmp_path: Path,
    zoo_dir: Path,
    compose_config,
    digits_models,
) -> None:
    """The victim under PGD on the files protect wrote (defense=none: they are already protected) against the
    evaluation protecting the same originals in memory and sending them as 8-bit pixels."""
    source, target = tmp_path / "in", tmp_path / "out"
    if name == "digits":
        write_digits(source, 64)
    else:
        export_samples("cifar10", source)
    protect(source, target, zoo_dir, *[part for part in models if not part.startswith(("victim", "attack"))], *defense)

    in_memory = victim_robust_accuracy(
        compose_config, source, tmp_path / "memory", channels, "transmit_8bit=true", *models, *defense
    )
    from_disk = victim_robust_accuracy(compose_config, target, tmp_path / "disk", channels, "defense=none", *models)
    n_samples = len(list(source.glob("*.png")))
    assert from_disk["test/clean_acc"] == in_memory["test/protected_clean_acc"], "the same protected pixels"
    assert abs(from_disk["test/robust_acc"] - in_memory["test/robust_acc"]) <= 1 / n_samples + 1e-9


def test_refusals_come_before_any_work_and_name_the_fix(tmp_path: Path, zoo_dir: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 2)
    with pytest.raises(ConfigError, match="overlaps INPUT_DIR"):
        protect(source, source / "protected", zoo_dir, *DIGITS)
    with pytest.raises(ConfigError, match=r"classifier=ground_truth .* pick a classifier model"):
        protect(source, target, zoo_dir, *DIGITS, "classifier=ground_truth")
    with pytest.raises(ConfigError, match=r"Could not find 'defense/nonexistent'\. Available options in 'defense': a5"):
        protect(source, target, zoo_dir, *DIGITS, "defense=nonexistent")
    with pytest.raises(ConfigError, match=r"protect\.resize"):
        protect(source, target, zoo_dir, *DIGITS, "protect.resize=crop")
    target.mkdir()
    with pytest.raises(ConfigError, match=r"holds no \.png"):
        protect(target, tmp_path / "elsewhere", zoo_dir, *DIGITS)
    foreign = target / sorted(source.glob("*.png"))[0].name
    foreign.write_bytes(b"someone else's file")
    with pytest.raises(ConfigError, match=r"not in its manifest .*\n.*--force"):
        protect(source, target, zoo_dir, *DIGITS)
    assert foreign.read_bytes() == b"someone else's file"


def test_other_settings_are_refused_with_what_changed(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 2)
    protect(source, target, zoo_dir, *DIGITS)
    with pytest.raises(ConfigError, match=r"2 file\(s\) were protected with other settings .*eps: 0.2 → 0.1"):
        protect(source, target, zoo_dir, *DIGITS, "threat.eps=0.1")


def test_resize_none_skips_files_the_model_cannot_take_and_protects_the_rest(
    tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 2)
    Image.new("L", (20, 20), 128).save(source / "big.png")
    summary = protect(source, target, zoo_dir, *DIGITS, "protect.resize=none")
    assert len(summary.protected) == 2
    assert "20x20 (WxH), and the models take 16x16" in summary.failed["big.png"]
    with_resize = protect(source, tmp_path / "resized", zoo_dir, *DIGITS)
    assert len(with_resize.protected) == 3
    assert Image.open(tmp_path / "resized" / "big.png").size == (20, 20)


@pytest.mark.parametrize(("defense", "verdict"), [("bilevel", WITHIN), ("bit_depth", "no budget")])
def test_any_sender_side_defense_protects_and_verify_knows_its_budget(
    defense: str, verdict: str, tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    """A budgeted defense (Bi-Level) is checked against its eps; an input transform placed on the sender's side
    (bit-depth reduction) has no budget, so its files are written with plain rounding and reported as such."""
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 3)
    summary = protect(source, target, zoo_dir, *DIGITS, f"defense={defense}")
    assert len(summary.protected) == 3
    assert [check.verdict for check in verify(target)] == [verdict] * 3
    assert read_manifest(target)[sorted(summary.protected)[0]]["settings"]["defense"] == defense


def test_with_per_sample_randomness_the_batch_size_changes_no_file(
    tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    source = tmp_path / "in"
    write_digits(source, 6)
    per_sample = (*DIGITS, "randomness=per_sample")
    protect(source, tmp_path / "one", zoo_dir, *per_sample, "batch_size=1")
    protect(source, tmp_path / "all", zoo_dir, *per_sample, "batch_size=128")
    one, every = ({path.name: path.read_bytes() for path in (tmp_path / name).glob("*.png")} for name in ("one", "all"))
    assert one == every and len(one) == 6
    settings = next(iter(read_manifest(tmp_path / "one").values()))["settings"]
    assert settings["randomness"] == "per_sample" and "batch_size" not in settings
    per_batch = protect(source, tmp_path / "per_batch", zoo_dir, *DIGITS, "batch_size=1")
    assert read_manifest(tmp_path / "per_batch")[per_batch.protected[0]]["settings"]["batch_size"] == 1
