"""What the receiver runs (victim∘g) and what the transforms share: separable warps and output variance.

The transforms' contract (`InputTransform`, `Identity`) is in `preempt.parts`: on the receiver's side the victim
classifies g(x) and the man in the middle attacks victim∘g.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.parts import Identity, InputTransform, NonDifferentiableTransformError, bpda_hint
from preempt.threat import distance


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


def receiver_model(victim: nn.Module, transform: InputTransform) -> nn.Module:
    """What the receiver classifies with: victim∘g, or the victim itself when there is no receiver-side defense."""
    return victim if isinstance(transform, Identity) else ReceiverDefended(victim, transform)
