"""results.json (config + metrics) beside each run's Hydra config, and tables built from those files."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import torch

from preempt.files import replace_atomically
from preempt.manifest import digest, without_neutral_keys
from preempt.reversions.protocol import reversion_knowledge, reversion_name, reversion_verdict

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"

# (metric key, column header, format) in the order the table shows them.
COLUMNS = (
    ("test/classifier_acc", "classifier acc", "{:.3f}"),
    ("test/clean_acc", "clean acc", "{:.3f}"),
    ("test/protected_clean_acc", "protected clean acc", "{:.3f}"),
    ("test/reverted_clean_acc", "reverted clean acc", "{:.3f}"),
    ("test/robust_acc", "robust acc", "{:.3f}"),
    ("test/attack_success_rate", "ASR", "{:.3f}"),
    ("test/protected_clean_acc_float", "protected clean acc (float)", "{:.3f}"),
    ("test/robust_acc_float", "robust acc (float)", "{:.3f}"),
    ("test/ssim", "SSIM", "{:.3f}"),
    ("test/receiver_variance_l2", "receiver variance L2", "{:.3f}"),
    ("test/receiver_variance_ssim", "receiver variance SSIM", "{:.3f}"),
    ("test/linf", "max Linf", "{:.4f}"),
    ("test/defense_seconds_per_image", "defense s/img", "{:.4f}"),
    ("test/receiver_seconds_per_image", "receiver s/img", "{:.4f}"),
    ("test/reversion_seconds_per_image", "reversion s/img", "{:.4f}"),
)


CHECK_PREFIX = "test/check_"
CHECKS_HEADER = "sanity flags"

# Libraries whose version can change a number in results.json.
RECORDED_PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "pyautoattack",
    "robustbench",
    "foolbox",
    "scikit-learn",
    "numpy",
    "pillow",
)


class FinishedRunError(FileExistsError):
    """A run would write where a finished run's results.json already is."""


def refuse_finished_output_dir(output_dir: Path) -> None:
    """Never overwrite a finished run: its results.json (and its .hydra config) stay as they were."""
    existing = sorted(Path(output_dir).rglob(RESULTS_FILE)) if Path(output_dir).is_dir() else []
    if existing:
        raise FinishedRunError(
            f"{existing[0]} holds the results of a finished run. Choose another hydra.run.dir "
            f"(or hydra.sweep.dir), or move that folder away first."
        )


FAILED_FILE = "FAILED"
FAILED_SUFFIX = "_failed"


def mark_failed_run(output_dir: Path, reason: str) -> Path | None:
    """A run folder whose job failed gets a FAILED file with the reason and the suffix `_failed`, so neither a
    glance at outputs/ nor a results table mistakes it for a run; a finished run's folder is never touched."""
    folder = Path(output_dir)
    if not folder.is_dir() or any(folder.rglob(RESULTS_FILE)):
        return None
    (folder / FAILED_FILE).write_text(reason.rstrip() + "\n", encoding="utf-8")
    if folder.name.endswith(FAILED_SUFFIX):
        return folder
    marked = folder.with_name(folder.name + FAILED_SUFFIX)
    if marked.exists():
        return folder
    return folder.rename(marked)


def unfinished_runs(folders: list[Path]) -> tuple[list[Path], list[Path]]:
    """Run folders (a `.hydra/` config) below `folders` without results.json: marked failed, and the others
    (still running, or killed before they could be marked)."""
    runs = {hydra.parent for folder in folders for hydra in folder.rglob(".hydra")}
    open_runs = sorted(run for run in runs if not (run / RESULTS_FILE).exists())
    failed = [run for run in open_runs if (run / FAILED_FILE).exists()]
    return failed, [run for run in open_runs if run not in failed]


def library_versions() -> dict[str, str | None]:
    versions = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit(root: Path) -> dict[str, str | bool | None]:
    """The checkout's commit and whether it had uncommitted changes; None outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def attack_name(attack: dict) -> str:
    """The attack's class, or for the adaptive attack the estimators it uses (BPDA, EOT, BPDA+EOT), marked when
    targeted: the name a table row and a figure legend need."""
    name = attack["_target_"].rsplit(".", 1)[-1]
    if name == "AdaptiveAttack":
        approximation = attack.get("approximation", "identity")
        estimators = ["BPDA"] if approximation != "none" else []
        estimators += ["EOT"] if attack.get("eot_samples", 1) > 1 else []
        name = "+".join(estimators) or "GradientDescent"
        name += " (learned g′)" if approximation == "learned" else ""
    if attack.get("attacks"):
        name += f" ({', '.join(attack['attacks'])})"
    return name + (" targeted" if attack.get("targeted") else "")


# What names, places, logs or shows a run, or only sizes its memory: two configs that differ only here compute
# the same numbers, so they share one fingerprint.
NOT_IN_FINGERPRINT = {
    "paths",
    "task_name",
    "tags",
    "print_config",
    "skip_finished",
    "protection_cache",
    "logger",
    "num_workers",
}
NOT_IN_FINGERPRINT_OF = {"trainer": {"enable_progress_bar", "default_root_dir"}, "speed": {"keep_freed_memory"}}


def run_fingerprint(config: dict) -> str:
    """The digest of a resolved config without its output paths, names and logging (`NOT_IN_FINGERPRINT`) and
    without the keys that only place files or size memory chunks (`manifest.RESULT_NEUTRAL_KEYS`)."""
    kept = {key: value for key, value in config.items() if key not in NOT_IN_FINGERPRINT}
    for group, keys in NOT_IN_FINGERPRINT_OF.items():
        if isinstance(kept.get(group), dict):
            kept[group] = {key: value for key, value in kept[group].items() if key not in keys}
    return digest(without_neutral_keys(kept))


def find_finished_run(fingerprint: str, log_dir: Path) -> Path | None:
    """The first results.json under `log_dir` (sorted) recording this fingerprint; unreadable files are passed."""
    for path in sorted(Path(log_dir).rglob(RESULTS_FILE)) if Path(log_dir).is_dir() else []:
        try:
            recorded = json.loads(path.read_text()).get("run", {}).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded == fingerprint:
            return path
    return None


def build_results(
    config: dict,
    metrics: dict[str, float],
    n_samples: int,
    wall_seconds: float,
    overrides: list[str] = (),
    warnings: list[str] = (),
    rounds: dict[str, list] | None = None,
) -> dict:
    """The run, its metrics and its config; AutoAttack's sanity checks as `sanity_checks` (flag -> fired), an
    iterative attack's per-round accuracy and success rate as `rounds`, and with a reversion stage the
    protocol's verdict as `reversion` (see `preempt.reversions.protocol`)."""
    checks = {key.removeprefix(CHECK_PREFIX): value > 0 for key, value in metrics.items() if CHECK_PREFIX in key}
    reversion = None
    if "test/reverted_clean_acc" in metrics:
        reversion = {
            "name": reversion_name(config["reversion"]),
            "knowledge": reversion_knowledge(config["reversion"]),
            **reversion_verdict(metrics, config["reversion_margin"]),
        }
    return {
        "run": {
            "overrides": list(overrides),
            "dataset": config["dataset"]["_target_"].rsplit(".", 1)[-1],
            "defense": config["defense"]["_target_"].rsplit(".", 1)[-1],
            "receiver_defense": config["receiver_defense"]["_target_"].rsplit(".", 1)[-1],
            "attack": attack_name(config["attack"]),
            "reversion": reversion_name(config.get("reversion")),
            "oblivious": bool(config["threat"].get("oblivious", False)),
            "n_samples": n_samples,
            "seed": config.get("seed"),
            "fingerprint": run_fingerprint(config),
            "wall_seconds": round(wall_seconds, 2),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(),
            "python": platform.python_version(),
            "versions": library_versions(),
            "git": git_commit(Path(__file__).resolve().parent),
            "warnings": list(warnings),
        },
        "metrics": metrics,
        "sanity_checks": checks,
        "rounds": rounds,
        "reversion": reversion,
        "config": config,
    }


def write_text_atomically(text: str, path: Path) -> Path:
    """A crash never leaves a truncated results file."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_json_atomically(data: dict, path: Path) -> Path:
    return write_text_atomically(json.dumps(data, indent=2) + "\n", path)


def load_results(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(Path(path).read_text()) for path in paths]


def run_parts(run: dict) -> tuple[str, str, str]:
    """Sender-side defense, receiver-side defense and attack of a run (results.json files from before the
    receiver side existed had none there)."""
    attack = run["attack"] + (" (oblivious)" if run.get("oblivious") else "")
    return run["defense"], run.get("receiver_defense", "Identity"), attack


PART_HEADER = ["defense", "receiver defense", "attack"]


def fired_checks(results: list[dict]) -> str:
    """The sanity flags any of these runs raised, "none", or "—" for runs from before the checks existed."""
    recorded = [result["sanity_checks"] for result in results if result.get("sanity_checks")]
    if not recorded:
        return "—"
    fired = sorted({flag for checks in recorded for flag, value in checks.items() if value})
    return ", ".join(fired) or "none"


REVERSION_HEADER = ["reversion", "verdict"]


def with_reversion(results: list[dict]) -> bool:
    """Tables show the reversion and its verdict only when some run has a reversion stage."""
    return any(result.get("reversion") for result in results)


def reversion_cells(results: list[dict]) -> list[str]:
    """The reversion of these runs (one setting) and each verdict with how many runs reached it."""
    name = results[0]["run"].get("reversion", "none")
    verdicts = [result["reversion"]["verdict"] for result in results if result.get("reversion")]
    counts = ", ".join(f"{verdict} {verdicts.count(verdict)}/{len(verdicts)}" for verdict in sorted(set(verdicts)))
    return [name, counts or "—"]


def format_table(results: list[dict]) -> str:
    """A Markdown table, one row per run, of the metrics the papers report."""
    reversions = with_reversion(results)
    rows = []
    for result in results:
        run, metrics = result["run"], result["metrics"]
        cells = [fmt.format(metrics[key]) if key in metrics else "—" for key, _, fmt in COLUMNS]
        overrides = " ".join(run.get("overrides", []))
        parts = [*run_parts(run), *(reversion_cells([result]) if reversions else [])]
        rows.append([*parts, str(run["n_samples"]), *cells, fired_checks([result]), overrides])
    header = [*PART_HEADER, *(REVERSION_HEADER if reversions else []), "n"]
    return _markdown([*header, *(title for _, title, _ in COLUMNS), CHECKS_HEADER, "overrides"], rows)


def setting_but_seed(run: dict) -> tuple[str, ...]:
    """A run's overrides without its seed: the runs of one setting share it."""
    return tuple(item for item in run.get("overrides", []) if not item.startswith("seed="))


def metric_values(runs: list[dict], key: str) -> list[float]:
    return [run["metrics"][key] for run in runs if key in run["metrics"]]


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    """mean [min–max] over runs, or — when none logged the value."""
    if not values:
        return "—"
    return f"{fmt.format(statistics.fmean(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def format_seed_spread(results: list[dict]) -> str:
    """One row per setting, over the runs that differ only in `seed`: each metric as mean [min–max].

    Figures repeat exactly on one machine but float kernels differ between CPUs, so a number worth quoting
    comes with its spread over seeds.
    """
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        run = result["run"]
        key = (*run_parts(run), run.get("reversion", "none"), run["n_samples"], setting_but_seed(run))
        groups.setdefault(key, []).append(result)
    reversions = with_reversion(results)
    rows = []
    for (defense, receiver_defense, attack, _, n_samples, setting), runs in groups.items():
        cells = [spread(metric_values(runs, key), fmt) for key, _, fmt in COLUMNS]
        seeds = ",".join(str(seed) for seed in sorted(run["run"].get("seed") for run in runs))
        parts = [defense, receiver_defense, attack, *(reversion_cells(runs) if reversions else [])]
        rows.append([*parts, str(n_samples), seeds, *cells, fired_checks(runs), " ".join(setting)])
    header = [*PART_HEADER, *(REVERSION_HEADER if reversions else []), "n", "seeds"]
    header += [*(title for _, title, _ in COLUMNS), CHECKS_HEADER, "overrides (but seed)"]
    return _markdown(header, rows)


def format_reversion_table(results: list[dict]) -> str:
    """The Fast Preemption paper's Table V from reversion runs: per setting (runs that differ only in seed), the
    victim's clean accuracy on original, protected and reverted images, robust accuracy after revert + attack,
    how much protective perturbation is left, and the verdicts with McNemar's p-values."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        run = result["run"]
        key = (run["defense"], run["attack"], run.get("reversion", "none"), setting_but_seed(run))
        groups.setdefault(key, []).append(result)
    rows = []
    for (defense, attack, reversion, setting), runs in groups.items():
        verdicts = [run["reversion"] for run in runs if run.get("reversion")]
        residuals = [verdict["residual"] for verdict in verdicts if verdict["residual"] is not None]
        p_values = [verdict["p_value"] for verdict in verdicts]
        classifier = [item.removeprefix("classifier=") for item in setting if item.startswith("classifier=")]
        rows.append(
            [
                defense,
                ", ".join(classifier) or "(default)",
                reversion,
                attack,
                str(runs[0]["run"]["n_samples"]),
                str(len(runs)),
                spread(metric_values(runs, "test/clean_acc")),
                spread(metric_values(runs, "test/protected_clean_acc")),
                spread(metric_values(runs, "test/reverted_clean_acc")),
                spread(metric_values(runs, "test/robust_acc")),
                spread(residuals, "{:.2f}"),
                reversion_cells(runs)[1],
                f"{min(p_values):.2g}–{max(p_values):.2g}" if p_values else "—",
            ]
        )
    header = [
        "defense",
        "classifier",
        "reversion",
        "attack",
        "n",
        "seeds",
        "original clean acc",
        "protected clean acc",
        "reverted clean acc",
        "robust acc",
        "perturbation left",
        "verdict",
        "McNemar p",
    ]
    return _markdown(header, rows)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> None:
    """`python -m preempt.results DIR...`: one table over every results.json below the given folders."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--over-seeds", action="store_true", help="one row per setting: mean [min–max] over runs that differ in seed"
    )
    view.add_argument(
        "--reversion", action="store_true", help="Table V's view of reversion runs, over seeds, with the verdicts"
    )
    args = parser.parse_args(argv)
    paths = sorted(path for folder in args.folders for path in folder.rglob(RESULTS_FILE))
    if not paths:
        raise SystemExit(f"no {RESULTS_FILE} under {', '.join(map(str, args.folders))}")
    results = load_results(paths)
    failed, unfinished = unfinished_runs(args.folders)
    if failed or unfinished:
        print(
            f"note: {len(failed)} failed run folder(s) (`*{FAILED_SUFFIX}/`, reason in their {FAILED_FILE} file) and "
            f"{len(unfinished)} without results.json (running, or killed) are not in the table",
            file=sys.stderr,
        )
    if args.reversion:
        print(format_reversion_table(results))
    else:
        print(format_seed_spread(results) if args.over_seeds else format_table(results))


if __name__ == "__main__":
    main()
