"""AutoAttack's own sanity checks (pyautoattack.checks), run on the model every attack differentiates, and the check
that every image the test loop makes is finite.

A defense that "wins" only through masked gradients, randomness the attack ignores, or probabilities in place
of logits gets a flag in results.json and the table, and a warning that says what to run instead. Images with NaN or
inf pixels (from NaN weights, a step that overflows) would be scored as if they were images: an accuracy of 0, an
SSIM of nan and nothing else amiss. They stop the run instead (`refuse_non_finite_images`), so its folder is marked
failed with the reason; a finished run records the check as `non_finite_images: false`.
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
SHOWN_SAMPLES = 5  # how many of the non-finite images a refusal lists
# the stage whose output is checked -> the part that made it.
MADE_BY = {"protected": "defense", "reverted": "reversion", "adversarial": "attack"}


class NonFiniteImagesError(RuntimeError):
    """A stage of the test loop made images with NaN or inf pixels: no score of the run would mean anything."""


def refuse_non_finite_images(stage: str, images: Tensor, index: Tensor) -> None:
    """A NonFiniteImagesError naming the `stage` (a key of MADE_BY), the part that made its images, how many of the
    batch are not finite and which samples (by dataset index) they are."""
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if bool(finite.all()):
        return
    samples = index[~finite.to(index.device)].tolist()
    shown = ", ".join(map(str, samples[:SHOWN_SAMPLES])) + (", ..." if len(samples) > SHOWN_SAMPLES else "")
    raise NonFiniteImagesError(
        f"sanity check non_finite_images fired: {len(samples)} of the {len(images)} {stage} images of the batch from "
        f"sample {int(index[0])} hold NaN or inf pixels (samples {shown}), so every score on them (accuracy, SSIM, "
        f"distances) would be meaningless and the run stops. Check the {MADE_BY[stage]} that made them: weights "
        f"loaded from outside, a step size or a division that overflows"
    )


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
