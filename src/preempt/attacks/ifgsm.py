"""Iterative FGSM, also called the basic iterative method (Kurakin et al.): PGD without the random start."""

from __future__ import annotations

from pydantic import validate_call
from torch import nn

from preempt.attacks.pgd import PGD
from preempt.parts.constraints import ARBITRARY_TYPES, AtLeastOne, Eps, Norm, Positive


class IFGSM(PGD):
    """`steps` FGSM steps from the clean image. Kurakin et al. take steps of one grey level for
    min(eps+4, 1.25·eps) steps (eps in grey levels), i.e. a total travel of 1.25·eps: the default step size."""

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "Linf",
        steps: AtLeastOne = 10,
        step_size: Positive | None = None,
        targeted: bool = False,
        early_stop: bool = False,
        record_every: AtLeastOne | None = None,
    ) -> None:
        step_size = step_size if step_size is not None else 1.25 * eps / steps
        super().__init__(model, eps, norm, steps, step_size, False, targeted, early_stop, record_every)
