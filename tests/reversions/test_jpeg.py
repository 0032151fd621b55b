"""reversion=jpeg: the paper's blind reversion by distortion, JPEG at quality 50."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from preempt import run
from preempt.receiver_defenses.jpeg import JPEG, jpeg_round_trip
from preempt.reversions.base import revert
from preempt.reversions.protocol import reversion_knowledge


def test_the_config_is_jpeg_at_quality_50_and_reverts_by_one_codec_round_trip(compose_config, cifar_batch) -> None:
    config = compose_config("reversion=jpeg").reversion
    reversion = instantiate(config)
    assert isinstance(reversion, JPEG) and reversion.quality == 50
    assert reversion_knowledge(OmegaConf.to_container(config)) == "blind"
    x, y = cifar_batch
    reverted = revert(reversion, x[:4], y[:4], torch.arange(4))
    assert torch.equal(reverted, jpeg_round_trip(x[:4], [50])[0])


def test_jpeg_reversion_runs_on_the_cifar10_samples(compose_config) -> None:
    cfg = compose_config(
        "experiment=cifar10_resnet18",
        "classifier=noisy_labels",
        "reversion=jpeg",
        "attack=pgd",
        "attack.steps=2",
        "dataset.n_samples=8",
        "defense.n_samples=4",
        "logger=none",
    )
    results = run.evaluate(cfg)
    verdict, metrics = results["reversion"], results["metrics"]
    assert results["run"]["reversion"] == "JPEG" and verdict["knowledge"] == "blind"
    assert verdict["verdict"] in ("succeeded", "failed", "not measurable")
    assert 0 <= metrics["test/reverted_clean_acc"] <= 1 and metrics["test/reversion_seconds_per_image"] > 0
    assert verdict["fixed"] + verdict["broke"] <= 8
    assert metrics["test/attack_distance"] <= 8 / 255 + 1e-5  # projected back around what was received


@pytest.mark.parametrize("transmit_8bit", [False, True])
def test_with_no_attack_the_man_in_the_middle_sends_its_guess(transmit_8bit: bool, compose_config) -> None:
    cfg = compose_config(
        "classifier=noisy_labels",
        "reversion=jpeg",
        "attack=none",
        "dataset.n_samples=32",
        "logger=none",
        f"transmit_8bit={transmit_8bit}",
    )
    metrics = run.evaluate(cfg)["metrics"]
    # Scored on the guess: the reversion ran (whether JPEG changes any of 32 labels depends on the machine's floats).
    assert metrics["test/robust_acc"] == metrics["test/reverted_clean_acc"]
    assert metrics["test/reversion_seconds_per_image"] > 0
    if transmit_8bit:  # the unrounded protection is reverted too before its own attack
        assert 0 <= metrics["test/robust_acc_float"] <= 1
