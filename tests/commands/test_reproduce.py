"""`python -m preempt.commands.reproduce` end to end on a tiny table: runs, renders, and after a real kill half way,
runs again recomputing nothing that finished and rendering nothing partial."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from helpers.locks import folder_held_by_another_process

from preempt.commands.reproduce import main, step_curves, train_first_use_models
from preempt.reproduce.runs import FIRST_USE_TRAINERS, Cell
from preempt.reproduce.tables import Figure, load_tables

TABLES = Path(__file__).parents[1] / "reproduce" / "tables"


def command(out: Path, zoo_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "preempt.commands.reproduce",
        "--tables-dir",
        str(TABLES),
        "--out",
        str(out),
        "--no-wandb",
        "--no-pictures",
        f"paths.cache_dir={zoo_dir}",
        f"paths.protected_dir={out / 'protected'}",
        *extra,
    ]


def finished(out: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in (out / "quick" / "runs").rglob("results.json")}


@pytest.mark.slow
def test_a_tiny_table_runs_resumes_after_a_kill_and_renders(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    out = tmp_path / "tables"
    # Started in its own session, so the kill takes the driver and the run it started, as Ctrl-C or a scheduler
    # would; killed once the first run has finished, while the others are still to come.
    driver = subprocess.Popen(
        command(out, zoo_dir), cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not finished(out) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, "the driver ended before the kill"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = finished(out)
    assert 1 <= len(before) < 8
    assert not (out / "quick" / "tiny.md").exists()  # a killed run renders nothing

    done = subprocess.run(command(out, zoo_dir), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{len(before)} of 8 runs finished before; {8 - len(before)} to run" in done.stdout
    after = finished(out)
    assert len(after) == 8
    assert all(after[path] == mtime for path, mtime in before.items())  # what finished was left alone

    table = (out / "quick" / "tiny.md").read_text()
    assert "**Incomplete**" not in table and "Fast Preemption" in table
    assert (out / "quick" / "tiny.png").stat().st_size > 0 and (out / "quick" / "tiny.tex").is_file()
    results = [json.loads(path.read_text()) for path in after]
    assert {result["run"]["seed"] for result in results} == {0, 1}
    # Protect once, attack many: each Fast Preemption protection was reused by the second attack.
    hits = [
        result["metrics"]["test/protection_cache_hit"] for result in results if result["run"]["defense"] != "NoDefense"
    ]
    assert sorted(hits) == [0.0, 0.0, 1.0, 1.0]

    again = subprocess.run(command(out, zoo_dir), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "8 of 8 runs finished before; 0 to run" in again.stdout
    assert finished(out) == after


def test_the_driver_trains_each_first_use_model_once_before_the_tables(tmp_path: Path, capsys) -> None:
    loader = f"{FIRST_USE_TRAINERS}digits_classifiers.digits_model"
    node = {"_target_": loader, "architecture": "mlp", "epochs": 1, "cache_dir": str(tmp_path)}
    shared = (json.dumps(node, sort_keys=True),)
    cells = [Cell("t", row, "r", (), {0: row}, first_use=shared) for row in ("a", "b")]
    train_first_use_models(cells)
    assert len(list(tmp_path.glob("digits_mlp_std_*.pt"))) == 1
    assert "1 model(s) the runs train on first use" in capsys.readouterr().out
    train_first_use_models([Cell("t", "a", "r", (), {0: "a"})])  # nothing to train: nothing said
    assert capsys.readouterr().out == ""


def test_missing_checkpoints_at_the_paper_scale_are_named_before_anything_runs(tmp_path: Path, capsys) -> None:
    started = time.monotonic()
    status = main(
        [
            *("--scale", "paper", "--tables", "fast_preemption_table8", "--out", str(tmp_path), "--no-wandb"),
            f"paths.model_dir={tmp_path / 'models'}",
        ]
    )
    stderr = capsys.readouterr().err
    assert status == 2, stderr[-2000:]
    for name in ("Peng2023Robust.pt", "Hendrycks2020AugMix_ResNeXt.pt", "Gowal2021Improving_R18_ddpm_100m.pt"):
        assert f"{name} is missing: place the RobustBench checkpoint there" in stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "paper" / "runs").exists()


@pytest.mark.slow
def test_a_stopped_driver_stops_its_table_processes(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    """SIGTERM to the driver alone (a scheduler's stop) ends the table processes it started, with two at a time:
    nothing is left running, and nothing is rendered."""
    out = tmp_path / "tables"
    driver = subprocess.Popen([*command(out, zoo_dir), "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not finished(out) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, "the driver ended before the stop"
    children = subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True, text=True).stdout.split()
    driver.terminate()
    driver.wait(timeout=60)
    time.sleep(1)
    assert children and all(not Path(f"/proc/{pid}").exists() for pid in children)
    assert not (out / "quick" / "tiny.md").exists()


def test_a_steps_figure_draws_a_curve_per_row_from_the_runs_that_kept_steps() -> None:
    (table,) = load_tables(["tiny"], TABLES)
    kept = {"steps": {"step": [1, 2], "protected_clean_acc": [0.5, 0.6], "robust_acc": [0.1, 0.2]}}
    results = {("none", "pgd"): [{"steps": None}], ("ours", "pgd"): [kept, kept], ("ours", "fgsm"): [kept]}
    one_run = Figure(file="steps.png", kind="steps", title="Steps", runs=["pgd"])
    assert step_curves(table, one_run, results) == {"Fast Preemption": [kept, kept]}
    two_runs = Figure(file="steps.png", kind="steps", title="Steps", runs=["pgd", "fgsm"])
    assert step_curves(table, two_runs, results) == {
        "Fast Preemption (pgd)": [kept, kept],
        "Fast Preemption (fgsm)": [kept],
    }


def test_a_second_reproduction_into_one_folder_is_refused_naming_the_first(tmp_path: Path, capsys) -> None:
    with folder_held_by_another_process(tmp_path / "quick", "reproduce --scale quick") as holder:
        status = main(["--tables-dir", str(TABLES), "--out", str(tmp_path), "--no-wandb", "--no-pictures"])
    assert status == 2
    assert f"is in use: process {holder} (reproduce --scale quick)" in capsys.readouterr().err
    assert not (tmp_path / "quick" / "runs").exists()


def copying_overrides(copied: Path) -> list[str]:
    """A defense that, built, copies a file: what a hostile table or command line could ask for."""
    return ["defense._target_=shutil.copy", f"+defense.src={TABLES / 'tiny.yaml'}", f"+defense.dst={copied}"]


def test_a_table_that_names_a_function_to_build_is_refused_by_the_plan(tmp_path: Path, capsys) -> None:
    table = yaml.safe_load((TABLES / "tiny.yaml").read_text())
    table["rows"][0]["overrides"] += copying_overrides(tmp_path / "copied")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "hostile.yaml").write_text(yaml.safe_dump(table))
    status = main(["--tables-dir", str(tmp_path / "tables"), "--out", str(tmp_path / "out"), "--plan"])
    assert status == 2 and not (tmp_path / "copied").exists()
    assert "hostile.yaml: (top): Value error, row 'none': 'defense._target_=shutil.copy' sets a _target_" in (
        capsys.readouterr().err
    )


def test_the_plan_refuses_an_untrusted_target_before_building_it(tmp_path: Path, capsys) -> None:
    """Without the check, validating the undefended row's config would call shutil.copy."""
    arguments = ["--tables-dir", str(TABLES), "--out", str(tmp_path / "out"), "--plan"]
    status = main([*arguments, *copying_overrides(tmp_path / "copied")])
    assert status == 2 and not (tmp_path / "copied").exists()
    assert "defense._target_=shutil.copy: shutil is not a trusted module" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--help"], ["--scale", "huge"], ["--tables-dir", "missing", "--plan"]])
def test_help_and_bad_arguments_answer_without_loading_torch(arguments: list[str], tmp_path: Path) -> None:
    """They answer at once: torch, Lightning and the models are loaded only to plan or run."""
    code = "import sys\nfrom preempt.commands.reproduce import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
    code += "    pass\nprint('torch loaded:', 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code, *arguments], cwd=tmp_path, capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "torch loaded: False", done.stdout[-2000:] + done.stderr[-2000:]
