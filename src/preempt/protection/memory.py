"""The memory `preempt protect` needs for a file, estimated from its size before it is read, and the SSIM measured
in strips so that one photo's metric does not outgrow its protection: a file that would not fit is refused and
recorded (`FileLimits`), rather than the process being killed with the rest of the folder.

A batch of B photos of P pixels in C channels holds float32 tensors of S = 4·C·P bytes per photo: the pixels as
read, the batch, the iterate, the examples' sum and the step's arithmetic, or after the defense the quantized and
decoded files and the SSIM map (`BATCH_TENSORS`, each B·S). Fast Preemption adds what the memory budget
(`speed.memory_budget_bytes`) bounds: a round of random starts (each image's N when they fit the budget, at least
one) and a backbone pass (`speed.STEP_TENSORS_PER_COPY` tensors of S per copy, at least one copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.speed import MIB, STEP_TENSORS_PER_COPY, memory_budget_bytes

GB = 10**9
FLOAT_BYTES = 4
# Tensors of the batch's size a protection holds at its peak besides the defense's round and pass: the pixels as
# read and stacked, the iterate, the examples' sum, the step's arithmetic (calibrated: see `peak_bytes`).
BATCH_TENSORS = 6
# torchmetrics' SSIM holds about this many bytes per value it filters (its 11×11 grouped convolution: measured 61
# tensors of the image's size on RGB, 94 on gray), so it filters strips of rows holding at most `SSIM_STRIP_BYTES`.
SSIM_BYTES_PER_VALUE = 400
SSIM_STRIP_BYTES = 256 * MIB
# Rows the 11-px Gaussian window (sigma 1.5) reads on each side of a pixel; torchmetrics reflects the image by as
# many, so a side must be longer than that.
SSIM_HALO = 5
SSIM_SMALLEST_SIDE = SSIM_HALO + 1
SSIM_NOT_MEASURED = f"not measured: a side under {SSIM_SMALLEST_SIDE} px is smaller than SSIM's window"


def peak_bytes(pixels: int, images: int, channels: int, samples: int, budget_bytes: int) -> int:
    """Estimated peak memory of protecting `images` photos of `pixels` pixels each, beyond what the process holds
    before (the models): `BATCH_TENSORS` batch tensors, one round of `samples` random starts per photo (fewer when
    they outgrow `budget_bytes`), one backbone pass at its memory bound and one strip of SSIM.

    Calibrated on `preempt protect`'s peak RSS over the RSS it plans at (0.98 GB), one photo of 2, 6, 12, 24 and 36
    megapixels, the CIFAR-10 ResNet-18 and EfficientNet-Lite0, N 1 and 20, the CPU's 2048 MiB budget
    (docs/protect.md): it never underestimated; it overestimates by 1.0-1.2× at 24-36 megapixels with N 20, 1.3-1.5×
    with N 1, and up to 1.8× on 2-6 megapixels with N 20, where the timed chunk is smaller than the pass's bound
    counted here. The backbone's activations are left out (at the model's input size they are within the budget)."""
    photo = FLOAT_BYTES * channels * pixels
    batch = images * photo
    starts_per_round = max(1, min(samples, budget_bytes // batch))
    per_copy = STEP_TENSORS_PER_COPY * photo
    copies_per_pass = max(1, min(starts_per_round * images, budget_bytes // per_copy))
    ssim_strip = min(SSIM_STRIP_BYTES, SSIM_BYTES_PER_VALUE * batch // FLOAT_BYTES)
    return BATCH_TENSORS * batch + starts_per_round * batch + copies_per_pass * per_copy + ssim_strip


def available_memory(device: torch.device) -> tuple[int, str]:
    """The memory a protection may take now, and what it is: the GPU's free memory, or the RAM the kernel counts as
    available (MemAvailable: free and reclaimable; the total RAM where /proc/meminfo does not say)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    meminfo = Path("/proc/meminfo")
    lines = meminfo.read_text().splitlines() if meminfo.is_file() else []
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "of RAM available"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "of RAM"


@dataclass(frozen=True)
class FileLimits:
    """What decides whether a file is protected: its megapixels against `max_megapixels` (None: no limit), and its
    batch's estimated peak (`peak_bytes`) against the memory available when the run planned its batches."""

    channels: int
    samples: int  # random starts per image and step: the defense's N, 1 for a defense that draws none
    budget_bytes: int
    available_bytes: int
    available: str  # what `available_bytes` is, for the refusal
    max_megapixels: float | None = None

    @classmethod
    def measure(
        cls, defense: nn.Module, device: torch.device, channels: int, max_megapixels: float | None
    ) -> FileLimits:
        """The limits for `defense` on `device` now (its N and memory budget, the device's memory)."""
        budget = memory_budget_bytes(device, getattr(defense, "memory_budget_mb", None))
        available, what = available_memory(device)
        return cls(channels, getattr(defense, "n_samples", 1), budget, available, what, max_megapixels)

    def peak(self, size: tuple[int, int], images: int = 1) -> int:
        return peak_bytes(size[0] * size[1], images, self.channels, self.samples, self.budget_bytes)

    def too_many_megapixels(self, name: str, size: tuple[int, int]) -> str | None:
        """Why a file of `size` (width, height) is refused by `max_megapixels`, or None."""
        megapixels = size[0] * size[1] / 1e6
        if self.max_megapixels is None or megapixels <= self.max_megapixels:
            return None
        return (
            f"{name} is {size[0]}x{size[1]} (WxH), {megapixels:.3g} megapixels, over protect.max_megapixels="
            f"{self.max_megapixels:g}: resize it to at most {self.max_megapixels:g} megapixels, or raise "
            f"protect.max_megapixels (null: no limit) where memory allows (about {self.peak(size) / GB:.1f} GB for "
            f"this file with these settings)"
        )

    def too_large(self, name: str, size: tuple[int, int], images: int) -> str | None:
        """Why the batch of `images` files of `size` that holds `name` would not fit the memory available, or None."""
        peak = self.peak(size, images)
        if peak <= self.available_bytes:
            return None
        batch = f"its batch of {images} such files" if images > 1 else "it"
        fixes = "a smaller protect.max_batch_megapixels, " if images > 1 else ""
        return (
            f"{name} is {size[0]}x{size[1]} (WxH), {size[0] * size[1] / 1e6:.3g} megapixels: protecting {batch} "
            f"needs about {peak / GB:.1f} GB (N={self.samples}, memory budget {self.budget_bytes / MIB:.0f} MiB), "
            f"and {self.available_bytes / GB:.1f} GB {self.available}: {fixes}resize it, protect it on a GPU "
            f"(protect.device=cuda) or a machine with more memory, or refuse such files up front with a smaller "
            f"protect.max_megapixels"
        )


def structural_similarity(sent: Tensor, x: Tensor, strip_bytes: int = SSIM_STRIP_BYTES) -> Tensor:
    """torchmetrics' SSIM of each image to its original (data range 1), bit for bit, with its map filtered on strips
    of rows whose intermediates (`SSIM_BYTES_PER_VALUE` per value) fit `strip_bytes`. A strip reads `SSIM_HALO`
    rows beyond each side, all the Gaussian window sees, so its rows of the map are the whole image's; sides must
    be at least `SSIM_SMALLEST_SIDE`."""
    images, channels, height, width = x.shape
    rows = max(1, strip_bytes // (SSIM_BYTES_PER_VALUE * images * channels * width) - 2 * SSIM_HALO)
    maps = torch.empty_like(x)
    for first in range(0, height, rows):
        last = min(height, first + rows)
        low, high = max(0, first - SSIM_HALO), min(height, last + SSIM_HALO)
        _, strip = structural_similarity_index_measure(
            sent[:, :, low:high], x[:, :, low:high], data_range=1.0, return_full_image=True
        )
        maps[:, :, first:last] = strip[:, :, first - low : last - low]
    return maps.flatten(1).mean(dim=1)
