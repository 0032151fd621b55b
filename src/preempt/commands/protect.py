"""`preempt protect INPUT_DIR OUTPUT_DIR [overrides]` (or `python -m preempt.commands.protect ...`): the sender's
tool, a folder of images in, protected 8-bit PNGs and a manifest out (`preempt.protection.folder`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preempt.commands.verify import print_verification


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="preempt protect",
        description="Protect every PNG, JPEG and WebP image under INPUT_DIR; write 8-bit PNGs with the same relative "
        "paths and a manifest.jsonl under OUTPUT_DIR. Settings are Hydra overrides of conf/protect.yaml.",
        epilog="example: preempt protect photos/ protected/ defense=fast_preemption threat.eps=4/255",
    )
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="key=value or group=option, e.g. backbone=digits_cnn_at")
    parser.add_argument("--force", action="store_true", help="protect again files a previous run finished")
    parser.add_argument("--verify", action="store_true", help="check every output against its original after")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_intermixed_args(argv)  # flags may come between the overrides


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    # Imported after the arguments are parsed, so --help and their refusals answer without loading torch and Hydra.
    from preempt.commands.entry import one_line_refusals
    from preempt.config import compose_run, composer
    from preempt.files import exit_cleanly_on_sigterm
    from preempt.protection.folder import protect_folder

    exit_cleanly_on_sigterm()
    with one_line_refusals(), composer():
        cfg = compose_run("protect", arguments.overrides, arguments.output_dir)
        summary = protect_folder(
            cfg, arguments.input_dir, arguments.output_dir, arguments.force, progress=not arguments.no_progress
        )
    print(summary.report(arguments.output_dir))
    status = 1 if summary.failed else 0
    if arguments.verify:
        status = max(status, print_verification(arguments.output_dir))
    return status


if __name__ == "__main__":
    sys.exit(main())
