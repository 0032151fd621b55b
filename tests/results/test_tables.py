"""Tables from results.json files: one row per run, per setting over seeds, and Table V's view."""

from pathlib import Path

from preempt.commands.results import main
from preempt.files import write_json_atomically
from preempt.results.record import build_results
from preempt.results.tables import format_table, spread

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.defenses.fast_preemption.FastPreemption"},
    "receiver_defense": {"_target_": "preempt.parts.Identity"},
    "attack": {"_target_": "preempt.attacks.autoattack.AutoAttack"},
    "threat": {"eps": 0.2, "norm": "Linf", "oblivious": False},
}


def test_seed_spread_groups_runs_that_differ_only_in_seed(tmp_path: Path, capsys) -> None:
    for seed, robust in [(0, 0.5), (1, 0.56), (2, 0.53)]:
        result = build_results({**CONFIG, "seed": seed}, {"test/robust_acc": robust}, 10, 1.0, [f"seed={seed}"])
        write_json_atomically(result, tmp_path / "seeds" / str(seed) / "results.json")
    other = build_results({**CONFIG, "seed": 0}, {"test/robust_acc": 0.1}, 10, 1.0, ["seed=0", "defense=none"])
    write_json_atomically(other, tmp_path / "seeds" / "none" / "results.json")
    main([str(tmp_path / "seeds"), "--over-seeds"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 2
    assert "| 0,1,2 " in rows[0] and "0.530 [0.500–0.560]" in rows[0]
    assert "0.100 [0.100–0.100]" in rows[1] and rows[1].rstrip(" |").endswith("defense=none")


def test_the_table_names_both_defenses_and_marks_an_oblivious_attack() -> None:
    result = {
        "run": {
            "defense": "FastPreemption",
            "receiver_defense": "DCTDistortion",
            "attack": "PGD",
            "oblivious": True,
            "n_samples": 8,
        },
        "metrics": {"test/robust_acc": 0.5, "test/receiver_variance_l2": 0.3},
    }
    table = format_table([result])
    assert "| FastPreemption | DCTDistortion    | PGD (oblivious) | 8 " in table
    assert "receiver variance L2" in table.splitlines()[0] and "0.300" in table


def test_spread_is_mean_min_max_and_a_missing_value_is_a_dash() -> None:
    assert spread([0.5, 0.56, 0.53]) == "0.530 [0.500–0.560]" and spread([]) == "—"
    assert spread([1.5], "{:.2f}") == "1.50 [1.50–1.50]"
