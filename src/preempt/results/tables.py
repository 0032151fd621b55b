"""Tables built from results.json files: one row per run, one per setting over seeds, and Table V's view."""

from __future__ import annotations

import statistics

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


CHECKS_HEADER = "sanity flags"


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
