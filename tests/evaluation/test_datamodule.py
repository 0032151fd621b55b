"""Whole batches sharded across processes without padding, and loaders that keep a GPU fed."""

import pytest
import torch
from conftest import refusal

from preempt.datasets.digits import digits
from preempt.evaluation.datamodule import BatchShardSampler, check_every_process_gets_a_batch, expected_processes
from preempt.parts import ConfigError


@pytest.mark.parametrize(("n", "batch_size", "world_size"), [(19, 4, 2), (20, 5, 3), (3, 8, 2)])
def test_batch_shards_cover_every_sample_once_in_the_same_batches(n: int, batch_size: int, world_size: int) -> None:
    single = list(BatchShardSampler(n, batch_size))
    shards = [list(BatchShardSampler(n, batch_size, rank, world_size)) for rank in range(world_size)]
    assert sorted(batch for shard in shards for batch in shard) == single
    assert sorted(i for batch in single for i in batch) == list(range(n))


@pytest.mark.parametrize(("device", "workers", "pinned"), [("cpu", 0, False), ("cuda", 4, True)])
def test_the_loader_feeds_a_gpu_from_worker_processes_into_pinned_memory(
    device: str, workers: int, pinned: bool
) -> None:
    """On a GPU, batches are decoded ahead by loader processes and pinned for an overlapped copy; on the CPU the
    in-memory datasets are read in the main process."""
    from types import SimpleNamespace

    from preempt.evaluation import EvaluationDataModule

    datamodule = EvaluationDataModule(digits(n_samples=8), batch_size=4)
    trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=SimpleNamespace(root_device=torch.device(device)))
    datamodule.trainer = trainer
    loader = datamodule.test_dataloader()
    assert loader.num_workers == workers and loader.pin_memory is pinned


@pytest.mark.parametrize(
    ("n_samples", "batch_size", "processes", "fix"),
    [(40, 128, 2, "batch_size=20"), (5, 4, 4, "batch_size=1"), (1, 8, 2, "trainer.devices=1")],
)
def test_fewer_batches_than_processes_are_refused_with_the_fix(n_samples, batch_size, processes, fix) -> None:
    with pytest.raises(ConfigError, match=fix):
        check_every_process_gets_a_batch(n_samples, batch_size, processes)
    check_every_process_gets_a_batch(n_samples, 1 if n_samples < processes else int(fix.split("=")[1]), 1)


def test_ddp_with_one_batch_is_refused_before_models_are_built(compose_config, no_model_building) -> None:
    """`trainer=ddp dataset.n_samples=40` (one batch of 128 for two processes) once crashed in gloo, exit 137."""
    cfg = compose_config("trainer=ddp", "trainer.accelerator=cpu", "dataset.n_samples=40")
    assert expected_processes(dict(cfg.trainer)) == 2
    assert "set batch_size=20" in refusal(cfg)
