"""Protecting a folder of real images: mixed files, reruns, refusals, sizes, and the victim's view of the files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.locks import folder_held_by_another_process
from helpers.protection import DIGITS, FAST, mixed_folder, protect, write_digits
from omegaconf import open_dict
from PIL import Image

from preempt.commands.evaluate import evaluate
from preempt.datasets.package_samples import export_samples
from preempt.files import write_inside
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
    assert summary.ignored == {"notes.txt": "not .png, .jpg, .jpeg, .webp"}
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


def test_output_dir_links_locks_and_unwritable_folders_are_refused_before_any_model_is_built(
    tmp_path: Path, zoo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import preempt.protection.folder as folder

    source, target, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    write_digits(source / "sub", 2)
    elsewhere.mkdir()
    monkeypatch.setattr(folder, "Protector", None)  # building the models would fail loudly: nothing gets that far
    target.mkdir()
    (target / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"holds symbolic links \(.*out/sub\): protect never writes through a link"):
        protect(source, target, zoo_dir, *DIGITS)
    (target / "sub").unlink()
    victim = tmp_path / "victim.jsonl"
    victim.write_text("keep\n")
    (target / MANIFEST_FILE).symlink_to(victim)
    with pytest.raises(ConfigError, match=r"holds symbolic links \(.*manifest\.jsonl\)"):
        protect(source, target, zoo_dir, *DIGITS)
    assert victim.read_text() == "keep\n" and not list(elsewhere.iterdir())
    (target / MANIFEST_FILE).unlink()

    with folder_held_by_another_process(target, "preempt protect") as holder, pytest.raises(ConfigError) as refused:
        protect(source, target, zoo_dir, *DIGITS)
    assert f"OUTPUT_DIR {target} is in use: process {holder} (preempt protect)" in str(refused.value)

    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match=r"OUTPUT_DIR .*a_file is a file, not a folder"):
        protect(source, tmp_path / "a_file", zoo_dir, *DIGITS)
    with pytest.raises(ConfigError, match=r"OUTPUT_DIR /sys/preempt_out cannot be written \(Operation not permitted\)"):
        protect(source, Path("/sys/preempt_out"), zoo_dir, *DIGITS)


def test_links_in_the_input_folder_are_named_not_skipped_silently(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    source, target, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    write_digits(source, 2)
    write_digits(elsewhere, 1)
    (source / "linked").symlink_to(elsewhere, target_is_directory=True)
    (source / "gone.png").symlink_to(tmp_path / "deleted.png")
    (source / "same.png").symlink_to(next(elsewhere.glob("*.png")))
    summary = protect(source, target, zoo_dir, *DIGITS)
    assert len(summary.protected) == 3, "a link to a file is read"
    assert set(summary.ignored) == {"linked", "gone.png"}
    assert "a link to a folder, not followed" in summary.ignored["linked"]
    assert "a link to nothing" in summary.ignored["gone.png"]
    assert "not read: gone.png: a link to nothing" in summary.report(target)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_what_finished(
    tmp_path: Path, zoo_dir: Path, digits_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import preempt.protection.folder as folder

    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 3)
    written = []

    def fill_up(root: Path, relative: str, data: bytes) -> Path:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(root / relative))
        written.append(relative)
        return write_inside(root, relative, data)

    monkeypatch.setattr(folder, "write_inside", fill_up)
    with pytest.raises(ConfigError, match=r"failed \(No space left on device: .*\) after 1 file\(s\) were protected"):
        protect(source, target, zoo_dir, *DIGITS, "batch_size=1")
    monkeypatch.undo()
    resumed = protect(source, target, zoo_dir, *DIGITS, "batch_size=1")
    assert resumed.done_before == written and len(resumed.protected) == 2


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


def test_files_over_max_megapixels_or_the_memory_available_fail_unread_and_the_rest_are_protected(
    tmp_path: Path, zoo_dir: Path, digits_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over protect.max_megapixels, and one whose estimated memory exceeds what is available (made scarce
    here: less than a 100×100 photo needs), fail from their headers alone, never read, each with the fix; the
    digits beside them are protected."""
    from preempt.protection import folder, memory
    from preempt.speed import MIB

    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 2)
    Image.new("L", (400, 300), 128).save(source / "large.png")  # 0.12 megapixels
    Image.new("L", (100, 100), 128).save(source / "medium.png")
    budget = 2048 * MIB  # the CPU's default
    digits_need, medium_needs = (
        memory.peak_bytes(16 * 16, 2, 1, 20, budget),
        memory.peak_bytes(100**2, 1, 1, 20, budget),
    )
    monkeypatch.setattr(memory, "available_memory", lambda device: ((digits_need + medium_needs) // 2, "of RAM"))
    read: list[str] = []
    monkeypatch.setattr(folder, "read_photo", lambda path, channels: read.append(path.name) or read_photo(path, 1))

    summary = protect(source, target, zoo_dir, *DIGITS, "protect.max_megapixels=0.1")
    assert sorted(summary.protected) == sorted(path.name for path in source.glob("0*.png")) == sorted(read)
    large = summary.failed["large.png"]
    assert large.startswith("large.png is 400x300 (WxH), 0.12 megapixels, over protect.max_megapixels=0.1: resize")
    assert "medium.png is 100x100 (WxH), 0.01 megapixels: protecting it needs about" in summary.failed["medium.png"]
    assert "GB of RAM: resize it, protect it on a GPU (protect.device=cuda)" in summary.failed["medium.png"]
    manifest = read_manifest(target)
    assert manifest["large.png"]["status"] == manifest["medium.png"]["status"] == "failed"
    assert not (target / "large.png").exists() and not (target / "medium.png").exists()
    assert manifest["large.png"]["retry"] is manifest["medium.png"]["retry"] is True

    monkeypatch.undo()  # more memory free, and a higher limit: the next run protects what was refused, nothing else
    rerun = protect(source, target, zoo_dir, *DIGITS, "protect.max_megapixels=1")
    assert sorted(rerun.protected) == ["large.png", "medium.png"] and len(rerun.done_before) == 2


def test_max_megapixels_is_positive_or_null(tmp_path: Path, zoo_dir: Path, no_model_building) -> None:
    source = tmp_path / "in"
    write_digits(source, 1)
    with pytest.raises(ConfigError, match=r"protect\.max_megapixels=0: Input should be greater than 0"):
        protect(source, tmp_path / "out", zoo_dir, *DIGITS, "protect.max_megapixels=0")


def test_a_photo_with_a_side_under_6_px_is_protected_and_its_ssim_not_measured(
    tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    """SSIM's 11-px window reflects 5 px beyond each side, so torchmetrics refuses a 5-px side: the file is still
    protected, with `ssim: null` and why, and the folder goes on."""
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 1)
    Image.fromarray(np.linspace(0, 255, 5 * 40).reshape(5, 40).astype(np.uint8)).save(source / "thin.png")
    summary = protect(source, target, zoo_dir, *DIGITS)
    assert len(summary.protected) == 2 and not summary.failed
    manifest = read_manifest(target)
    assert manifest["thin.png"]["ssim"] is None
    assert manifest["thin.png"]["ssim_note"] == "not measured: a side under 6 px is smaller than SSIM's window"
    digit = next(name for name in summary.protected if name != "thin.png")
    assert 0 < manifest[digit]["ssim"] <= 1 and "ssim_note" not in manifest[digit]
    assert [check.verdict for check in verify(target)] == [WITHIN] * 2


def test_a_protection_that_is_not_finite_fails_its_file_and_the_batch_is_written(
    tmp_path: Path, zoo_dir: Path, digits_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    from preempt.defenses.fast_preemption import FastPreemption

    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 3)  # one batch
    names = sorted(path.name for path in source.glob("*.png"))
    protect_batch = FastPreemption.__call__

    def diverging(self: FastPreemption, x, labels):
        protected = protect_batch(self, x, labels)
        protected[1, 0, 0, 0] = float("nan")
        return protected

    monkeypatch.setattr(FastPreemption, "__call__", diverging)
    summary = protect(source, target, zoo_dir, *DIGITS)
    assert sorted(summary.protected) == [names[0], names[2]]
    assert summary.failed[names[1]].startswith("the protection is not finite (NaN/inf): the defense diverged")
    assert read_manifest(target)[names[1]]["status"] == "failed" and not (target / names[1]).exists()
    assert [check.verdict for check in verify(target)] == [WITHIN] * 2
