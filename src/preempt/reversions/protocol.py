"""The reversion protocol's verdict (Fast Preemption paper, Section IV-C and Table V).

A reversion attack that works brings the victim's clean accuracy on the reverted images back towards its accuracy
on the originals; distortion (JPEG, purification) only lowers it further. That can only be told apart when the
protection changed predictions, which the protocol ensures with a deliberately poor classifier
(`classifier=noisy_labels`): protection then lowers clean accuracy. The verdict, per run:

- `not measurable`: protection did not lower clean accuracy by more than the margin, so a rise after reversion
  cannot be told from noise (the paper's fourth row of Table V: a good classifier);
- `succeeded`: the reverted images' accuracy is more than the margin above the protected images';
- `failed`: otherwise.

McNemar's exact test on the images whose correctness changed between protected and reverted (a paired test: the
same images) gives the chance of a change at least that large with no real effect.
"""

from __future__ import annotations

from hydra.utils import get_object
from scipy.stats import binomtest

from preempt.parts import InputTransform, NoReversion, Reversion
from preempt.parts.reversion import BLIND

SUCCEEDED, FAILED, NOT_MEASURABLE = "succeeded", "failed", "not measurable"
# The metrics the verdict reads (all logged by the test loop when a reversion is set).
VERDICT_METRICS = (
    "test/clean_acc",
    "test/protected_clean_acc",
    "test/reverted_clean_acc",
    "test/reversion_fixed",
    "test/reversion_broke",
    "test/protected_l2_to_original",
    "test/reverted_l2_to_original",
)


def reversion_verdict(metrics: dict[str, float], margin: float) -> dict:
    """The verdict and the figures it rests on, for results.json."""
    original, protected = metrics["test/clean_acc"], metrics["test/protected_clean_acc"]
    reverted = metrics["test/reverted_clean_acc"]
    fixed, broke = round(metrics["test/reversion_fixed"]), round(metrics["test/reversion_broke"])
    drop, recovered = original - protected, reverted - protected
    if drop <= margin:
        verdict = NOT_MEASURABLE
        reason = (
            f"protection lowered clean accuracy by {drop:.3f}, not more than the margin {margin}: use a poor "
            f"classifier (classifier=noisy_labels) so that a reversion can be seen"
        )
    elif recovered > margin:
        verdict = SUCCEEDED
        reason = f"reverted accuracy rose {recovered:.3f} above the protected images' (margin {margin})"
    else:
        verdict = FAILED
        reason = f"reverted accuracy moved {recovered:+.3f} from the protected images' (needs more than +{margin})"
    protection = metrics["test/protected_l2_to_original"]
    return {
        "verdict": verdict,
        "reason": reason,
        "margin": margin,
        "original_acc": original,
        "protected_acc": protected,
        "reverted_acc": reverted,
        "recovered": recovered,
        "recovered_fraction": recovered / drop if drop > 0 else None,
        # How much of the protective perturbation is left: mean ‖x̃ − x‖₂ over mean ‖x_r − x‖₂ (0: erased, 1: as
        # protected, above 1: distorted further).
        "residual": metrics["test/reverted_l2_to_original"] / protection if protection > 0 else None,
        "fixed": fixed,
        "broke": broke,
        "p_value": binomtest(fixed, fixed + broke, 0.5).pvalue if fixed + broke else 1.0,
    }


def _reversion_class(node: dict | None) -> type:
    """Results from before the reversion stage have no reversion config: no reversion."""
    return get_object(node["_target_"]) if node else NoReversion


def _settings(node: dict | None) -> dict:
    return {key: value for key, value in (node or {}).items() if not key.startswith("_")}


def reversion_knowledge(node: dict | None) -> str:
    """What a reversion config's attacker knows of the sender: none (no reversion), blind (a transform such as JPEG
    or DiffPure), white-box or black-box (Preemptive Reversion with the sender's setup, or with its own parts)."""
    target = _reversion_class(node)
    if issubclass(target, InputTransform):
        return BLIND
    return target.knowledge_of(_settings(node)) if issubclass(target, Reversion) else BLIND


def reversion_name(node: dict | None) -> str:
    """The reversion's name in a table row (`Part.label`): `none`, a transform's class, or Preemptive Reversion
    with the attacker's knowledge."""
    return _reversion_class(node).label(_settings(node))
