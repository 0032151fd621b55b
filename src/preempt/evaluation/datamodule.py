"""Feeds the test loop whole batches, sharded across processes without padding or reordering."""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from preempt.datasets.base import ImageDataset
from preempt.parts import ConfigError


def expected_processes(trainer: dict) -> int:
    """How many processes the trainer config will start (devices × nodes), as Lightning counts them."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    elif trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()  # devices "auto" or -1: every visible GPU
    else:
        count = 1
    return count * int(trainer.get("num_nodes", 1))


def check_every_process_gets_a_batch(n_samples: int, batch_size: int, processes: int) -> None:
    """DDP needs a batch on every process: a process with none never joins the metric sync, and the run hangs."""
    batches = math.ceil(n_samples / batch_size)
    if batches >= processes:
        return
    if n_samples < processes:
        raise ConfigError(
            f"{n_samples} samples cannot feed {processes} processes: raise dataset.n_samples to at least "
            f"{processes}, or set trainer.devices={n_samples} (or trainer=default for one process)"
        )
    fitting = next(b for b in range(math.ceil(n_samples / processes), 0, -1) if math.ceil(n_samples / b) >= processes)
    raise ConfigError(
        f"{n_samples} samples at batch_size={batch_size} make {batches} batch(es) for {processes} processes, and "
        f"each process needs one: set batch_size={fitting} (or less), or trainer.devices={batches}"
    )


class BatchShardSampler(Sampler[list[int]]):
    """Cuts the dataset into consecutive batches and gives process `rank` every `world_size`-th batch.

    Unlike DistributedSampler it neither pads nor reshuffles, so each batch holds the same samples whatever
    the process count: with per-batch seeding, 1 and N processes compute identical metrics.
    """

    def __init__(self, n_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.batches = [list(range(i, min(i + batch_size, n_samples))) for i in range(0, n_samples, batch_size)]
        self.mine = self.batches[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.mine)

    def __len__(self) -> int:
        return len(self.mine)


# Loader processes per GPU process when `num_workers` is null: files decoded ahead of the GPU (CPU runs and the
# in-memory datasets gain nothing from them).
GPU_WORKERS = 4


class EvaluationDataModule(L.LightningDataModule):
    """Batches for the test loop; on a GPU, decoded by `GPU_WORKERS` loader processes into pinned memory, so the
    copy to the device overlaps the work and loading never starves the GPU."""

    def __init__(self, dataset: ImageDataset, batch_size: int, num_workers: int | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def test_dataloader(self) -> DataLoader:
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        check_every_process_gets_a_batch(len(self.dataset), self.batch_size, world_size)
        sampler = BatchShardSampler(len(self.dataset), self.batch_size, rank, world_size)
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        workers = self.num_workers if self.num_workers is not None else (GPU_WORKERS if on_gpu else 0)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=on_gpu,
            persistent_workers=workers > 0,
        )
