"""`python -m preempt.commands.samples cifar10|imagenet FOLDER`: copy the 20 real sample images the foolbox wheel
ships into FOLDER, to try `preempt protect` and `dataset=folder` on real photos offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from preempt.datasets.package_samples import export_samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m preempt.commands.samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", choices=["cifar10", "imagenet"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    copied = export_samples(args.prefix, args.folder)
    print(f"{len(copied)} files in {args.folder}")


if __name__ == "__main__":
    main()
