"""Input transforms g: [0,1] images to [0,1] images, placed on the receiver's side or the sender's.

On the receiver's side the victim classifies g(x) and the man in the middle attacks victim∘g; on the sender's
side (`defense=<name>`) the sender sends g(x). The same class serves both. Each transform declares whether
autograd through it is meaningful (`differentiable`) and whether it draws randomness per call (`random`):
the attacks and the validation read these facts, so an attack never silently follows zero gradients.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.defenses.base import Defense
from preempt.threat import distance


class NonDifferentiableTransformError(RuntimeError):
    """A gradient was requested through a transform whose autograd gradient is zero or meaningless."""


class InputTransform(Defense):
    """g(x): same shape and dtype as x, in [0,1]; randomness comes from torch's RNG, so a seed repeats it."""

    differentiable: ClassVar[bool]
    random: ClassVar[bool]

    @abstractmethod
    def transform(self, x: Tensor) -> Tensor:
        """g applied to a batch (B, C, H, W) of [0,1] images."""

    def __call__(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The sender-side call shape: the labels are not needed by a transform."""
        with torch.no_grad():
            return self.transform(x.detach())


class Identity(InputTransform):
    """No receiver-side defense: the victim sees what arrives."""

    differentiable = True
    random = False

    def transform(self, x: Tensor) -> Tensor:
        return x


def output_variance(transform: InputTransform, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, how far two draws of g on the same images are apart (the second paper's Table 1): the L2
    distance relative to the image's norm, as its l2 figures are, and SSIM. A deterministic g gives 0 and 1
    without being run."""
    if not transform.random:
        return torch.zeros(len(x), device=x.device), torch.ones(len(x), device=x.device)
    with torch.no_grad():
        first, second = transform.transform(x), transform.transform(x)
    l2 = distance(first, second, "L2") / x.flatten(start_dim=1).norm(dim=1).clamp_min(1e-12)
    return l2, structural_similarity_index_measure(first, second, data_range=1.0, reduction="none")


def remap(x: Tensor, rows: Tensor, cols: Tensor, fill: float) -> Tensor:
    """out[b, :, i, j] = x[b, :, rows[b, i], cols[b, j]], or `fill` where either index is -1 (outside).

    The separable warps (grid distortion, resize-and-pad) are index maps per image: two gathers, no loop.
    """
    batch, channels, height, width = x.shape
    out = x.gather(3, cols.clamp_min(0)[:, None, None, :].expand(batch, channels, height, width))
    out = out.gather(2, rows.clamp_min(0)[:, None, :, None].expand(batch, channels, height, width))
    inside = (rows >= 0)[:, None, :, None] & (cols >= 0)[:, None, None, :]
    return torch.where(inside, out, torch.full_like(out, fill))


def bpda_hint(transform: InputTransform) -> str:
    return (
        f"{type(transform).__name__} is not differentiable, so gradients through it are zero or meaningless. "
        f"Attack it with BPDA (Athalye et al.: forward through g, backward through an approximation such as the "
        f"identity): attack=bpda, or attack=bpda_eot for a random g; or set threat.oblivious=true to attack the "
        f"bare victim (an attacker who does not know the defense); or use attack=none to score clean accuracy only"
    )


class ReceiverDefended(nn.Module):
    """victim∘g: what the receiver runs, and therefore what a defense-aware man in the middle attacks.

    Asking for a gradient through a non-differentiable g raises instead of returning zeros, so no attack can
    report robustness that only comes from masked gradients.
    """

    def __init__(self, victim: nn.Module, transform: InputTransform) -> None:
        super().__init__()
        self.victim = victim
        self.transform = transform
        self.name = f"{getattr(victim, 'name', type(victim).__name__)}∘{type(transform).__name__}"

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and torch.is_grad_enabled() and not self.transform.differentiable:
            raise NonDifferentiableTransformError(bpda_hint(self.transform))
        if self.transform.differentiable:
            return self.victim(self.transform.transform(x))
        with torch.no_grad():
            transformed = self.transform.transform(x)
        return self.victim(transformed)
