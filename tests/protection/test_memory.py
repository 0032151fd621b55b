"""The memory estimate that refuses files before they are read, and SSIM computed in strips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.protection.memory import (
    GB,
    FileLimits,
    available_memory,
    peak_bytes,
    structural_similarity,
)
from preempt.speed import MIB, STEP_TENSORS_PER_COPY

TWELVE_MP = 4000 * 3000


@pytest.mark.parametrize(
    ("shape", "strip_bytes"), [((1, 3, 300, 200), 10 * MIB), ((3, 1, 24, 16), 1), ((2, 3, 6, 9), 1)]
)
def test_ssim_in_strips_is_torchmetrics_ssim_bit_for_bit(shape: tuple[int, ...], strip_bytes: int) -> None:
    """Strips of 1 row (the smallest budget) up to tens of rows, each reading 5 rows beyond its sides, give the map
    of the whole image: the same SSIM to the last bit."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator)
    sent = (x + 0.05 * torch.rand(shape, generator=generator)).clamp(0, 1)
    whole = structural_similarity_index_measure(sent, x, data_range=1.0, reduction="none")
    assert torch.equal(structural_similarity(sent, x, strip_bytes), whole)


def test_the_estimate_keeps_n_starts_within_the_budget_and_one_copy_at_least() -> None:
    """A 12-megapixel RGB photo is 144 MB a tensor: its 20 starts outgrow a 2 GiB budget, which keeps 14 of them
    and passes of 2 copies (6 tensors each); with a budget too small for any, one start and one copy remain."""
    photo = 4 * 3 * TWELVE_MP
    budget = 2048 * MIB
    fixed = peak_bytes(TWELVE_MP, 1, 3, 20, budget) - 14 * photo - 2 * STEP_TENSORS_PER_COPY * photo
    assert fixed == peak_bytes(TWELVE_MP, 1, 3, 1, 0) - photo - STEP_TENSORS_PER_COPY * photo
    assert peak_bytes(TWELVE_MP, 1, 3, 20, 10**12) == fixed + 20 * photo + 20 * STEP_TENSORS_PER_COPY * photo
    assert peak_bytes(TWELVE_MP // 4, 1, 3, 20, budget) < peak_bytes(TWELVE_MP, 1, 3, 20, budget)
    assert peak_bytes(TWELVE_MP, 1, 1, 20, budget) < peak_bytes(TWELVE_MP, 1, 3, 20, budget)  # a gray model


def limits(available_gb: float, max_megapixels: float | None = None) -> FileLimits:
    return FileLimits(3, 20, 2048 * MIB, int(available_gb * GB), "of RAM available", max_megapixels)


def test_limits_refuse_over_max_megapixels_naming_the_file_and_the_fix() -> None:
    assert limits(100, max_megapixels=24).too_many_megapixels("photo.png", (6000, 4000)) is None
    refusal = limits(100, max_megapixels=20).too_many_megapixels("photo.png", (6000, 4000))
    assert refusal.startswith("photo.png is 6000x4000 (WxH), 24 megapixels, over protect.max_megapixels=20:")
    assert "resize it to at most 20 megapixels, or raise protect.max_megapixels (null: no limit)" in refusal
    assert limits(100).too_many_megapixels("photo.png", (60000, 40000)) is None  # null: no limit


def test_limits_refuse_a_batch_over_the_memory_available_with_the_estimate() -> None:
    estimate = limits(0).peak((4000, 3000))
    assert limits(estimate / GB).too_large("photo.jpg", (4000, 3000), 1) is None
    refusal = limits(estimate / GB - 0.1).too_large("photo.jpg", (4000, 3000), 1)
    assert refusal.startswith("photo.jpg is 4000x3000 (WxH), 12 megapixels: protecting it needs about ")
    assert f"{estimate / GB:.1f} GB (N=20, memory budget 2048 MiB), and {estimate / GB - 0.1:.1f} GB of RAM" in refusal
    assert "resize it, protect it on a GPU (protect.device=cuda)" in refusal and "protect.max_megapixels" in refusal
    several = limits(estimate / GB).too_large("small.png", (400, 300), 150)
    assert "its batch of 150 such files" in several and "a smaller protect.max_batch_megapixels" in several


def test_on_the_cpu_the_memory_available_is_what_linux_counts_available() -> None:
    available, what = available_memory(torch.device("cpu"))
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert what == "of RAM available"
    assert abs(available - int(meminfo["MemAvailable"].split()[0]) * 1024) < GB  # it moves while the tests run
