"""`python -m preempt.commands.pictures OUT_DIR [overrides] [--images 4] [--backbones A B ...]`: the Fast Preemption
paper's Figures 4, 5 and 7, drawn from the composed config as a run builds it (`preempt.reproduce.pictures`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from preempt.commands.entry import one_line_refusals
from preempt.reproduce.pictures import (
    FIGURE4_FILE,
    FIGURE5_FILE,
    FIGURE7_BACKBONES,
    FIGURE7_FILE,
    NUMBERS_FILE,
    backbone_configs,
    composed,
    draw_pictures,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m preempt.commands.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out_dir", type=Path, help=f"where {FIGURE4_FILE}, {FIGURE5_FILE}, {FIGURE7_FILE} and {NUMBERS_FILE} go"
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of conf/main.yaml, e.g. experiment=cifar10_resnet18"
    )
    parser.add_argument("--images", type=int, default=4, help="how many of the dataset's first images (default 4)")
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=list(FIGURE7_BACKBONES),
        help=f"Figure 7's columns, backbone= options (default: {' '.join(FIGURE7_BACKBONES)}, the digits zoo's)",
    )
    arguments = parser.parse_args(argv)
    with one_line_refusals(), composed(arguments.overrides, arguments.out_dir) as configs:
        backbones = backbone_configs(arguments.overrides, arguments.out_dir, arguments.backbones)
        draw_pictures(configs, arguments.out_dir, arguments.images, arguments.overrides, backbones)
    for name in (FIGURE4_FILE, FIGURE5_FILE, FIGURE7_FILE, NUMBERS_FILE):
        print(arguments.out_dir / name)


if __name__ == "__main__":
    main()
