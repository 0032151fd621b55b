"""Protect once, attack many: a run that reuses cached protections scores exactly as one that protects again."""

import json
from pathlib import Path

import pytest
import torch
from conftest import main_arguments, run_main
from omegaconf import OmegaConf

from preempt.evaluation.protection_cache import ProtectionCache, protection_fingerprint

# What a cache hit may change: how long the run took, and the hit itself.
TIMINGS = ("seconds_per_image", "protection_cache_hit")


def fingerprint(compose_config, *overrides: str) -> str:
    return protection_fingerprint(OmegaConf.to_container(compose_config(*overrides), resolve=True))


def test_the_key_holds_what_decides_the_protection_and_nothing_else(compose_config) -> None:
    base = fingerprint(compose_config)
    for neutral in ("attack=pgd", "victim=digits_mlp", "receiver_defense=jpeg", "reversion=jpeg"):
        assert fingerprint(compose_config, neutral) == base, neutral
    for neutral in (
        "dataset.n_samples=16",
        "dataset.offset=8",
        "transmit_8bit=true",
        "defense.copies_per_pass=4",
        "speed.memory_budget_mb=64",
    ):
        assert fingerprint(compose_config, neutral) == base, neutral
    deciding = ("defense.backward_steps=3", "backbone=digits_cnn", "classifier=ground_truth", "seed=1", "batch_size=64")
    for decisive in (*deciding, "threat.eps=0.1", "randomness=per_sample", "speed.bf16=true"):
        assert fingerprint(compose_config, decisive) != base, decisive
    # Drawn per sample, the random starts do not depend on how images are batched.
    per_sample = fingerprint(compose_config, "randomness=per_sample")
    assert fingerprint(compose_config, "randomness=per_sample", "batch_size=64") == per_sample
    # Scoring only the victim's correct images, the victim decides which images form each batch.
    selected = fingerprint(compose_config, "evaluate_on=victim_correct")
    assert (
        selected != base and fingerprint(compose_config, "evaluate_on=victim_correct", "victim=digits_mlp") != selected
    )


def test_an_entry_for_other_labels_is_a_miss(tmp_path: Path) -> None:
    cache = ProtectionCache(tmp_path, "key")
    labels, images = torch.tensor([1, 2]), torch.rand(2, 1, 8, 8)
    cache.save(0, 2, labels, images, seconds=0.5)
    protected, seconds = cache.load(0, 2, labels)
    assert torch.equal(protected, images) and seconds == 0.5
    assert cache.load(0, 2, torch.tensor([1, 3])) is None
    assert cache.load(2, 2, labels) is None


def sweep(sweep_dir: Path, zoo_dir: Path, *overrides: str) -> list[dict]:
    """One multirun of src/main.py (in this process); the results of its jobs, in job order."""
    assert (
        run_main(["-m", *main_arguments(sweep_dir / "unused", zoo_dir, *overrides), f"hydra.sweep.dir={sweep_dir}"])
        == 0
    )
    jobs = sorted((path for path in sweep_dir.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))
    return [json.loads((job / "results.json").read_text()) for job in jobs]


def scores(result: dict) -> dict:
    return {key: value for key, value in result["metrics"].items() if not key.endswith(TIMINGS)}


@pytest.mark.slow
def test_a_cached_protection_is_reused_by_other_attacks_with_identical_scores(
    tmp_path: Path, zoo_dir: Path, digits_models
) -> None:
    """Per randomness mode: protect afresh without the cache, then with it (a miss that fills it), then attack again
    from it (a hit). PGD's random start is drawn after the protection, so a hit must also leave the generators
    exactly where protecting would. Another defense setting misses."""
    common = ("defense=fast_preemption", "dataset.n_samples=24", "batch_size=16", "logger=none")
    cache = f"paths.protected_dir={tmp_path / 'protected'}"
    for randomness in ("per_batch", "per_sample"):
        fresh, miss, hit = sweep(
            tmp_path / randomness,
            zoo_dir,
            "attack=pgd",
            f"randomness={randomness}",
            "protection_cache=false,true,true",
            cache,
            *common,
        )
        assert [run["metrics"]["test/protection_cache_hit"] for run in (fresh, miss, hit)] == [0.0, 0.0, 1.0]
        assert scores(fresh) == scores(miss) == scores(hit), randomness
        assert hit["metrics"]["test/defense_seconds_per_image"] == miss["metrics"]["test/defense_seconds_per_image"]
    other_attack, other_defense = sweep(
        tmp_path / "others",
        zoo_dir,
        "defense.backward_steps=2,3",
        "attack=fgsm",
        "protection_cache=true",
        cache,
        *common,
    )
    assert other_attack["metrics"]["test/protection_cache_hit"] == 1.0
    assert other_defense["metrics"]["test/protection_cache_hit"] == 0.0
