"""Perturbation budgets in [0,1] pixel space: validation, random starts, steps and projections.

Attacks and defenses share these so that "eps" and "norm" mean exactly the same thing everywhere. The norm
`normalized_L2` is Guo et al.'s normalized L2 dissimilarity, ‖x′−x‖₂ / ‖x‖₂ (the second paper's budget, 0.05):
an L2 ball whose radius is eps times each image's own L2 norm. The norm `RMS` is the per-value root mean square
of the perturbation, ‖x′−x‖₂ / √d with d = C·H·W (the budget the second paper's authors' code enforces, 0.05): an
L2 ball of radius eps·√d, the same for every image of a shape, and about twice normalized_L2's on real photos.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from preempt import randomness

NORMS = ("Linf", "L2", "normalized_L2", "RMS")


def validate_budget(eps: float, norm: str) -> None:
    """Reject budgets that cannot be meant for [0,1] pixels, with the fix in the message."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not supported; use one of {NORMS}.")
    if not eps > 0:
        raise ValueError(f"eps={eps} must be positive; for no perturbation use defense=none / attack=none.")
    if norm == "Linf" and eps > 1:
        raise ValueError(
            f"Linf eps={eps} is larger than the whole [0,1] pixel range. Pixels are in [0,1]: write 8/255 "
            f"as threat.eps=8/255 on the command line or ${{div:8,255}} in a config."
        )
    if norm == "normalized_L2" and eps > 1:
        raise ValueError(
            f"normalized_L2 eps={eps} allows a perturbation larger than the image itself: it is a fraction of each "
            f"image's L2 norm (the second paper uses 0.05)."
        )
    if norm == "RMS" and eps > 1:
        raise ValueError(
            f"RMS eps={eps} is larger than any perturbation of [0,1] pixels can be: it is the root mean square of "
            f"the per-value change, at most 1 (every value from 0 to 1); the second paper's authors bound it by 0.05."
        )


def _per_sample(x: Tensor) -> Tensor:
    return x.flatten(start_dim=1)


def _view_like(values: Tensor, x: Tensor) -> Tensor:
    return values.view(-1, *([1] * (x.dim() - 1)))


def _values_per_image(x: Tensor) -> int:
    return math.prod(x.shape[1:])


def radius(eps: float, norm: str, center: Tensor) -> float | Tensor:
    """The ball's radius around each image: eps, eps·‖center‖₂ per image for `normalized_L2`, eps·√d for `RMS`."""
    if norm == "normalized_L2":
        return eps * _per_sample(center).norm(dim=1)
    if norm == "RMS":
        return eps * _values_per_image(center) ** 0.5
    return eps


def distance(a: Tensor, b: Tensor, norm: str) -> Tensor:
    """Per-sample distance of `a` from the reference batch `b` in the given norm (relative to ‖b‖ when normalized,
    per value for RMS)."""
    diff = _per_sample(a - b)
    if norm == "Linf":
        return diff.abs().amax(dim=1)
    l2 = diff.norm(p=2, dim=1)
    if norm == "normalized_L2":
        return l2 / _per_sample(b).norm(dim=1).clamp_min(1e-12)
    return l2 / _values_per_image(b) ** 0.5 if norm == "RMS" else l2


def random_uniform(center: Tensor, eps: float, norm: str, rows_per_sample: int = 1) -> Tensor:
    """Noise drawn uniformly from the eps-ball around `center` (the random start of FGSM/PGD).

    `rows_per_sample`: how many consecutive rows of `center` are copies of one sample (N for Fast Preemption's
    repeat_interleave layout), so that with `randomness=per_sample` each sample draws from its own stream."""
    if norm == "Linf":
        return randomness.uniform(center, rows_per_sample).mul_(2).sub_(1).mul_(eps)  # in place: no more copies
    direction = randomness.normal(center, rows_per_sample)
    direction = direction / _view_like(_per_sample(direction).norm(dim=1).clamp_min(1e-12), direction)
    dims = direction[0].numel()
    rows = center.new_empty(center.shape[0])
    fraction = randomness.uniform(rows, rows_per_sample) ** (1.0 / dims)
    return direction * _view_like(fraction * radius(eps, norm, center), direction)


def steepest_direction(grad: Tensor, norm: str) -> Tensor:
    """Unit step that increases a loss fastest under the norm: sign for Linf, normalized gradient for L2."""
    if norm == "Linf":
        return grad.sign()
    return grad / _view_like(_per_sample(grad).norm(dim=1).clamp_min(1e-12), grad)


def project(x_perturbed: Tensor, center: Tensor, eps: float, norm: str) -> Tensor:
    """Project onto the eps-ball around `center` intersected with the [0,1] image box."""
    delta = x_perturbed - center
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (radius(eps, norm, center) / _per_sample(delta).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * _view_like(scale, delta)
    return (center + delta).clamp(0.0, 1.0)


LEVELS = 255  # an 8-bit file's largest value: pixel k is stored as k/255


def to_levels(x: Tensor) -> Tensor:
    """The 8-bit levels (0..255, as floats) an image file stores for [0,1] pixels: each rounded to the nearest."""
    return torch.round(x * LEVELS).clamp(0, LEVELS)


def to_8bit(x: Tensor) -> Tensor:
    """What the receiver gets from a saved PNG: every pixel on the nearest of the 256 levels, in [0,1]."""
    return to_levels(x) / LEVELS


def quantize_within_budget(protected: Tensor, original: Tensor, eps: float | None, norm: str) -> Tensor:
    """`protected` on the 8-bit grid an image file stores, still inside the budget around `original`.

    Plain rounding can step half a level past the budget when eps is not a whole number of levels (0.03 is
    7.65 levels). Linf: each pixel goes to the nearest level within [original − eps, original + eps]. The L2
    norms (L2, normalized_L2, RMS): nearest levels, and an image those put outside the ball gets every pixel
    rounded towards `original` instead, which cannot lengthen its perturbation when `original` is itself on the
    grid (a decoded 8-bit file). eps None: no budget, plain rounding.
    """
    if eps is None:
        return to_8bit(protected)
    levels = torch.round(protected * LEVELS)
    if norm == "Linf":
        # The tolerance keeps a bound of exactly k levels (8/255·255 = 7.999…) at k.
        lowest = torch.ceil((original - eps) * LEVELS - 1e-4).clamp_min(0)
        highest = torch.floor((original + eps) * LEVELS + 1e-4).clamp_max(LEVELS)
        return torch.minimum(torch.maximum(levels, lowest), highest) / LEVELS
    rounded = to_8bit(protected)
    outside = distance(rounded, original, norm) > eps * (1 + 1e-6)  # every L2 norm: eps bounds `distance`
    if not outside.any():
        return rounded
    shift = (protected - original) * LEVELS
    towards = torch.round(original * LEVELS) + torch.trunc(shift + 1e-4 * shift.sign())
    towards = towards.clamp(0, LEVELS) / LEVELS
    return torch.where(_view_like(outside, rounded), towards, rounded)
