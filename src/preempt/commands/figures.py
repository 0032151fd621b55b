"""Figures from the files runs write (`preempt.figures`), never from numbers typed in.

`python -m preempt.commands.figures rounds DIR... --out figure.png`: accuracy and attack success rate against attack
rounds (the second paper's Figure 3), one panel row per attack, one line per receiver-side defense.
`python -m preempt.commands.figures protected OUTPUT_DIR --out figure.png`: originals, the files `preempt protect`
wrote, and their difference amplified, with the manifest's figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from preempt.figures import plot_protected, plot_rounds
from preempt.results.store import RESULTS_FILE, load_results, results_below


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m preempt.commands.figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("figure", choices=["rounds", "protected"])
    parser.add_argument("folders", nargs="+", type=Path, help="run or multirun folders; protected: an OUTPUT_DIR")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--limit", type=int, default=8, help="protected: how many files to show")
    args = parser.parse_args(argv)
    if args.figure == "protected":
        print(plot_protected(args.folders[0], args.out, args.limit))
        return
    paths = results_below(args.folders)
    if not paths:
        raise SystemExit(f"no {RESULTS_FILE} under {', '.join(map(str, args.folders))}")
    print(plot_rounds(load_results(paths), args.out, args.title))


if __name__ == "__main__":
    main()
