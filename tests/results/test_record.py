"""A run's results.json: its facts, metrics, checks, curves and verdict, and what a rerun needs."""

from pathlib import Path

import pytest

from preempt.commands.results import main
from preempt.files import write_json_atomically
from preempt.results.record import build_results, part_name
from preempt.results.store import load_results
from preempt.results.tables import format_table

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.defenses.fast_preemption.FastPreemption"},
    "receiver_defense": {"_target_": "preempt.parts.Identity"},
    "attack": {"_target_": "preempt.attacks.autoattack.AutoAttack"},
    "threat": {"eps": 0.2, "norm": "Linf", "oblivious": False},
}


def test_results_round_trip_through_json_and_table(tmp_path: Path) -> None:
    metrics = {"test/clean_acc": 0.885, "test/robust_acc": 0.55, "test/ssim": 0.7912}
    path = write_json_atomically(build_results(CONFIG, metrics, n_samples=200, wall_seconds=1.5), tmp_path / "r.json")
    assert not list(tmp_path.glob("*.tmp"))
    (loaded,) = load_results([path])
    assert loaded["metrics"] == metrics and loaded["config"] == CONFIG
    assert loaded["run"]["defense"] == "FastPreemption" and loaded["run"]["n_samples"] == 200

    table = format_table([loaded]).splitlines()
    assert table[0].startswith("| defense") and "robust acc" in table[0]
    assert "| FastPreemption | Identity         | AutoAttack | 200" in table[2]
    assert "0.550" in table[2] and "0.791" in table[2]
    assert "—" in table[2]  # metrics a run did not log are shown as missing, not as zero


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"approximation": "identity", "eot_samples": 1, "targeted": True}, "BPDA targeted"),
        ({"approximation": "none", "eot_samples": 30, "targeted": False}, "EOT"),
        ({"approximation": "learned", "eot_samples": 30, "targeted": True}, "BPDA+EOT (learned g′) targeted"),
    ],
)
def test_adaptive_attacks_are_named_by_their_gradient_estimators(settings: dict, name: str) -> None:
    assert part_name({"_target_": "preempt.attacks.adaptive.AdaptiveAttack", **settings}) == name
    assert part_name({"_target_": "preempt.attacks.pgd.PGD", "targeted": False}) == "PGD"


def test_sanity_flags_and_round_curves_are_kept_and_shown(tmp_path: Path) -> None:
    metrics = {
        "test/robust_acc": 0.9,
        "test/attack_success_rate": 0.1,
        "test/check_zero_gradients": 1.0,
        "test/check_randomized": 0.0,
    }
    rounds = {"round": [1, 2], "accuracy": [0.95, 0.9], "attack_success_rate": [0.05, 0.1]}
    results = build_results(CONFIG, metrics, n_samples=20, wall_seconds=1.0, rounds=rounds)
    assert results["sanity_checks"] == {"zero_gradients": True, "randomized": False}
    assert results["rounds"] == rounds
    table = format_table([results]).splitlines()
    assert "sanity flags" in table[0] and "ASR" in table[0]
    assert "| zero_gradients |" in table[2]
    clean = build_results(CONFIG, {"test/check_zero_gradients": 0.0}, n_samples=20, wall_seconds=1.0)
    assert "| none " in format_table([clean]).splitlines()[2]


def test_a_reversion_run_records_its_verdict_and_tables_show_it(tmp_path: Path, capsys) -> None:
    reversion = {"_target_": "preempt.reversions.preemptive_reversion.PreemptiveReversion", "backbone": None}
    config = {**CONFIG, "reversion": reversion, "reversion_margin": 0.02}
    verdict_metrics = {
        "test/clean_acc": 0.9,
        "test/protected_clean_acc": 0.83,
        "test/reversion_fixed": 20,
        "test/reversion_broke": 4,
        "test/protected_l2_to_original": 2.0,
        "test/reverted_l2_to_original": 1.5,
    }
    for seed, reverted in enumerate((0.9, 0.84)):
        metrics = {**verdict_metrics, "test/reverted_clean_acc": reverted}
        result = build_results({**config, "seed": seed}, metrics, 360, 1.0, [f"seed={seed}"])
        write_json_atomically(result, tmp_path / str(seed) / "results.json")
    first = load_results([tmp_path / "0" / "results.json"])[0]
    assert first["run"]["reversion"] == "PreemptiveReversion (white-box)"
    assert first["reversion"]["verdict"] == "succeeded" and first["reversion"]["knowledge"] == "white-box"
    assert "| PreemptiveReversion (white-box) | succeeded 1/1 | 360" in format_table([first])

    main([str(tmp_path), "--over-seeds"])
    table = capsys.readouterr().out.splitlines()
    assert "reversion" in table[0] and "verdict" in table[0] and len(table) == 3
    assert "failed 1/2, succeeded 1/2" in table[2] and "0.870 [0.840–0.900]" in table[2]
    plain = format_table([build_results(CONFIG, {"test/clean_acc": 0.9}, 10, 1.0)])
    assert "verdict" not in plain.splitlines()[0]  # runs without a reversion stage keep the usual columns
    main([str(tmp_path), "--reversion"])
    table_v = capsys.readouterr().out.splitlines()
    assert "reverted clean acc" in table_v[0] and "McNemar p" in table_v[0] and len(table_v) == 3
    assert "| 0.870 [0.840–0.900] |" in table_v[2] and "0.75 [0.75–0.75]" in table_v[2]  # perturbation left 1.5/2
