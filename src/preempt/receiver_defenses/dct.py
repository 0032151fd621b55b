"""8×8 block DCT quantization (JPEG's transform without its entropy coding), batched on any device.

Shared by Feature Distillation and the DCT-quantization + distortion defense; the second paper's Algorithm 2 learns a
defensive table from which frequencies an attack changes most (`python -m preempt.commands.learn_quantization`).
As in both papers' code, each color channel (RGB, not YCbCr) is transformed separately on 0–255 values, without
JPEG's −128 level shift and without chroma subsampling; the orthonormal 2-D DCT-II is JPEG's forward DCT.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from preempt.files import special_file_kind, write_text_atomically

BLOCK = 8
LEARN_A_TABLE = (
    "learn one with `python -m preempt.commands.learn_quantization` or leave table=null for Feature Distillation's"
)


@functools.cache
def _dct_matrix(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """D with D @ v the orthonormal DCT-II of v (so D.T @ c inverts it)."""
    k = torch.arange(size, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(size, dtype=torch.float64).unsqueeze(0)
    matrix = math.sqrt(2 / size) * torch.cos(math.pi * (2 * n + 1) * k / (2 * size))
    matrix[0] /= math.sqrt(2)
    return matrix.to(dtype=dtype, device=device)


def to_blocks(x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """(B, C, H, W) → (B, C, H'/8, W'/8, 8, 8), edge-padding H and W up to multiples of 8 (as JPEG encoders do)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % BLOCK, -width % BLOCK
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    b, c, h, w = x.shape
    blocks = x.view(b, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5)
    return blocks, (height, width)


def from_blocks(blocks: Tensor, size: tuple[int, int]) -> Tensor:
    b, c, rows, cols = blocks.shape[:4]
    x = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, rows * BLOCK, cols * BLOCK)
    return x[..., : size[0], : size[1]]


def block_dct(blocks: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II of every trailing 8×8 block."""
    d = _dct_matrix(BLOCK, blocks.dtype, blocks.device)
    return d @ blocks @ d.T


def block_idct(coefficients: Tensor) -> Tensor:
    d = _dct_matrix(BLOCK, coefficients.dtype, coefficients.device)
    return d.T @ coefficients @ d


def dct_coefficients(x: Tensor) -> Tensor:
    """DCT coefficients of every 8×8 block of [0,1] images, on the 0–255 scale the tables are made for."""
    blocks, _ = to_blocks(x * 255.0)
    return block_dct(blocks)


def quantize(x: Tensor, table: Tensor) -> Tensor:
    """Quantize every block's DCT coefficients with `table` (8×8 steps), dequantize and invert: [0,1] out."""
    blocks, size = to_blocks(x * 255.0)
    steps = table.to(dtype=x.dtype, device=x.device)
    coefficients = torch.round(block_dct(blocks) / steps) * steps
    restored = from_blocks(block_idct(coefficients), size)
    return (restored / 255.0).clamp(0.0, 1.0)


def read_table(path: str | Path) -> Tensor:
    """An 8×8 table of positive finite steps from a text file (8 rows of 8 numbers; lines starting with # are notes).
    Python reads "inf" and "nan" as numbers, and either step would make every quantized pixel NaN: refused."""
    path = Path(path)
    kind = special_file_kind(path)
    if kind is not None:
        raise ValueError(f"quantization table {path} is {kind}, not a text file: point table at the file itself")
    if not path.is_file():
        raise ValueError(f"quantization table {path} does not exist (folder {path.parent.resolve()}); {LEARN_A_TABLE}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"quantization table {path} is not text (a binary file?): a table is 8 rows of 8 numbers; {LEARN_A_TABLE}"
        ) from None
    numbered = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    rows = [(number, line.split()) for number, line in numbered if line and not line.startswith("#")]
    shape = [len(row) for _, row in rows]
    if shape != [BLOCK] * BLOCK:
        raise ValueError(f"quantization table {path} must hold 8 rows of 8 numbers; its rows have {shape} numbers")
    steps = []
    for number, row in rows:
        for column, value in enumerate(row, start=1):
            where = f"quantization table {path}, line {number}, number {column}"
            try:
                step = float(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not a number; expected 8 rows of 8 numbers") from None
            if not step > 0 or not math.isfinite(step):
                raise ValueError(
                    f"{where}: the step {value} is not a positive finite number (0 divides by zero, inf and nan make "
                    f"every pixel NaN). Write a step > 0 there, or {LEARN_A_TABLE}"
                )
            steps.append(step)
    return torch.tensor(steps, dtype=torch.float64).view(BLOCK, BLOCK)


SMALLEST_STEP, LARGEST_STEP = 20.0, 100.0


def most_changed_frequency_counts(clean: torch.Tensor, adversarial: torch.Tensor) -> tuple[torch.Tensor, int]:
    """How often each of the 64 frequencies is a block's largest |DCT(clean) − DCT(adversarial)|, and how many
    blocks the attack left unchanged (they have no largest change and are not counted)."""
    change = (dct_coefficients(clean) - dct_coefficients(adversarial)).abs().flatten(end_dim=-3).flatten(1)
    changed = change.amax(dim=1) > 0
    counts = torch.bincount(change[changed].argmax(dim=1), minlength=BLOCK * BLOCK)
    return counts.view(BLOCK, BLOCK), int((~changed).sum())


def table_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Algorithm 2, line 15: Q = Q0 / max(Q0) × 80 + 20."""
    if counts.max() == 0:
        raise ValueError("the attack changed no block of any image, so there is nothing to learn a table from")
    scale = LARGEST_STEP - SMALLEST_STEP
    return counts.double() / counts.max() * scale + SMALLEST_STEP


def write_table(path: str | Path, table: Tensor, notes: list[str]) -> Path:
    """The table as 8 rows of 8 numbers, under `# ` notes that say how it was learned."""
    lines = [f"# {note}" for note in notes]
    lines += [" ".join(f"{value:6.2f}" for value in row) for row in table.tolist()]
    return write_text_atomically("\n".join(lines) + "\n", Path(path))
