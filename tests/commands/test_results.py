"""`python -m preempt.commands.results DIR...`: one table over every results.json below the folders."""

from pathlib import Path

import pytest

from preempt.commands.results import main
from preempt.files import write_json_atomically
from preempt.results.record import build_results

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.defenses.fast_preemption.FastPreemption"},
    "receiver_defense": {"_target_": "preempt.parts.Identity"},
    "attack": {"_target_": "preempt.attacks.autoattack.AutoAttack"},
    "threat": {"eps": 0.2, "norm": "Linf", "oblivious": False},
}


def test_table_cli_collects_every_run_below_a_folder(tmp_path: Path, capsys) -> None:
    for n_samples in (1, 20):
        result = build_results(CONFIG, {"test/robust_acc": n_samples / 40}, 10, 1.0, [f"defense.n_samples={n_samples}"])
        write_json_atomically(result, tmp_path / "multirun" / str(n_samples) / "results.json")
    main([str(tmp_path / "multirun")])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 2
    assert "0.025" in rows[0] and rows[0].rstrip(" |").endswith("defense.n_samples=1")
    assert "0.500" in rows[1] and rows[1].rstrip(" |").endswith("defense.n_samples=20")


def test_no_results_below_the_folders_is_a_clear_refusal(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no results\.json under"):
        main([str(tmp_path)])
