"""The 8×8 block DCT against SciPy, blocking round trips, quantization's idempotence, and table files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import scipy.fft
import torch

from preempt.receiver_defenses.dct import (
    BLOCK,
    _dct_matrix,
    block_dct,
    block_idct,
    dct_coefficients,
    from_blocks,
    most_changed_frequency_counts,
    quantize,
    read_table,
    table_from_counts,
    to_blocks,
    write_table,
)
from preempt.receiver_defenses.feature_distillation import FEATURE_DISTILLATION_TABLE


def test_block_dct_is_scipys_orthonormal_dct_ii_and_block_idct_inverts_it() -> None:
    torch.manual_seed(0)
    blocks = torch.rand(3, 5, BLOCK, BLOCK, dtype=torch.float64) * 255
    expected = torch.from_numpy(scipy.fft.dctn(blocks.numpy(), axes=(-2, -1), norm="ortho"))
    coefficients = block_dct(blocks)
    torch.testing.assert_close(coefficients, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(block_idct(coefficients), blocks, rtol=0, atol=1e-10)
    inverse = torch.from_numpy(scipy.fft.idctn(expected.numpy(), axes=(-2, -1), norm="ortho"))
    torch.testing.assert_close(block_idct(expected), inverse, rtol=0, atol=1e-10)


def test_dct_coefficients_are_on_the_0_255_scale() -> None:
    # A constant block of value v has DC coefficient 8·v (orthonormal DCT-II) on the 0–255 scale.
    x = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    coefficients = dct_coefficients(x)
    assert coefficients.shape == (1, 1, 1, 1, 8, 8)
    assert coefficients[..., 0, 0].item() == pytest.approx(8 * 127.5)
    assert coefficients.flatten()[1:].abs().max() < 1e-9


@pytest.mark.parametrize("shape", [(2, 3, 16, 24), (2, 3, 13, 21), (1, 1, 7, 9)])
def test_blocking_and_dct_round_trip_returns_the_input(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.rand(shape)
    blocks, size = to_blocks(x)
    assert blocks.shape[-2:] == (BLOCK, BLOCK)
    assert blocks.shape[2] == -(-shape[2] // BLOCK) and blocks.shape[3] == -(-shape[3] // BLOCK)
    restored = from_blocks(block_idct(block_dct(blocks)), size)
    assert restored.shape == x.shape
    torch.testing.assert_close(restored, x, rtol=0, atol=1e-5)


def test_blocks_hold_the_images_8x8_tiles_with_replicated_edges() -> None:
    x = torch.arange(13 * 21, dtype=torch.float64).reshape(1, 1, 13, 21)
    blocks, _ = to_blocks(x)
    torch.testing.assert_close(blocks[0, 0, 0, 1], x[0, 0, :8, 8:16], rtol=0, atol=0)
    # The last block row reads rows 8..12, then row 12 again (edge padding, as JPEG encoders do).
    torch.testing.assert_close(blocks[0, 0, 1, 0, 5:], x[0, 0, 12:13, :8].expand(3, 8), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 13, 21)])
def test_quantization_with_tiny_steps_is_the_identity(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.rand(shape)
    tiny = torch.full((BLOCK, BLOCK), 1e-9, dtype=torch.float64)
    torch.testing.assert_close(quantize(x, tiny), x, rtol=0, atol=1e-5)
    assert (quantize(x, FEATURE_DISTILLATION_TABLE) - x).abs().max() > 0.01, "FD's table must change the image"


def test_quantizing_twice_equals_quantizing_once(cifar_batch) -> None:
    # Quantized coefficients are multiples of the steps, and DCT(IDCT(c)) = c up to rounding error far below half
    # a step, so re-quantizing gives the same multiples: exact idempotence. Two things can break it and are
    # avoided here: the clamp to [0,1] (a clamped pixel changes its block's coefficients) — so the images are
    # squeezed into [0.25, 0.75] and we check that nothing was clamped — and sides that are not multiples of 8
    # (the second pass edge-pads the cropped reconstruction, not the first pass's own padding; on 13×21 crops
    # of these images the two passes differ by up to ~0.05), so the CIFAR sides (32) are used.
    x = 0.25 + 0.5 * cifar_batch[0].double()
    once = quantize(x, FEATURE_DISTILLATION_TABLE)
    assert once.min() > 0 and once.max() < 1, "precondition: the first pass clamped nothing"
    assert not torch.equal(once, x)
    torch.testing.assert_close(quantize(once, FEATURE_DISTILLATION_TABLE), once, rtol=0, atol=1e-12)


def test_quantized_coefficients_are_multiples_of_the_steps(cifar_batch) -> None:
    # The unclamped path: coefficients of the quantized image sit on the table's grid.
    x = 0.25 + 0.5 * cifar_batch[0].double()
    steps = torch.full((BLOCK, BLOCK), 17.0, dtype=torch.float64)
    multiples = dct_coefficients(quantize(x, steps)) / steps
    torch.testing.assert_close(multiples, multiples.round(), rtol=0, atol=1e-9)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_refused_naming_the_file(path: Path, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        read_table(path)
    assert message in str(info.value)


def test_a_missing_table_file_is_refused_naming_it(tmp_path: Path) -> None:
    assert_refused_naming_the_file(tmp_path / "absent.txt", "does not exist")


def test_a_table_of_the_wrong_shape_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "seven_rows.txt", [" ".join(["10"] * 8)] * 7)
    assert_refused_naming_the_file(path, "8 rows of 8")
    path = write_lines(tmp_path / "short_row.txt", [" ".join(["10"] * 8)] * 7 + [" ".join(["10"] * 7)])
    assert_refused_naming_the_file(path, "8 rows of 8")


def test_a_non_numeric_table_is_refused_naming_it(tmp_path: Path) -> None:
    rows = [" ".join(["10"] * 8)] * 7 + ["10 10 10 ten 10 10 10 10"]
    assert_refused_naming_the_file(write_lines(tmp_path / "words.txt", rows), "8 rows of 8")


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_a_table_with_a_non_positive_step_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    rows = [" ".join(["10"] * 8)] * 7 + [" ".join(["10"] * 7 + [bad])]
    assert_refused_naming_the_file(write_lines(tmp_path / "zero.txt", rows), "positive")


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "Infinity"])
def test_a_table_with_an_infinite_or_nan_step_is_refused_naming_the_entry(tmp_path: Path, bad: str) -> None:
    """Python reads these as numbers; quantizing with them makes every pixel NaN."""
    rows = ["# a note", *[" ".join(["10"] * 8)] * 6, " ".join(["10"] * 2 + [bad] + ["10"] * 5), " ".join(["10"] * 8)]
    path = write_lines(tmp_path / "infinite.txt", rows)
    assert_refused_naming_the_file(path, f"line 8, number 3: the step {bad} is not a positive finite number")


def test_a_binary_table_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "table.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert_refused_naming_the_file(path, "is not text (a binary file?)")


@pytest.mark.parametrize(("where", "kind"), [(None, "a folder"), (Path("/dev/zero"), "a character device")])
def test_a_table_path_that_is_no_regular_file_is_refused_saying_what_it_is(
    tmp_path: Path, where: Path | None, kind: str
) -> None:
    """Not "does not exist" for a folder, and no endless read of a device."""
    assert_refused_naming_the_file(where or tmp_path, f"is {kind}, not a text file")


def test_written_tables_read_back_with_their_notes_skipped(tmp_path: Path) -> None:
    table = torch.arange(1, 65, dtype=torch.float64).reshape(8, 8) + 0.25
    path = write_table(tmp_path / "learned.txt", table, ["learned on digits", "attack pgd"])
    text = path.read_text()
    assert text.startswith("# learned on digits\n# attack pgd\n")
    torch.testing.assert_close(read_table(path), table, rtol=0, atol=0)


# Algorithm 2 of the preprocessing-defense paper: a defensive table from the frequencies an attack changes most.


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
