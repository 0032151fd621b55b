"""Feature Distillation: the authors' 25/30 table, a deterministic lossy transform, and tables read from files."""

from __future__ import annotations

from pathlib import Path

import torch

from preempt.receiver_defenses.dct import quantize, read_table, write_table
from preempt.receiver_defenses.feature_distillation import FEATURE_DISTILLATION_TABLE, FeatureDistillation


def test_the_table_is_25_on_the_lowest_4x4_frequencies_and_30_elsewhere() -> None:
    table = FeatureDistillation().table
    assert table.shape == (8, 8)
    assert (table[:4, :4] == 25).all()
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[:4, :4] = False
    assert (table[outside] == 30).all()
    assert torch.equal(table, FEATURE_DISTILLATION_TABLE)


def test_the_output_differs_from_the_input_but_is_deterministic(cifar_batch) -> None:
    x = cifar_batch[0]
    out = FeatureDistillation().transform(x)
    assert (out - x).abs().mean() > 1e-3
    torch.manual_seed(1)
    assert torch.equal(FeatureDistillation().transform(x), out)
    assert torch.equal(out, quantize(x, FEATURE_DISTILLATION_TABLE))


def test_a_table_file_replaces_the_default_table(tmp_path: Path, cifar_batch) -> None:
    x = cifar_batch[0]
    table = torch.full((8, 8), 20.0, dtype=torch.float64)
    table[0, 0], table[7, 7] = 100.0, 60.0
    path = write_table(tmp_path / "learned.txt", table, ["test table"])
    transform = FeatureDistillation(table=str(path))
    assert transform.table_path == str(path)
    assert torch.equal(transform.table, read_table(path))
    out = transform.transform(x)
    assert torch.equal(out, quantize(x, read_table(path)))
    assert not torch.equal(out, FeatureDistillation().transform(x)), "the file's table must change the result"
