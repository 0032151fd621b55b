"""`preempt verify OUTPUT_DIR [--input INPUT_DIR]` (or `python -m preempt.commands.verify ...`): is every protected
file within the budget of its original? (`preempt.protection.verification`)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preempt.protection.verification import MISSING, NO_BUDGET, OVER, WITHIN, verify


def print_verification(output_dir: Path, input_dir: Path | None = None) -> int:
    """Print one line per file and a sum; 0 when every file is within its budget (or has none), else 1."""
    checks = verify(output_dir, input_dir)
    print("| output | verdict | Linf (levels) | distance | budget | note |\n|---|---|---|---|---|---|")
    for check in checks:
        measured = "" if check.distance is None else f"{check.distance:.4g}"
        limit = "" if check.limit is None else f"{check.limit:.4g}"
        levels = "" if check.linf_levels is None else str(check.linf_levels)
        print(f"| {check.output} | {check.verdict} | {levels} | {measured} | {limit} | {check.note} |")
    counts = {
        verdict: sum(check.verdict == verdict for check in checks) for verdict in (WITHIN, OVER, MISSING, NO_BUDGET)
    }
    print(f"\n{len(checks)} file(s): " + ", ".join(f"{count} {verdict}" for verdict, count in counts.items()))
    return 0 if counts[OVER] == counts[MISSING] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="preempt verify", description="Check every protected file in OUTPUT_DIR against its original's budget."
    )
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--input", type=Path, default=None, help="where the originals are now (default: as recorded)")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return print_verification(arguments.output_dir, arguments.input)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
