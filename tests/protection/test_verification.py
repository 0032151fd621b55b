"""Verification trusts only the files: edited, missing and over-budget outputs are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers.protection import DIGITS, protect, write_digits
from PIL import Image

from preempt.commands.verify import print_verification
from preempt.figures import plot_protected
from preempt.protection.verification import MISSING, OVER, WITHIN, verify


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
