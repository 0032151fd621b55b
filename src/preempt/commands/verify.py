"""`preempt verify OUTPUT_DIR [--input INPUT_DIR] [--eps EPS [--norm NORM]]` (or `python -m preempt.commands.verify
...`): is every protected file within the budget of its original? (`preempt.protection.verification`)

Exit status: 0 when every file passes, 1 when one does not, 2 when the command refuses (bad arguments, no manifest
or a malformed one). Torch-free, so it answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preempt.protection.manifest_lines import UnreadableManifestError
from preempt.protection.verification import NORMS, PASSING, VERDICTS, budget_problem, verify


def print_verification(output_dir: Path, input_dir: Path | None = None, budget: dict | None = None) -> int:
    """Print one line per file and a sum; 0 when every file is within its budget (or has none), else 1."""
    checks = verify(output_dir, input_dir, budget)
    print("| output | verdict | Linf (levels) | distance | budget | note |\n|---|---|---|---|---|---|")
    for check in checks:
        measured = "" if check.distance is None else f"{check.distance:.4g}"
        limit = "" if check.limit is None else f"{check.limit:.4g}"
        levels = "" if check.linf_levels is None else str(check.linf_levels)
        print(f"| {check.output} | {check.verdict} | {levels} | {measured} | {limit} | {check.note} |")
    counts = {verdict: sum(check.verdict == verdict for check in checks) for verdict in VERDICTS}
    print(f"\n{len(checks)} file(s): " + ", ".join(f"{count} {verdict}" for verdict, count in counts.items()))
    return 0 if all(check.verdict in PASSING for check in checks) else 1


def eps_value(text: str) -> float:
    """A budget as a number or a fraction of levels: 0.0314 or 8/255."""
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction such as 8/255") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="preempt verify", description="Check every protected file in OUTPUT_DIR against its original's budget."
    )
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--input", type=Path, default=None, help="where the originals are now (default: as recorded)")
    parser.add_argument(
        "--eps", type=eps_value, default=None, help="check against this budget, not the manifest's (e.g. 8/255)"
    )
    parser.add_argument("--norm", choices=NORMS, default=None, help="the norm of --eps (default: Linf)")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    budget = None
    if arguments.eps is not None:
        budget = {"eps": arguments.eps, "norm": arguments.norm or "Linf"}
        if problem := budget_problem(budget):
            parser.error(f"--eps: {problem}")
    elif arguments.norm is not None:
        parser.error(f"--norm {arguments.norm} is the norm of a budget: give the budget too, --eps EPS")
    try:
        return print_verification(arguments.output_dir, arguments.input, budget)
    except (FileNotFoundError, UnreadableManifestError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
