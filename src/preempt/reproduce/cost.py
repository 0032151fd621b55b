"""What a reproduction costs: the network passes each table's runs make, and the GPU hours they take.

Passes are counted from a run's resolved config, per image and per network, as forward passes and
forward+backward passes (an input gradient), the way the test loop makes them (`evaluation.module`): the
classifier's labels, the defense (once per protection: runs that share one reuse it), the reversion, the attack on
the receiver's g and the victim (twice with `transmit_8bit`, which also attacks the unrounded protection; once more
per iterate a defense keeps), and the scoring. Attacks that stop early (AutoAttack's later attacks run only on the
points still robust, C&W aborts, `early_stop`, `until_bound`) are counted as if no image stopped: the counts are
upper bounds there (L-BFGS's line search: an estimate), and exact elsewhere (`tests/reproduce/test_cost.py` counts
a real run's passes).

Only the config's values are read: no part is imported or built (a plan prices runs its validation then refuses).
Seconds per pass come from the newest `make gpu-check` (`outputs/gpu_check/gpu_check.json`: each paper network's
forward and forward+backward time per image at its presets' batch), or, for a network it did not measure, from the
network's FLOPs (`preempt/models/network_flops.json`) at an assumed H100 throughput: labelled as an estimate.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from preempt.fingerprint import run_fingerprint

FORWARD, BACKWARD = 0, 1
# The test split each dataset's n_samples=null takes whole.
FULL_SPLITS = {"cifar10": 10_000, "cifar10_samples": 20, "imagenet_samples": 20, "imagenet": 50_000, "digits": 360}
# AutoAttack's settings per version (pyautoattack's `_set_version` for Linf and L2; APGD and FAB run 100
# iterations, Square 5000 queries): forward+backward and forward passes per image that every attack runs on.
AUTOATTACK_PASSES = {
    "apgd-ce": (100, 0),
    "apgd-t": (9 * 100, 0),
    "fab-t": (9 * 100, 9 * 100),  # per iteration: the targeted logit difference's gradient, then a check
    "square": (0, 5000),
    "apgd-dlr": (100, 0),
}
AUTOATTACK_EOT = {"standard": 1, "rand": 20}
# Effective H100 throughput (FLOP/s) a FLOP estimate assumes: fp32 networks run their convolutions in TF32
# (PyTorch's default for cuDNN; about 495 TFLOP/s dense at peak, of which small-image batches reach a fraction),
# float16 trunks (the guided UNet) twice that. A backward pass costs two forwards.
ASSUMED_FLOPS = {"float32": 100e12, "float16": 200e12}
BACKWARD_COST = 3.0


class NoPassCount(ValueError):
    """A part the cost model does not know (a class of your own): its runs are left out of the hours, by name."""


def short_target(node: Mapping) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]


def network_key(node: Mapping) -> str | None:
    """The name a model or score model is priced under (its conf option's name for the paper's networks); None for
    a label-only model, which runs no network."""
    target = short_target(node)
    if "ground_truth" in str(node.get("_target_")) or "noisy_labels" in str(node.get("_target_")):
        return None
    if node.get("name"):
        return str(node["name"])
    if target == "load_ddpmpp":
        return "ddpmpp_cifar10"
    if target == "load_guided_unet":
        return "guided_imagenet256"
    if target == "digits_model":  # the name the zoo gives the model
        return f"digits_{node['architecture']}_{'at' if node.get('adversarial_eps') else 'std'}"
    if target == "load_or_train_digits_score_model":
        return "digits_score_model"
    if target == "load_efficientnet_lite":
        return f"efficientnet_lite{node['variant']}"
    return target.removeprefix("load_")


@dataclass
class Passes:
    """Passes per image: network key -> [forward, forward+backward]."""

    counts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))

    def add(self, key: str | None, forward: float = 0, backward: float = 0) -> Passes:
        if key is not None and (forward or backward):
            self.counts[key][FORWARD] += forward
            self.counts[key][BACKWARD] += backward
        return self

    def merge(self, other: Passes, times: float = 1) -> Passes:
        for key, (forward, backward) in other.counts.items():
            self.add(key, forward * times, backward * times)
        return self


def model_call(config: Mapping) -> Passes:
    """One pass of the receiver's model on one image: g (DiffPure runs its score model at every solver step) and
    the victim; counted as forward passes, turned into forward+backward by `as_backward`."""
    passes = Passes().add(network_key(config["victim"]), forward=1)
    return passes.merge(transform_call(config["receiver_defense"], config))


def is_random(transform: Mapping) -> bool:
    """Whether g draws anew on each call (its class's `random`), read from the class only when the project's
    configs may build it: a target of anyone else is not imported, and has no count."""
    from hydra.utils import get_object

    from preempt.validation.targets import is_trusted, trusted_prefixes

    target = str(transform["_target_"])
    if not is_trusted(target, trusted_prefixes()):
        raise NoPassCount(f"transform {target}")
    return bool(getattr(get_object(target), "random", False))


def transform_call(transform: Mapping, config: Mapping) -> Passes:
    """One draw of an input transform g: DiffPure's score model at each of its solver steps, nothing for the
    image-processing transforms."""
    if short_target(transform) != "DiffPure":
        return Passes()
    steps = round(float(transform["t_star"]) / float(transform["step_size"]))
    return Passes().add(network_key(config["score_model"]), forward=steps)


def as_backward(passes: Passes, gradient_through_g: bool = True, config: Mapping | None = None) -> Passes:
    """The same passes with an input gradient. A g the gradient does not go through (BPDA's identity backward,
    DiffPure with `gradients: none`) still runs forward; DiffPure's score model, checkpointed step by step so that
    memory stays flat, runs each step's forward again in the backward pass."""
    score_key = network_key(config["score_model"]) if config is not None else None
    result = Passes()
    for key, (forward, _) in passes.counts.items():
        if key == score_key and not gradient_through_g:
            result.add(key, forward=forward)
        elif key == score_key:
            result.add(key, forward=forward, backward=forward)
        else:
            result.add(key, backward=forward)
    return result


def attack_passes(config: Mapping) -> Passes:
    """Passes per image of one run of the attack on the receiver's model (upper bounds for attacks that stop)."""
    from preempt.attacks.autoattack import VERSION_ATTACKS  # torch: not for the driver's --help
    from preempt.attacks.base import recorded_rounds

    attack, receiver = config["attack"], config["receiver_defense"]
    name = short_target(attack)
    call = model_call(config)
    through_g = not (short_target(receiver) == "DiffPure" and receiver.get("gradients") == "none")
    gradient = as_backward(call, through_g, config)
    if name == "NoAttack":
        return Passes()
    if name == "AutoAttack":
        version = attack.get("version", "standard")
        attacks = attack.get("attacks") or VERSION_ATTACKS[version]
        eot = AUTOATTACK_EOT[version]
        passes = Passes().merge(call)  # the clean check of which points to attack
        for each in attacks:
            backward, forward = AUTOATTACK_PASSES[each]
            passes.merge(gradient, backward * eot).merge(call, forward)
        return passes
    if name == "AdaptiveAttack":
        draws = int(attack["eot_samples"]) if is_random(receiver) else 1
        bpda = attack.get("approximation", "none") != "none"
        step = as_backward(call, not bpda, config)
        passes = Passes().merge(step, int(attack["steps"]) * draws)
        if attack.get("early_stop"):
            passes.merge(call, int(attack["steps"]) * draws)
        return passes.merge(call, len(recorded_rounds(int(attack["steps"]), attack.get("record_every"))))
    if name in ("PGD", "IFGSM"):
        steps = int(attack["steps"])
        passes = Passes().merge(gradient, steps)
        if attack.get("early_stop"):
            passes.merge(call, steps)
        return passes.merge(call, len(recorded_rounds(steps, attack.get("record_every"))))
    if name == "FGSM":
        return Passes().merge(gradient, 1)
    if name == "CarliniWagner":  # and a check of the images it starts from
        return Passes().merge(gradient, int(attack["binary_search_steps"]) * int(attack["steps"])).merge(call)
    if name == "LBFGS":  # SciPy's line search evaluates about twice more per solve; a check after each solve
        solves = int(attack["search_steps"])
        return Passes().merge(gradient, solves * (int(attack["max_iterations"]) + 2)).merge(call, solves)
    raise NoPassCount(f"attack {attack['_target_']}")


def defense_passes(defense: Mapping, backbone: Mapping) -> Passes:
    """Passes per image of one protection by the sender's defense on `backbone`."""
    name, key = short_target(defense), network_key(backbone)
    if name == "NoDefense":
        return Passes()
    if name == "FastPreemption":
        inner = 1 if defense["optimizer"] == "fgsm" else int(defense.get("iterations") or 10)
        steps = int(defense["forward_steps"]) + int(defense["backward_steps"])
        return Passes().add(key, backward=int(defense["n_samples"]) * inner * steps)
    if name == "BiLevel":
        return Passes().add(key, backward=int(defense["iterations"]) * (int(defense["inner_steps"]) + 1))
    if name == "A5":
        return Passes().add("a5_robustifier", forward=1)
    raise NoPassCount(f"defense {defense['_target_']}")


def reversion_passes(config: Mapping) -> Passes:
    """Passes per image of the attacker's reversion of the sent images."""
    reversion = config["reversion"]
    name = short_target(reversion)
    if name == "PreemptiveReversion":
        backbone = reversion.get("backbone") or config["backbone"]
        labeler = reversion.get("classifier") or config["classifier"]
        settings = {**config["defense"], **(reversion.get("defense_settings") or {})}
        return defense_passes(settings, backbone).add(network_key(labeler), forward=1)
    return transform_call(reversion, config)


def run_passes(config: Mapping) -> tuple[Passes, Passes]:
    """Per image of one run (a resolved `src/main.py` config): the protection's passes, which a run that shares
    the protection reuses, and everything else."""
    protection = defense_passes(config["defense"], config["backbone"])
    attack, reversion, call = attack_passes(config), reversion_passes(config), model_call(config)
    receiver = config["receiver_defense"]
    rest = Passes().add(network_key(config["classifier"]), forward=1)  # the sender's labels
    rest.merge(call, 3)  # the receiver on the originals, the sent images and the adversarial ones
    # How much g changes the sent images: one draw, and a second one when g is random.
    rest.merge(transform_call(receiver, config), 2 if is_random(receiver) else 1)
    rounds = 2 if config.get("transmit_8bit") else 1  # the unrounded protection is reverted and attacked again
    rest.merge(attack, rounds).merge(reversion, rounds)
    if config.get("transmit_8bit"):
        rest.merge(call, 2)  # its clean and robust predictions
    if short_target(config["reversion"]) != "NoReversion":
        rest.merge(call, 1)  # the victim on the reverted images
    kept = defense_kept_iterates(config["defense"])
    # Each iterate the defense kept is sent, reverted, attacked and scored like its output.
    rest.merge(attack, kept).merge(reversion, kept).merge(call, 2 * kept)
    return protection, rest


def defense_kept_iterates(defense: Mapping) -> int:
    from preempt.attacks.base import recorded_rounds

    if short_target(defense) != "FastPreemption":
        return 0
    steps = int(defense["forward_steps"]) + int(defense["backward_steps"])
    return len(recorded_rounds(steps, defense.get("record_every")))


def images_per_run(config: Mapping) -> int | None:
    """The images a run scores; None for a whole folder of unknown size (`dataset=folder`, n_samples=null)."""
    dataset = config["dataset"]
    if dataset.get("n_samples") is not None:
        return int(dataset["n_samples"])
    return FULL_SPLITS.get(short_target(dataset))


@dataclass(frozen=True)
class PassTimes:
    """Seconds per image of one forward and one forward+backward pass per network, and where each came from."""

    seconds: dict[str, tuple[float, float]]
    sources: dict[str, str]

    def of(self, key: str) -> tuple[float, float] | None:
        return self.seconds.get(key)


def estimated_times(flops: Mapping[str, Mapping]) -> PassTimes:
    """Pass times from forward FLOPs at the assumed H100 throughput (float16 for the guided UNet's trunk)."""
    seconds, sources = {}, {}
    for key, entry in flops.items():
        precision = "float16" if key == "guided_imagenet256" else "float32"
        forward = float(entry["forward_gflops_per_image"]) * 1e9 / ASSUMED_FLOPS[precision]
        seconds[key] = (forward, BACKWARD_COST * forward)
        rate = ASSUMED_FLOPS[precision] / 1e12
        sources[key] = f"estimate: {entry['forward_gflops_per_image']:.3g} GFLOP forward at {rate:.0f} TFLOP/s"
    return PassTimes(seconds, sources)


def measured_times(check: Mapping) -> PassTimes:
    """Pass times a GPU check measured (rehearsals on a CPU are not measurements of a GPU: ignored)."""
    if check.get("rehearsal"):
        return PassTimes({}, {})
    seconds, sources = {}, {}
    for key, entry in (check.get("networks") or {}).items():
        if entry.get("error") or entry.get("forward_s_per_img") is None:
            continue
        seconds[key] = (float(entry["forward_s_per_img"]), float(entry["forward_backward_s_per_img"]))
        sources[key] = (
            f"measured on {check.get('device', '?')} ({check.get('date', '?')}, batch {entry.get('batch_size')})"
        )
    return PassTimes(seconds, sources)


def pass_times(check_file: Path | None, flops: Mapping[str, Mapping]) -> PassTimes:
    """Measured times where the GPU check has them, FLOP estimates for the rest."""
    estimated = estimated_times(flops)
    measured = PassTimes({}, {})
    if check_file is not None and Path(check_file).is_file():
        measured = measured_times(json.loads(Path(check_file).read_text()))
    return PassTimes({**estimated.seconds, **measured.seconds}, {**estimated.sources, **measured.sources})


@dataclass
class TableCost:
    """One table's passes (in millions, per network) and hours, of every run and of those not finished."""

    table: str
    runs: int = 0
    passes: Passes = field(default_factory=Passes)
    hours: float = 0.0
    hours_to_run: float = 0.0
    unpriced: set[str] = field(default_factory=set)
    cells: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # `row/run` -> hours


def price(passes: Passes, times: PassTimes) -> tuple[float, set[str]]:
    """Seconds of these passes, and the networks no time is known for."""
    seconds, unpriced = 0.0, set()
    for key, (forward, backward) in passes.counts.items():
        known = times.of(key)
        if known is None:
            unpriced.add(key)
            continue
        seconds += forward * known[0] + backward * known[1]
    return seconds, unpriced


@dataclass(frozen=True)
class PricedRun:
    """One seed's run of a table cell (`row/run`), for the cost: its config (resolved, unvalidated) and whether it
    finished."""

    table: str
    cell: str
    config: Mapping
    finished: bool = False


def table_costs(runs: Iterable[PricedRun], times: PassTimes) -> list[TableCost]:
    """Each table's cost. A run two tables share, or a protection several runs share (the protection cache), is
    paid once, by the first table that needs it."""
    from preempt.evaluation.protection_cache import protection_fingerprint  # torch: not for the driver's --help

    costs: dict[str, TableCost] = {}
    seen_runs, seen_protections = set(), set()
    for run in runs:
        cost = costs.setdefault(run.table, TableCost(run.table))
        fingerprint = run_fingerprint(dict(run.config))
        if fingerprint in seen_runs:
            continue
        seen_runs.add(fingerprint)
        try:
            protection, rest = run_passes(run.config)
        except NoPassCount as unknown:
            cost.unpriced.add(f"{run.cell} (no pass count for {unknown})")
            continue
        protection_key = protection_fingerprint(dict(run.config))
        if defense_kept_iterates(run.config["defense"]) == 0 and protection_key in seen_protections:
            protection = Passes()
        seen_protections.add(protection_key)
        images = images_per_run(run.config)
        if images is None:
            cost.unpriced.add(f"the images of {run.config['dataset']['_target_']} (n_samples=null)")
            continue
        passes = Passes().merge(protection, images).merge(rest, images)
        seconds, unpriced = price(passes, times)
        cost.runs += 1
        cost.passes.merge(passes)
        cost.hours += seconds / 3600
        cost.cells[run.cell] += seconds / 3600
        cost.hours_to_run += 0.0 if run.finished else seconds / 3600
        cost.unpriced |= unpriced
    return list(costs.values())


def hours_text(hours: float, unpriced: set[str]) -> str:
    """Hours as a figure, as a lower bound (≥) when some passes have no price, or — when none has."""
    if unpriced and hours == 0:
        return "—"
    return f"{'≥ ' if unpriced else ''}{hours:,.1f}"


def format_costs(costs: list[TableCost], times: PassTimes, device: str) -> str:
    """A Markdown table of each table's passes and hours, the total, and where each network's times come from."""
    lines = [
        f"What the runs cost on {device} (network passes counted from each run's config; upper bounds for attacks "
        "that stop early):",
        "",
        "| table | runs | forward passes (M) | forward+backward passes (M) | GPU hours | GPU hours to run |",
        "|---|---|---|---|---|---|",
    ]
    for cost in costs:
        forward = sum(value[FORWARD] for value in cost.passes.counts.values()) / 1e6
        backward = sum(value[BACKWARD] for value in cost.passes.counts.values()) / 1e6
        hours, to_run = hours_text(cost.hours, cost.unpriced), hours_text(cost.hours_to_run, cost.unpriced)
        lines.append(f"| {cost.table} | {cost.runs} | {forward:,.1f} | {backward:,.1f} | {hours} | {to_run} |")
    total, to_run = sum(cost.hours for cost in costs), sum(cost.hours_to_run for cost in costs)
    unpriced = set().union(*(cost.unpriced for cost in costs))
    lines.append(
        f"| **total** | {sum(cost.runs for cost in costs)} | | | **{hours_text(total, unpriced)}** | "
        f"**{hours_text(to_run, unpriced)}** |"
    )
    cells = sorted(((hours, f"{cost.table}: {cell}") for cost in costs for cell, hours in cost.cells.items()))[::-1]
    if total > 0:
        lines += ["", "The most costly cells (row/run, all seeds):"]
        lines += [f"- {name}: {hours:,.1f} h ({100 * hours / total:.0f}%)" for hours, name in cells[:5]]
    lacking = [cost for cost in costs if cost.unpriced]
    lines += ["", "≥: without what has no price, which the hours leave out:"] if lacking else []
    for cost in lacking:
        lines.append(f"- {cost.table}: {', '.join(sorted(cost.unpriced))}")
    used = sorted({key for cost in costs for key in cost.passes.counts})
    lines += ["", "Seconds per image of each network's passes (forward, forward+backward):"]
    for key in used:
        known = times.of(key)
        if known is None:
            lines.append(f"- {key}: not priced (no measurement and no FLOP count): left out of the hours")
        else:
            lines.append(f"- {key}: {known[0] * 1e3:.3g} ms, {known[1] * 1e3:.3g} ms — {times.sources[key]}")
    return "\n".join(lines)
