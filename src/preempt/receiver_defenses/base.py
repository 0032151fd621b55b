"""What the receiver runs (victim∘g) and what the transforms share: separable warps, and how much g changes an
image (the second paper's Table 1, both ways: two draws apart, and one draw against its input).

The transforms' contract (`InputTransform`, `Identity`) is in `preempt.parts`: on the receiver's side the victim
classifies g(x) and the man in the middle attacks victim∘g.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.parts import Identity, InputTransform, NonDifferentiableTransformError, bpda_hint
from preempt.threat import distance


def output_variance(transform: InputTransform, x: Tensor, first: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per image, how far two draws of g on the same images are apart (the second paper's Table 1 as its text
    describes it): the L2 distance relative to the image's norm, and SSIM. A deterministic g gives 0 and 1
    without being run. `first`, a draw of g(x) already made, is reused as one of the two."""
    if not transform.random:
        return torch.zeros(len(x), device=x.device), torch.ones(len(x), device=x.device)
    with torch.no_grad():
        first = transform.transform(x) if first is None else first
        second = transform.transform(x)
    l2 = distance(first, second, "L2") / x.flatten(start_dim=1).norm(dim=1).clamp_min(1e-12)
    return l2, structural_similarity_index_measure(first, second, data_range=1.0, reduction="none")


def uniform_ssim(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Per image, SSIM exactly as scikit-image's `structural_similarity` computes it by default, which the second
    paper's authors' code calls (data range 1, every channel, averaged): a window² uniform window with the
    sample (co)variances (÷ n − 1), K1 = 0.01, K2 = 0.03, scored only where the window fits inside the image.
    torchmetrics' uniform-kernel SSIM is ~0.06 off it: it reflects the borders, scores them too and divides by n."""
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM's {window}×{window} window needs images of at least {window} pixels a side")
    n = window * window
    means = F.avg_pool2d(torch.cat([a, b, a * a, b * b, a * b]), window, stride=1)  # only where the window fits
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = means.chunk(5)
    var_a, var_b = (mean_aa - mean_a**2) * n / (n - 1), (mean_bb - mean_b**2) * n / (n - 1)
    covariance = (mean_ab - mean_a * mean_b) * n / (n - 1)
    c1, c2 = 0.01**2, 0.03**2
    luminance = (2 * mean_a * mean_b + c1) / (mean_a**2 + mean_b**2 + c1)
    return (luminance * (2 * covariance + c2) / (var_a + var_b + c2)).flatten(start_dim=1).mean(dim=1)


def output_change(output: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, how far `output` is from `reference` as the second paper's authors' code measures its Table 1
    (one g(x) against the x it was given; also the learned approximation g′(x) against g(x)): the root mean
    square of the difference over all values (pixels and channels), and `uniform_ssim`."""
    return distance(output, reference, "RMS"), uniform_ssim(output, reference)


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
