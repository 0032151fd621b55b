"""The fast gradient sign method (Goodfellow et al.), and the one FGSM step every attack and defense shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import Attack
from preempt.parts.constraints import ARBITRARY_TYPES, Eps, Norm
from preempt.speed import chunks
from preempt.threat import project, radius, steepest_direction


def loss_gradient(
    model: nn.Module, x: Tensor, labels: Tensor, samples: int = 1, copies_per_pass: int | None = None
) -> Tensor:
    """∇ₓ of each image's cross-entropy on `labels`; over `samples` forward passes of a random model, their mean
    (expectation over transformation). All images in one pass (`samples` copies of each), or in consecutive
    chunks of `copies_per_pass` images, so the activations of only one chunk are held at a time."""
    grads = [_chunk_gradient(model, x[part], labels[part], samples) for part in chunks(len(x), copies_per_pass)]
    return grads[0] if len(grads) == 1 else torch.cat(grads)


def _chunk_gradient(model: nn.Module, x: Tensor, labels: Tensor, samples: int) -> Tensor:
    x = x.detach().requires_grad_(True)
    copies = x.repeat_interleave(samples, dim=0) if samples > 1 else x
    loss = F.cross_entropy(model(copies), labels.repeat_interleave(samples), reduction="sum") / samples
    if not loss.requires_grad:
        raise RuntimeError(
            f"{getattr(model, 'name', type(model).__name__)} gives no gradient w.r.t. its input (an operation such as "
            f"torch.round cuts the graph): a gradient attack cannot follow it; approximate that operation with BPDA"
        )
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm_step(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    step_size: float,
    center: Tensor,
    eps: float,
    norm: str,
    toward_labels: bool = False,
    samples: int = 1,
    copies_per_pass: int | None = None,
) -> Tensor:
    """One steepest step of `step_size` (in the units of eps) that raises the cross-entropy on `labels`, or
    lowers it when `toward_labels`, projected to the eps-ball around `center` and to [0,1]. The gradient's passes
    take `copies_per_pass` images at a time (all at once when None); the step itself is one tensor operation."""
    grad = loss_gradient(model, x, labels, samples, copies_per_pass)
    direction = steepest_direction(-grad if toward_labels else grad, norm)
    size = radius(step_size, norm, center)
    if isinstance(size, Tensor):
        size = size.view(-1, *([1] * (x.dim() - 1)))
    return project(x.detach() + size * direction, center, eps, norm)


class FGSM(Attack):
    """One step of size eps from the clean image: sign of the gradient under Linf, its direction under L2."""

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(self, model: nn.Module | None, eps: Eps, norm: Norm = "Linf", targeted: bool = False) -> None:
        super().__init__(model, eps, norm, targeted)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        toward = target is not None
        return fgsm_step(self.gradient_model, x, target if toward else y, self.eps, x, self.eps, self.norm, toward)
