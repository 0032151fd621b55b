"""`preempt verify OUTPUT_DIR`: one line per file and a sum; it exits 1 unless every file is within budget."""

from pathlib import Path

import numpy as np
import pytest
from helpers.protection import DIGITS, protect, write_digits
from PIL import Image

from preempt.commands.verify import main


def test_the_table_the_sum_and_the_exit_status(tmp_path: Path, zoo_dir: Path, digits_models, capsys) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    write_digits(source, 3)
    protect(source, target, zoo_dir, *DIGITS)
    assert main([str(target)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| output | verdict |") and "3 file(s): 3 within, 0 OVER, 0 missing" in printed
    first = sorted(target.glob("*.png"))[0]
    pixels = np.asarray(Image.open(first)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels, mode="L").save(first)
    assert main([str(target), "--input", str(source)]) == 1
    assert f"| {first.name} | OVER |" in capsys.readouterr().out


def test_a_folder_without_a_manifest_is_a_one_line_refusal(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^error: .*manifest\.jsonl is missing or empty"):
        main([str(tmp_path)])
