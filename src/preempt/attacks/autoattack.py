"""AutoAttack (Croce & Hein) through the `pyautoattack` package itself, never a re-implementation."""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import Attack
from preempt.constraints import ARBITRARY_TYPES, Eps, Norm


class AutoAttack(Attack):
    """Standard (APGD-CE, APGD-T, FAB-T, Square) or rand (APGD-CE, APGD-DLR with EOT 20).

    The package's seed is taken from torch's current seed, which the evaluation loop sets per batch from
    the sample indices: the attack then gives the same result whatever the batch order or process count.
    """

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self, model: nn.Module | None, eps: Eps, norm: Norm = "Linf", version: Literal["standard", "rand"] = "standard"
    ) -> None:
        super().__init__(model, eps, norm)
        self.version = version
        # The package reports progress on this logger at DEBUG; keep our runs' output readable.
        logging.getLogger("auto-attack").setLevel(logging.WARNING)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        from pyautoattack import AutoAttack as PackageAutoAttack

        adversary = PackageAutoAttack(
            self.model, eps=self.eps, norm=self.norm, version=self.version, device=x.device, seed=torch.initial_seed()
        )
        x_adv, _ = adversary.run_standard_evaluation(x.detach(), y, batch_size=len(x))
        return x_adv.detach()
