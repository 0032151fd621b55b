"""The reversion protocol's verdict (Table V's logic) and the names results and tables give reversions."""

import pytest
import torch
from conftest import TEST_SCORE_MODEL
from hydra.utils import instantiate
from omegaconf import OmegaConf

from preempt.commands.evaluate import evaluate
from preempt.parts import revert
from preempt.receiver_defenses.diffpure import DiffPure
from preempt.receiver_defenses.jpeg import JPEG, jpeg_round_trip
from preempt.reversions.protocol import reversion_knowledge, reversion_name, reversion_verdict


def metrics(original: float, protected: float, reverted: float, fixed: int = 0, broke: int = 0) -> dict:
    return {
        "test/clean_acc": original,
        "test/protected_clean_acc": protected,
        "test/reverted_clean_acc": reverted,
        "test/reversion_fixed": fixed,
        "test/reversion_broke": broke,
        "test/protected_l2_to_original": 2.0,
        "test/reverted_l2_to_original": 1.0,
    }


@pytest.mark.parametrize(
    ("accuracies", "verdict"),
    [
        ((0.905, 0.831, 0.907), "succeeded"),  # the white-box reference
        ((0.905, 0.831, 0.845), "failed"),  # moved back, but not more than the margin
        ((0.905, 0.831, 0.820), "failed"),  # distortion: lower still
        ((0.935, 0.955, 0.940), "not measurable"),  # Table V's fourth row: protection raised accuracy
        ((0.905, 0.890, 0.905), "not measurable"),  # dropped by less than the margin
    ],
)
def test_the_verdict_follows_the_protocol(accuracies, verdict) -> None:
    result = reversion_verdict(metrics(*accuracies), margin=0.02)
    assert result["verdict"] == verdict and str(result["margin"]) in result["reason"]


def test_the_figures_behind_the_verdict() -> None:
    result = reversion_verdict(metrics(0.9, 0.8, 0.875, fixed=20, broke=5), margin=0.02)
    assert result["recovered"] == pytest.approx(0.075) and result["recovered_fraction"] == pytest.approx(0.75)
    assert result["residual"] == 0.5
    assert result["p_value"] == pytest.approx(0.004077, abs=1e-6)  # two-sided exact binomial, 20 of 25
    unchanged = reversion_verdict(metrics(0.9, 0.8, 0.8), margin=0.02)
    assert unchanged["p_value"] == 1.0 and unchanged["verdict"] == "failed"


def test_names_and_knowledge_from_configs() -> None:
    preemptive = {"_target_": "preempt.reversions.preemptive_reversion.PreemptiveReversion", "backbone": None}
    assert reversion_name(preemptive) == "PreemptiveReversion (white-box)"
    assert reversion_knowledge({**preemptive, "defense_settings": {"eta": 0.5}}) == "black-box"
    assert reversion_knowledge({**preemptive, "backbone": {"_target_": "x"}}) == "black-box"
    assert reversion_name({"_target_": "preempt.receiver_defenses.jpeg.JPEG"}) == "JPEG"
    assert reversion_knowledge({"_target_": "preempt.receiver_defenses.jpeg.JPEG"}) == "blind"
    assert reversion_name(None) == "none" and reversion_knowledge(None) == "none"


# Blind reversions (the paper's Table III): JPEG at quality 50 and DiffPure, scored by the protocol as any other.


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
    results = evaluate(cfg)
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
    metrics = evaluate(cfg)["metrics"]
    # Scored on the guess: the reversion ran (whether JPEG changes any of 32 labels depends on the machine's floats).
    assert metrics["test/robust_acc"] == metrics["test/reverted_clean_acc"]
    assert metrics["test/reversion_seconds_per_image"] > 0
    if transmit_8bit:  # the unrounded protection is reverted too before its own attack
        assert 0 <= metrics["test/robust_acc_float"] <= 1


def test_the_config_purifies_at_the_papers_time_with_no_gradient(compose_config) -> None:
    reversion = instantiate(compose_config("reversion=diffpure").reversion)
    assert isinstance(reversion, DiffPure) and reversion.t_star == 0.1 and reversion.gradients == "none"


def test_diffpure_reversion_shares_the_receivers_score_model(compose_config, digits_score_model, monkeypatch) -> None:
    from preempt import assembly

    built = []
    original = assembly.load_score_model
    monkeypatch.setattr(assembly, "load_score_model", lambda config: built.append(1) or original(config))
    cfg = compose_config(
        "reversion=diffpure",
        "receiver_defense=diffpure",
        "receiver_defense.gradients=none",
        "attack=none",
        "classifier=noisy_labels",
        "dataset.n_samples=16",
        "logger=none",
        *TEST_SCORE_MODEL,
    )
    results = evaluate(cfg)
    assert built == [1]  # one score model for both purifications
    assert results["run"]["reversion"] == "DiffPure" and results["reversion"]["knowledge"] == "blind"
    assert results["metrics"]["test/reversion_seconds_per_image"] > 0
