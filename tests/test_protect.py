"""`preempt protect` and `preempt verify` on real folders: mixed files, reruns, a real kill, and the victim's view."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from omegaconf import open_dict
from PIL import Image

from preempt.datasets.digits import digits
from preempt.datasets.package_samples import export_samples, foolbox_data_dir
from preempt.figures import plot_protected
from preempt.manifest import MANIFEST_FILE, read_manifest
from preempt.photos import read_photo
from preempt.protect import Summary, composed, protect_folder
from preempt.run import evaluate
from preempt.validation import ConfigError
from preempt.verify import MISSING, OVER, WITHIN, print_verification, verify

FAST = "defense.n_samples=4"  # the protection's N: 4 keeps the CIFAR-10 ResNet-18 tests to seconds
DIGITS = ["classifier=digits_cnn", "backbone=digits_cnn_at", "threat.eps=0.2"]


def protect(input_dir: Path, output_dir: Path, zoo_dir: Path, *overrides: str, force: bool = False) -> Summary:
    with composed([f"paths.cache_dir={zoo_dir}", *overrides], output_dir) as cfg:
        return protect_folder(cfg, input_dir, output_dir, force=force, progress=False)


def cifar_array(index: int) -> np.ndarray:
    path = sorted(foolbox_data_dir().glob("cifar10_*.png"))[index]
    return np.asarray(Image.open(path).convert("RGB"))


def mixed_folder(folder: Path) -> dict[str, str]:
    """Real images in every size, mode and format protect reads, one corrupt file and one text file; returns the
    good files' expected output modes."""
    (folder / "sub").mkdir(parents=True)
    for index in range(3):
        Image.fromarray(cifar_array(index)).save(folder / f"cifar_{index}.png")
    shutil.copy(next(foolbox_data_dir().glob("imagenet_*.jpg")), folder / "sub" / "photo.jpg")
    Image.fromarray(cifar_array(3)).convert("L").resize((40, 30)).save(folder / "sub" / "gray.png")
    rgba = np.concatenate([cifar_array(4), np.linspace(0, 255, 32 * 32).reshape(32, 32, 1).astype(np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    wide = (np.asarray(Image.fromarray(cifar_array(5)).convert("L"), dtype=np.uint16) * 257)[:20, :20]
    Image.fromarray(wide).save(folder / "wide16.png")
    Image.fromarray(cifar_array(6)).resize((48, 48)).save(folder / "pic.webp", lossless=True)
    Image.fromarray(cifar_array(7)).save(folder / "broken.png")
    (folder / "broken.png").write_bytes((folder / "broken.png").read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")
    outputs = {f"cifar_{index}.png": "RGB" for index in range(3)}
    return outputs | {"sub/photo.png": "RGB", "sub/gray.png": "RGB", "rgba.png": "RGBA", "wide16.png": "RGB",
                      "pic.png": "RGB"}  # fmt: skip


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


def write_digits(folder: Path, n_samples: int) -> None:
    """Held-out digits as 8-bit grayscale PNGs named `<index>_<label>.png` (the folder dataset's format)."""
    folder.mkdir(parents=True)
    dataset = digits(n_samples=n_samples)
    for index, (image, label) in enumerate(zip(dataset.images, dataset.labels, strict=True)):
        pixels = (image[0] * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels, mode="L").save(folder / f"{index:04d}_{int(label)}.png")


def protect_command(source: Path, target: Path, zoo_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "preempt.protect", str(source), str(target), f"paths.cache_dir={zoo_dir}",
            *DIGITS, *overrides, "--no-progress"]  # fmt: skip


def test_a_killed_run_resumes_to_the_same_files_as_an_uninterrupted_one(
    tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    source = tmp_path / "in"
    write_digits(source, 160)
    (source / "0080_0.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # a corrupt file among them
    settings = ("batch_size=2",)
    whole = subprocess.run(protect_command(source, tmp_path / "whole", zoo_dir, *settings), capture_output=True,
                           text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert whole.returncode == 1, whole.stderr  # 1: a file failed
    assert "failed: 0080_0.png" in whole.stdout

    target = tmp_path / "killed"
    run = subprocess.Popen(protect_command(source, target, zoo_dir, *settings), cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    manifest = target / MANIFEST_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < 20):
        time.sleep(0.01)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    written = len(read_manifest(target))
    assert 20 <= written < 160, f"the kill came after {written} of 160 files; it must land midway"

    resumed = subprocess.run(protect_command(source, target, zoo_dir, *settings), capture_output=True, text=True,
                             cwd=ROOT, timeout=300)  # fmt: skip
    assert resumed.returncode == 1, resumed.stderr
    assert not list(target.rglob("*.tmp"))
    finished = {path.name: path.read_bytes() for path in (tmp_path / "whole").glob("*.png")}
    assert len(finished) == len(list(source.glob("*.png"))) - 1
    assert {path.name: path.read_bytes() for path in target.glob("*.png")} == finished
    labels = {name: entry.get("label") for name, entry in read_manifest(tmp_path / "whole").items()}
    assert {name: entry.get("label") for name, entry in read_manifest(target).items()} == labels


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


def test_verify_names_edited_missing_and_over_budget_outputs(
    tmp_path: Path, zoo_dir: Path, digits_models, capsys
) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 4)
    protect(source, target, zoo_dir, *DIGITS)
    assert print_verification(target) == 0
    three_files, one_file = (
        plot_protected(target, tmp_path / "3.png", limit=3),
        plot_protected(target, tmp_path / "1.png", 1),
    )
    with Image.open(three_files) as three, Image.open(one_file) as one:
        assert three.width == 3 * one.width and three.height == one.height  # a column per file, three rows
    files = sorted(target.glob("*.png"))
    pixels = np.asarray(Image.open(files[0])).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # far outside 0.2 = 51 levels
    Image.fromarray(pixels, mode="L").save(files[0])
    files[1].unlink()
    checks = {check.output: check for check in verify(target)}
    assert checks[files[0].name].verdict == OVER and "output changed" in checks[files[0].name].note
    assert checks[files[1].name].verdict == MISSING
    assert [checks[file.name].verdict for file in files[2:]] == [WITHIN, WITHIN]
    assert print_verification(target) == 1
    assert "4 file(s): 2 within, 1 OVER, 1 missing" in capsys.readouterr().out


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


def test_the_console_script_lists_its_commands_and_protects(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    script = Path(sys.executable).parent / "preempt"
    usage = subprocess.run([str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "protect" in usage.stderr and "verify" in usage.stderr
    source = tmp_path / "in"
    write_digits(source, 3)
    done = subprocess.run([str(script), "protect", str(source), str(tmp_path / "out"), f"paths.cache_dir={zoo_dir}",
                           *DIGITS, "--verify", "--no-progress"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "protected 3 file(s)" in done.stdout and "3 file(s): 3 within" in done.stdout
    entries = [json.loads(line) for line in (tmp_path / "out" / MANIFEST_FILE).read_text().splitlines()]
    assert [entry["input"] for entry in entries] == sorted(path.name for path in source.glob("*.png"))


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
