"""reversion=diffpure: the paper's blind reversion by purification, with the score_model group's model."""

from conftest import TEST_SCORE_MODEL
from hydra.utils import instantiate

from preempt import run
from preempt.receiver_defenses.diffpure import DiffPure


def test_the_config_purifies_at_the_papers_time_with_no_gradient(compose_config) -> None:
    reversion = instantiate(compose_config("reversion=diffpure").reversion)
    assert isinstance(reversion, DiffPure) and reversion.t_star == 0.1 and reversion.gradients == "none"


def test_diffpure_reversion_shares_the_receivers_score_model(compose_config, digits_score_model, monkeypatch) -> None:
    built = []
    original = run.instantiate_score_model
    monkeypatch.setattr(run, "instantiate_score_model", lambda config: built.append(1) or original(config))
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
    results = run.evaluate(cfg)
    assert built == [1]  # one score model for both purifications
    assert results["run"]["reversion"] == "DiffPure" and results["reversion"]["knowledge"] == "blind"
    assert results["metrics"]["test/reversion_seconds_per_image"] > 0
