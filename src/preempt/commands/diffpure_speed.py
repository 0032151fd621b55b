"""How fast DiffPure purifies, by solver and gradient mode, on the digits with the project's score model.

`python -m preempt.commands.diffpure_speed --batch 128 --repeats 3`

Times one purification of a batch (seconds per image, the median of `repeats`) with our batched loop and with
torchsde's `sdeint`, without gradients (what the receiver runs) and with an input gradient (what a white-box
attack pays per step): backprop through the loop, and torchsde's adjoint. On CUDA it also reports peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from preempt.config import project_root
from preempt.datasets.digits import digits_split
from preempt.receiver_defenses.diffpure import DiffPure
from preempt.zoo.digits_score_model import load_or_train_digits_score_model

MODES = {
    "loop, no gradient": ("loop", "backprop", False),
    "torchsde sdeint, no gradient": ("torchsde", "backprop", False),
    "loop, backprop gradient": ("loop", "backprop", True),
    "torchsde adjoint gradient": ("torchsde", "adjoint", True),
}


def time_purification(purify: DiffPure, x: torch.Tensor, gradient: bool, repeats: int) -> tuple[float, float | None]:
    """Median seconds per image over `repeats` calls after one untimed warm-up call, and peak CUDA memory in GiB
    (None on the CPU)."""
    seconds = []
    for _ in range(repeats + 1):
        if x.is_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        if gradient:
            images = x.clone().requires_grad_(True)
            torch.autograd.grad(purify.transform(images).sum(), images)
        else:
            with torch.no_grad():
                purify.transform(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        seconds.append((time.perf_counter() - start) / len(x))
    seconds = seconds[1:]
    peak = torch.cuda.max_memory_allocated() / 2**30 if x.is_cuda else None
    return statistics.median(seconds), peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--t-star", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", default=str(Path(project_root()) / ".cache"), help="score model cache")
    parser.add_argument("--recipe", nargs="*", default=[], help="score model recipe overrides, e.g. width=16 steps=800")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    recipe = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.recipe)}
    model = load_or_train_digits_score_model(args.cache_dir, **recipe).to(args.device)
    x = digits_split("test", 16)[0][: args.batch].to(args.device)
    print(f"DiffPure on {len(x)} digits, t* = {args.t_star}, dt = 1e-3, {args.device}, median of {args.repeats}\n")
    print("| solver and gradient | s/image | peak GiB |\n|---|---|---|")
    for name, (solver, gradients, gradient) in MODES.items():
        purify = DiffPure(t_star=args.t_star, solver=solver, gradients=gradients, score_model=model)
        torch.manual_seed(0)
        seconds, peak = time_purification(purify, x, gradient, args.repeats)
        print(f"| {name} | {seconds:.4f} | {'—' if peak is None else f'{peak:.2f}'} |")


if __name__ == "__main__":
    main()
