"""results.json (config + metrics) beside each run's Hydra config, and tables built from those files."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import torch

from preempt.files import replace_atomically

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"

# (metric key, column header, format) in the order the table shows them.
COLUMNS = (
    ("test/classifier_acc", "classifier acc", "{:.3f}"),
    ("test/clean_acc", "clean acc", "{:.3f}"),
    ("test/protected_clean_acc", "protected clean acc", "{:.3f}"),
    ("test/robust_acc", "robust acc", "{:.3f}"),
    ("test/ssim", "SSIM", "{:.3f}"),
    ("test/linf", "max Linf", "{:.4f}"),
    ("test/defense_seconds_per_image", "defense s/img", "{:.4f}"),
)


def build_results(
    config: dict, metrics: dict[str, float], n_samples: int, wall_seconds: float, overrides: list[str] = ()
) -> dict:
    return {
        "run": {
            "overrides": list(overrides),
            "dataset": config["dataset"]["_target_"].rsplit(".", 1)[-1],
            "defense": config["defense"]["_target_"].rsplit(".", 1)[-1],
            "attack": config["attack"]["_target_"].rsplit(".", 1)[-1],
            "n_samples": n_samples,
            "wall_seconds": round(wall_seconds, 2),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        },
        "metrics": metrics,
        "config": config,
    }


def write_json_atomically(data: dict, path: Path) -> Path:
    """A crash never leaves a truncated results file."""
    return replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def load_results(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(Path(path).read_text()) for path in paths]


def format_table(results: list[dict]) -> str:
    """A Markdown table, one row per run, of the metrics the papers report."""
    header = ["defense", "attack", "n", *(title for _, title, _ in COLUMNS), "overrides"]
    rows = []
    for result in results:
        run, metrics = result["run"], result["metrics"]
        cells = [run["defense"], run["attack"], str(run["n_samples"])]
        cells += [fmt.format(metrics[key]) if key in metrics else "—" for key, _, fmt in COLUMNS]
        rows.append([*cells, " ".join(run.get("overrides", []))])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> None:
    """`python -m preempt.results DIR...`: one table over every results.json below the given folders."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    args = parser.parse_args(argv)
    paths = sorted(path for folder in args.folders for path in folder.rglob(RESULTS_FILE))
    if not paths:
        raise SystemExit(f"no {RESULTS_FILE} under {', '.join(map(str, args.folders))}")
    print(format_table(load_results(paths)))


if __name__ == "__main__":
    main()
