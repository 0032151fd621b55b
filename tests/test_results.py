import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from preempt.results import (
    FinishedRunError,
    attack_name,
    build_results,
    format_table,
    load_results,
    main,
    mark_failed_run,
    refuse_finished_output_dir,
    write_json_atomically,
)

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.defenses.fast_preemption.FastPreemption"},
    "receiver_defense": {"_target_": "preempt.receiver_defenses.base.Identity"},
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


def test_atomic_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json_atomically({"a": 1}, path)
    write_json_atomically({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 2}


def test_table_cli_collects_every_run_below_a_folder(tmp_path: Path, capsys) -> None:
    for n_samples in (1, 20):
        result = build_results(CONFIG, {"test/robust_acc": n_samples / 40}, 10, 1.0, [f"defense.n_samples={n_samples}"])
        write_json_atomically(result, tmp_path / "multirun" / str(n_samples) / "results.json")
    main([str(tmp_path / "multirun")])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 2
    assert "0.025" in rows[0] and rows[0].rstrip(" |").endswith("defense.n_samples=1")
    assert "0.500" in rows[1] and rows[1].rstrip(" |").endswith("defense.n_samples=20")


def test_failed_runs_are_marked_and_the_table_says_what_it_leaves_out(tmp_path: Path, capsys) -> None:
    finished, failed, running = (tmp_path / "runs" / name for name in ("finished", "failed", "running"))
    for folder in (finished, failed, running):
        (folder / ".hydra").mkdir(parents=True)
    write_json_atomically(build_results(CONFIG, {"test/robust_acc": 0.5}, 10, 1.0), finished / "results.json")
    assert mark_failed_run(finished, "ValueError: late") is None, "a finished run is never touched"
    marked = mark_failed_run(failed, "ConfigError: dataset.root must be set")
    assert marked == tmp_path / "runs" / "failed_failed" and not failed.exists()
    assert (marked / "FAILED").read_text() == "ConfigError: dataset.root must be set\n"
    main([str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3  # header, rule, the one finished run
    assert "1 failed run folder(s)" in captured.err and "1 without results.json" in captured.err


def test_results_record_what_a_rerun_needs() -> None:
    run = build_results({**CONFIG, "seed": 3}, {}, n_samples=1, wall_seconds=1.0, warnings=["careful"])["run"]
    assert run["seed"] == 3 and run["warnings"] == ["careful"]
    assert run["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"lightning", "pyautoattack", "robustbench", "hydra-core"} <= set(run["versions"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert run["git"]["commit"] == head and isinstance(run["git"]["dirty"], bool)
    assert run["device"].startswith("cpu") or run["device"] == torch.cuda.get_device_name()


def test_a_finished_run_is_never_overwritten(tmp_path: Path) -> None:
    refuse_finished_output_dir(tmp_path / "new")  # absent or empty folders are fine
    write_json_atomically({"a": 1}, tmp_path / "sweep" / "0" / "results.json")
    with pytest.raises(FinishedRunError, match=r"sweep/0/results\.json"):
        refuse_finished_output_dir(tmp_path / "sweep")


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


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"approximation": "identity", "eot_samples": 1, "targeted": True}, "BPDA targeted"),
        ({"approximation": "none", "eot_samples": 30, "targeted": False}, "EOT"),
        ({"approximation": "learned", "eot_samples": 30, "targeted": True}, "BPDA+EOT (learned g′) targeted"),
    ],
)
def test_adaptive_attacks_are_named_by_their_gradient_estimators(settings: dict, name: str) -> None:
    assert attack_name({"_target_": "preempt.attacks.adaptive.AdaptiveAttack", **settings}) == name
    assert attack_name({"_target_": "preempt.attacks.pgd.PGD", "targeted": False}) == "PGD"


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


def test_a_finished_run_is_found_by_its_config_and_skipped_when_asked(compose_config, tmp_path: Path, digits_models):
    """skip_finished=true: the same resolved config (another folder, task name, logger) is not computed again;
    another setting is; skip_finished=false runs it anyway."""
    from omegaconf import open_dict

    from preempt.run import evaluate

    def run(folder: str, *overrides: str) -> dict:
        cfg = compose_config(
            f"paths.log_dir={tmp_path / 'outputs'}", "defense=none", "attack=none", "dataset.n_samples=8", *overrides
        )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "outputs" / folder)
        (tmp_path / "outputs" / folder / ".hydra").mkdir(parents=True)  # as Hydra leaves it before the job
        return evaluate(cfg)

    first = run("first", "logger=none")
    again = run("again", "skip_finished=true", "task_name=other", "logger=csv")
    assert again == first and not (tmp_path / "outputs" / "again").exists(), "skipped, and no empty run folder left"
    other = run("other", "skip_finished=true", "logger=none", "seed=1")
    assert other["run"]["fingerprint"] != first["run"]["fingerprint"]
    forced = run("forced", "logger=none")
    assert forced["run"]["fingerprint"] == first["run"]["fingerprint"]
    assert (tmp_path / "outputs" / "forced" / "results.json").is_file()
