"""The reversion protocol's verdict (Table V's logic) and the names results and tables give reversions."""

import pytest

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
