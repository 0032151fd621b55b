"""`preempt verify OUTPUT_DIR`: one line per file and a sum; it exits 1 unless every file is within budget."""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers.manifests import protected_folder
from helpers.protection import DIGITS, protect, write_digits
from PIL import Image

from preempt.commands.verify import main
from preempt.protection.manifest import MANIFEST_FILE


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


def test_a_folder_without_a_manifest_is_a_one_line_refusal(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert re.fullmatch(r"error: .*manifest\.jsonl is missing or empty.*\n", capsys.readouterr().err)


def test_a_malformed_manifest_is_a_one_line_refusal_with_exit_status_2(tmp_path: Path, capsys) -> None:
    _, target = protected_folder(tmp_path, [3])
    with (target / MANIFEST_FILE).open("a") as handle:
        handle.write('{"input": "b.png", "output": ["b.png"]}\n')
    assert main([str(target)]) == 2
    assert re.fullmatch(r"error: .*manifest\.jsonl, line 2: it has no input_dir.*\n", capsys.readouterr().err)


def test_a_receiver_checks_against_a_budget_of_their_own(tmp_path: Path, capsys) -> None:
    _, target = protected_folder(tmp_path, [8, 3])
    assert main([str(target), "--eps", "8/255"]) == 0
    assert main([str(target), "--eps", "4/255"]) == 1
    assert "| 0.png | OVER | 8 | 8 | 4 |" in capsys.readouterr().out
    assert main([str(target), "--eps", "0.04", "--norm", "RMS"]) == 0  # every pixel 8 levels off: RMS 8/255


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        (["--eps", "8"], r"--eps: Linf eps 8 is more than .*write 8/255"),
        (["--eps", "8/0"], r"'8/0' is not a number or a fraction such as 8/255"),
        (["--eps", "-0.1", "--norm", "L2"], r"--eps: eps -0\.1 is not a positive number"),
        (["--norm", "L2"], r"--norm L2 is the norm of a budget: give the budget too"),
    ],
)
def test_a_bad_budget_is_refused_before_any_file_is_read(tmp_path: Path, capsys, arguments, refusal) -> None:
    with pytest.raises(SystemExit) as refused:
        main([str(tmp_path / "nothing"), *arguments])
    assert refused.value.code == 2 and re.search(refusal, capsys.readouterr().err)
