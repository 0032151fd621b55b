"""AutoAttack's own sanity checks (pyautoattack.checks), run on the model every attack differentiates.

A defense that "wins" only through masked gradients, randomness the attack ignores, or probabilities in place
of logits gets a flag in results.json and the table, and a warning that says what to run instead.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from preempt.attacks.autoattack import WarningCollector
from preempt.attacks.fgsm import loss_gradient

# flag -> what it means for the reported robustness and what to do about it.
FLAG_ADVICE = {
    "randomized": "the attacked model's output changes from call to call (a random defense): a gradient attack "
    "must average over its randomness (attack=eot or bpda_eot, or attack.version=rand for AutoAttack)",
    "probability_output": "the attacked model outputs probabilities, not logits: cross-entropy on them saturates "
    "and gradient attacks stall; return logits",
    "dynamic": "the attacked model computes gradients in its forward pass (a test-time optimization): a static "
    "attack may be insufficient; use an adaptive attack",
    "zero_gradients": "some images have an exactly zero input gradient, so gradient attacks cannot move them "
    "(masked gradients): use BPDA (attack=bpda) or a gradient-free attack before trusting the robust accuracy",
    "square_beat_white_box": "AutoAttack's black-box Square attack beat its white-box attacks: gradients are "
    "likely masked, so the robust accuracy is an overestimate; use an adaptive attack",
}
FLAGS = tuple(FLAG_ADVICE)


def _fired(check, *args) -> bool:
    """Whether one of the package's checks warned (it reports through the logger it is given)."""
    logger = logging.getLogger("preempt.sanity.capture")
    logger.propagate = False
    handler = WarningCollector()
    logger.addHandler(handler)
    try:
        check(*args, logger=logger)
    finally:
        logger.removeHandler(handler)
    return bool(handler.messages)


def sanity_flags(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, bool]:
    """The package's randomness, output-range, dynamic-defense and zero-gradient checks on one batch."""
    from pyautoattack import checks

    for name in checks.funcs:  # the package counts traced calls in a module-level dict and never resets it
        checks.funcs[name] = 0
    flags = {
        "randomized": _fired(checks.check_randomized, model, x, y),
        "probability_output": _fired(checks.check_range_output, model, x),
        "dynamic": _fired(checks.check_dynamic, model, x, False),
    }
    with torch.enable_grad():
        flags["zero_gradients"] = _fired(checks.check_zero_gradients, loss_gradient(model, x, y))
    return flags
