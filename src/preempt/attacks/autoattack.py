"""AutoAttack (Croce & Hein) through the `pyautoattack` package itself, never a re-implementation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import validate_call
from torch import Tensor, nn

from preempt.attacks.base import Attack
from preempt.parts.constraints import ARBITRARY_TYPES, Eps, Norm
from preempt.threat import radius

PACKAGE_LOGGER = "auto-attack"
# The attacks each version runs, in the package's order (AutoAttack.set_version).
VERSION_ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
# The package's own words when Square beats its white-box attacks (checks.check_square_sr).
SQUARE_MESSAGE = "Square Attack has decreased the robust accuracy"


class WarningCollector(logging.Handler):
    """Keeps the package's warnings (its checks report through a logger) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class AutoAttack(Attack):
    """Standard (APGD-CE, APGD-T, FAB-T, Square) or rand (APGD-CE, APGD-DLR with EOT 20); untargeted only.

    The package's seed is taken from torch's current seed, which the evaluation loop sets per batch from
    the sample indices: the attack then gives the same result whatever the batch order or process count.
    The package's warnings are kept in `package_warnings` rather than printed per batch; the evaluation runs
    the same checks once and reports them (`square_beat_white_box` is the one only a full run can tell).
    An RMS budget is the L2 ball of radius eps·√(C·H·W), which the package runs as its L2 threat model.
    """

    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2", "RMS")

    @classmethod
    def method_name(cls, settings: Mapping[str, Any]) -> str:
        """Marked with the attacks it runs when it runs only some of its version's."""
        attacks = settings.get("attacks")
        return cls.__name__ + (f" ({', '.join(attacks)})" if attacks else "")

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        model: nn.Module | None,
        eps: Eps,
        norm: Norm = "Linf",
        version: Literal["standard", "rand"] = "standard",
        attacks: list[str] | None = None,
    ) -> None:
        super().__init__(model, eps, norm)
        if attacks is not None:
            unknown = [attack for attack in attacks if attack not in VERSION_ATTACKS[version]]
            if unknown or not attacks:
                raise ValueError(
                    f"attack.attacks={attacks}: the {version} version runs {VERSION_ATTACKS[version]}; "
                    f"list some of those (or null for all)"
                )
        self.version = version
        self.attacks = attacks
        self.package_warnings: list[str] = []

    @property
    def square_beat_white_box(self) -> bool:
        return any(SQUARE_MESSAGE in message for message in self.package_warnings)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        from pyautoattack import AutoAttack as PackageAutoAttack

        eps, norm = (radius(self.eps, self.norm, x), "L2") if self.norm == "RMS" else (self.eps, self.norm)
        adversary = PackageAutoAttack(
            self.model, eps=eps, norm=norm, version=self.version, device=x.device, seed=torch.initial_seed()
        )
        if self.attacks is not None:  # the version's settings, fewer of its attacks
            adversary.attacks_to_run = list(self.attacks)
        package_logger = logging.getLogger(PACKAGE_LOGGER)
        handler, propagate = WarningCollector(), package_logger.propagate
        package_logger.addHandler(handler)
        package_logger.propagate = False  # progress is at DEBUG and checks are reported once by the evaluation
        try:
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        finally:
            package_logger.removeHandler(handler)
            package_logger.propagate = propagate
        self.package_warnings += handler.messages
        return x_adv
