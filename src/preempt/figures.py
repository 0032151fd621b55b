"""Figures built from results.json files, never from numbers typed in.

`python -m preempt.figures rounds DIR... --out figure.png`: accuracy and attack success rate against attack
rounds (the second paper's Figure 3), one panel row per attack, one line per receiver-side defense, the mean
over seeds with their range shaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from preempt.results import RESULTS_FILE, load_results

CURVES = (("accuracy", "ACC"), ("attack_success_rate", "ASR"))


def round_curves(results: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """attack -> receiver-side defense -> the `rounds` records of its runs (one per seed)."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for result in results:
        if result.get("rounds"):
            run = result["run"]
            grouped.setdefault(run["attack"], {}).setdefault(run["receiver_defense"], []).append(result["rounds"])
    return grouped


def plot_rounds(results: list[dict], out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = round_curves(results)
    if not grouped:
        raise SystemExit("no results.json with per-round records (run an iterative attack with record_every)")
    defenses = sorted({defense for by_defense in grouped.values() for defense in by_defense})
    colors = {defense: f"C{index}" for index, defense in enumerate(defenses)}  # one color per defense throughout
    figure, axes = plt.subplots(len(grouped), 2, figsize=(10, 3.6 * len(grouped)), squeeze=False)
    for row, (attack, by_defense) in enumerate(sorted(grouped.items())):
        for column, (key, label) in enumerate(CURVES):
            axis = axes[row][column]
            for defense, records in sorted(by_defense.items()):
                rounds = records[0]["round"]
                values = np.array([record[key] for record in records if record["round"] == rounds])
                legend = f"{defense} ({len(values)} seeds)"
                axis.plot(rounds, values.mean(axis=0), color=colors[defense], label=legend)
                axis.fill_between(rounds, values.min(axis=0), values.max(axis=0), color=colors[defense], alpha=0.2)
            axis.set(xlabel="attack round", ylabel=label, ylim=(-0.02, 1.02), title=f"{attack}: {label}")
            axis.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["rounds"])
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    paths = sorted(path for folder in args.folders for path in folder.rglob(RESULTS_FILE))
    if not paths:
        raise SystemExit(f"no {RESULTS_FILE} under {', '.join(map(str, args.folders))}")
    print(plot_rounds(load_results(paths), args.out, args.title))


if __name__ == "__main__":
    main()
