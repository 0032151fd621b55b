"""`python -m preempt.commands.results DIR... [--over-seeds | --reversion]`: one table over every results.json
below the given folders (`preempt.results.tables`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preempt.results.store import (
    FAILED_FILE,
    FAILED_SUFFIX,
    RESULTS_FILE,
    load_results,
    results_below,
    unfinished_runs,
)
from preempt.results.tables import format_reversion_table, format_seed_spread, format_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m preempt.commands.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--over-seeds", action="store_true", help="one row per setting: mean [min–max] over runs that differ in seed"
    )
    view.add_argument(
        "--reversion", action="store_true", help="Table V's view of reversion runs, over seeds, with the verdicts"
    )
    args = parser.parse_args(argv)
    paths = results_below(args.folders)
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
