"""`preempt protect` as users run it: a real kill and a resume to the same files, and the console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from helpers.manifests import protected_folder
from helpers.protection import DIGITS, protect_command, write_digits

from preempt.commands.protect import main, parse_arguments
from preempt.protection.manifest import MANIFEST_FILE, read_manifest


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


def test_overrides_may_come_after_flags() -> None:
    arguments = parse_arguments(["in", "out", "--no-progress", "batch_size=1", "--force", "seed=2"])
    assert arguments.overrides == ["batch_size=1", "seed=2"] and arguments.no_progress and arguments.force


def test_a_malformed_manifest_in_output_dir_is_one_error_line(tmp_path: Path, zoo_dir: Path) -> None:
    source, target = protected_folder(tmp_path, [3])
    (target / MANIFEST_FILE).write_text('{"input": "0.png", "status": "weird"}\n')
    with pytest.raises(SystemExit, match=r"^error: .*manifest\.jsonl, line 1: it has no output, input_dir"):
        main([str(source), str(target), f"paths.cache_dir={zoo_dir}", *DIGITS, "--no-progress"])
