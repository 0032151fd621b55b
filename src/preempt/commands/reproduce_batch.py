"""Several multiruns of `src/main.py` in one process: `python -m preempt.commands.reproduce_batch COMMANDS.json`.

Each multirun is exactly what `src/main.py -m <arguments>` would run; one process for all of them pays the ~5 s of
imports once instead of once per cell. The file holds a list of {"name": ..., "arguments": [...]}; a line
`== done <name>: <exit status>` is printed after each, and the first failure stops the rest unless --keep-going.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from preempt.commands.evaluate import main as evaluate_main
from preempt.reproduce.runs import DONE, ROOT

MAIN = ROOT / "src" / "main.py"


def exit_status(error: SystemExit) -> int:
    return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preempt.commands.reproduce_batch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("commands", type=Path)
    parser.add_argument("--keep-going", action="store_true")
    args = parser.parse_args(argv)
    failures = 0
    for command in json.loads(args.commands.read_text()):
        sys.argv = [str(MAIN), *command["arguments"]]
        try:
            evaluate_main()
            status = 0
        except SystemExit as error:
            status = exit_status(error)
            if isinstance(error.code, str):  # a refusal's one line, which Python prints when a script exits with it
                print(error.code, file=sys.stderr, flush=True)
        finally:
            GlobalHydra.instance().clear()
        print(f"{DONE} {command['name']}: {status}", flush=True)
        failures += status != 0
        # A signal (128 + its number) stops the batch whatever --keep-going says: someone is stopping it.
        if status != 0 and (not args.keep_going or status >= 128):
            break
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
