"""Algorithm 2: counting each block's most-changed DCT frequency, the 20..100 table, and the command."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from preempt.receiver_defenses.dct import (
    BLOCK,
    _dct_matrix,
    most_changed_frequency_counts,
    read_table,
    table_from_counts,
)


def basis_image(row: int, col: int, blocks: int = 2) -> torch.Tensor:
    """An image whose every 8×8 block is the DCT basis function (row, col), scaled small."""
    d = _dct_matrix(BLOCK, torch.float64, torch.device("cpu"))
    pattern = torch.outer(d[row], d[col]) * 0.05
    return pattern.repeat(blocks, blocks)[None, None]


@pytest.mark.parametrize(("row", "col"), [(0, 0), (0, 1), (3, 5), (7, 7)])
def test_a_perturbation_along_one_frequency_is_counted_at_that_frequency(row: int, col: int) -> None:
    clean = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)
    counts, unchanged = most_changed_frequency_counts(clean, clean + basis_image(row, col))
    assert unchanged == 0 and counts[row, col] == 4 and counts.sum() == 4


def test_blocks_the_attack_left_alone_are_not_counted() -> None:
    clean = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    adversarial = clean.clone()
    adversarial[0, 0, :8, :8] += 0.01
    counts, unchanged = most_changed_frequency_counts(clean, adversarial)
    assert counts.sum() == 1 and unchanged == 2 * 3 * 4 - 1


def test_the_table_maps_counts_to_20_through_100() -> None:
    counts = torch.zeros(8, 8, dtype=torch.long)
    counts[0, 0], counts[0, 1] = 10, 5
    table = table_from_counts(counts)
    assert table[0, 0] == 100 and table[0, 1] == 60 and table[5, 5] == 20
    with pytest.raises(ValueError, match="changed no block"):
        table_from_counts(torch.zeros(8, 8, dtype=torch.long))


@pytest.mark.slow
def test_the_command_learns_a_table_on_digits_and_never_overwrites_one(tmp_path: Path, zoo_dir: Path, digits_models):
    table_file = tmp_path / "digits_table.txt"
    command = [
        sys.executable,
        "-m",
        "preempt.commands.learn_quantization",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={zoo_dir}",
        "dataset.n_samples=32",
        "attack.steps=2",
        f"table_file={table_file}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = read_table(table_file)
    assert table.max() == 100 and table.min() >= 20
    assert "victim digits_lenet_at; attack pgd" in table_file.read_text()
    learned = table_file.read_text()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode != 0 and "already exists" in again.stderr.splitlines()[-1]
    assert table_file.read_text() == learned
