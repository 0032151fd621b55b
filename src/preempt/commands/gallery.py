"""What each shipped transform does to real images: the second paper's Table 1 (both protocols) and a picture.

`python -m preempt.commands.gallery --dataset imagenet_samples --out docs/receiver_defenses.png`

Each transform is built from its own config file (`conf/receiver_defense/<name>.yaml`), so the figures are
those of the shipped settings. Change (the paper's Table 1 as its authors' code measures it): one draw of g against
the image, the per-value RMS of the difference and scikit-image's 7×7 SSIM. Variance (as its text describes it): two
draws of g on every image, L2 distance relative to the image's norm and SSIM between the two. Each averaged over the
images, repeated for several seeds.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from hydra import compose
from hydra.utils import get_object, instantiate
from PIL import Image, ImageDraw

from preempt.config import composer, group_options
from preempt.parts import InputTransform
from preempt.receiver_defenses.base import output_change, output_variance
from preempt.receiver_defenses.jpeg import to_uint8_images

DATASETS = ("digits", "cifar10_samples", "imagenet_samples")
LABEL_HEIGHT = 14


def shipped_transforms() -> dict[str, InputTransform]:
    """Every receiver-side option that changes the images with no model of its own, built from its config file
    (DiffPure's score model is made for one dataset: learn_score_model draws its purifications)."""
    transforms = {}
    with composer():
        for name in group_options("receiver_defense"):
            node = compose("main", overrides=[f"receiver_defense={name}"]).receiver_defense
            target = get_object(node._target_)
            if target.protects and not target.bound:
                transforms[name] = instantiate(node)
    return transforms


def load_images(dataset: str) -> torch.Tensor:
    with composer():
        return instantiate(compose("main", overrides=[f"dataset={dataset}"]).dataset).images


def table1_numbers(transform: InputTransform, images: torch.Tensor, seed: int) -> tuple[float, ...]:
    """`output_change` and `output_variance` (one of its two draws is the change's), averaged over the images,
    under one seed."""
    torch.manual_seed(seed)
    first = transform.transform(images)
    change_rms, change_ssim = output_change(first, images)
    l2, ssim = output_variance(transform, images, first=first)
    return tuple(float(values.mean()) for values in (change_rms, change_ssim, l2, ssim))


def variance_table(transforms: dict[str, InputTransform], images: torch.Tensor, seeds: list[int]) -> str:
    lines = [
        "| transform | differentiable | random | change RMS | change SSIM | variance L2 | variance SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, transform in transforms.items():
        runs = [table1_numbers(transform, images, seed) for seed in seeds]
        columns = zip(*runs, strict=True)
        cells = [f"{statistics.fmean(values):.3f} [{min(values):.3f}–{max(values):.3f}]" for values in columns]
        lines.append(f"| {name} | {transform.differentiable} | {transform.random} | {' | '.join(cells)} |")
    return "\n".join(lines)


def gallery(transforms: dict[str, InputTransform], image: torch.Tensor, seed: int, scale: int) -> Image.Image:
    """The image, then each transform's output (one draw), side by side with their names."""
    torch.manual_seed(seed)
    panels = {"original": image} | {name: g.transform(image[None])[0] for name, g in transforms.items()}
    height, width = image.shape[-2] * scale, image.shape[-1] * scale
    canvas = Image.new("RGB", (width * len(panels), height + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, panel) in enumerate(panels.items()):
        pixels = to_uint8_images(panel.expand(3, -1, -1)[None])[0]
        tile = Image.fromarray(pixels).resize((width, height), Image.NEAREST)
        canvas.paste(tile, (i * width, LABEL_HEIGHT))
        draw.text((i * width + 2, 1), name[: max(4, width // 6)], fill="black")
    return canvas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="imagenet_samples")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--image", type=int, default=0, help="which image of the dataset the picture shows")
    parser.add_argument("--scale", type=int, default=1, help="pixel magnification of the picture")
    parser.add_argument("--out", type=Path, help="PNG file for the picture (left out: no picture)")
    args = parser.parse_args(argv)
    transforms = shipped_transforms()
    images = load_images(args.dataset)
    print(f"{args.dataset}: {len(images)} images, seeds {args.seeds}; mean [min–max] over seeds\n")
    with torch.no_grad():
        print(variance_table(transforms, images, args.seeds))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            gallery(transforms, images[args.image], args.seeds[0], args.scale).save(args.out)
            print(f"\npicture: {args.out}")


if __name__ == "__main__":
    main()
