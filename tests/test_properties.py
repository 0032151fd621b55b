"""Every defense and attack config keeps the pipeline's contract for any batch, budget and step count.

The options are discovered from conf/defense and conf/attack, so a new config file is covered without editing
this file: its output must be finite, in [0,1], of the input's shape and dtype, within the eps-ball of its
input, detached from the graph, and it must leave its inputs untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from omegaconf import DictConfig, OmegaConf
from torch import nn

from preempt.assembly import bind
from preempt.defenses.a5 import Robustifier
from preempt.models import PixelClassifier
from preempt.threat import NORMS, distance


def discover(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@functools.cache
def option_config(group: str, option: str) -> DictConfig:
    """The option's node as composed (a file may include another group's): which keys it has and which class
    it builds."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="main", overrides=[f"{group}={option}"])[group]


DEFENSES = discover("defense")
ATTACKS = discover("attack")

IMAGE_SHAPE = (3, 8, 8)
N_CLASSES = 10
EPS_RANGES = {"Linf": (1e-3, 0.3), "L2": (1e-2, 2.0), "normalized_L2": (1e-3, 0.5), "RMS": (1e-3, 0.3)}
BUDGET_TOLERANCE = 1e-5

# Small values for the iteration keys an option's config has; other keys keep the config's values.
ITERATION_KEYS = {
    "n_samples": st.integers(1, 4),
    "steps": st.integers(1, 3),
    "forward_steps": st.integers(0, 3),
    "backward_steps": st.integers(0, 3),
    "eot_samples": st.integers(1, 3),
    "binary_search_steps": st.integers(1, 2),
    "search_steps": st.integers(1, 2),
    "max_iterations": st.integers(1, 5),
    "iterations": st.integers(1, 3),
    "inner_steps": st.integers(1, 3),
}

Part = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # a bound defense or attack

AUTOATTACK = "preempt.attacks.autoattack.AutoAttack"
# pyautoattack casts images to float32 inside (`x.detach().clone().float()` in autopgd_base and fab_base), so a
# float64 model fails on its first forward pass: AutoAttack is checked on float32 only.
FLOAT32_ONLY = {AUTOATTACK}
# One AutoAttack example costs seconds (all four attacks run on samples that stay robust); the others, milliseconds.
MAX_EXAMPLES = {AUTOATTACK: 3}
DEFAULT_MAX_EXAMPLES = 50


@dataclass(frozen=True)
class Case:
    """One drawn input: a batch in [0,1], a budget, the option's iteration overrides and torch's seed."""

    images: np.ndarray
    eps: float
    overrides: tuple[str, ...]
    seed: int


def dtypes_for(target: str) -> list[type[np.floating]]:
    return [np.float32] if target in FLOAT32_ONLY else [np.float32, np.float64]


@st.composite
def iteration_overrides(draw: st.DrawFn, group: str, keys: set[str]) -> tuple[str, ...]:
    strategies = {key: strategy for key, strategy in ITERATION_KEYS.items() if key in keys}
    # A forward-backward cascade (Fast Preemption) needs at least one step in all.
    values = draw(
        st.fixed_dictionaries(strategies).filter(
            lambda drawn: drawn.get("forward_steps", 1) + drawn.get("backward_steps", 1) >= 1
        )
    )
    return tuple(f"{group}.{key}={value}" for key, value in values.items())


@st.composite
def cases(draw: st.DrawFn, group: str, option: str, norm: str) -> Case:
    config = option_config(group, option)
    dtype = draw(st.sampled_from(dtypes_for(config._target_)))
    batch = draw(st.integers(1, 4))
    pixels = st.floats(0.0, 1.0, width=np.finfo(dtype).bits)
    low, high = EPS_RANGES[norm]
    return Case(
        images=draw(arrays(dtype, (batch, *IMAGE_SHAPE), elements=pixels)),
        eps=draw(st.floats(low, high, exclude_min=True)),
        # Unset (null) keys keep their meaning: Fast Preemption's `iterations` is only PGD's; without random starts
        # (Eq. 8: defense=bilevel_fp) N stays 1, as N copies from one start would be refused.
        overrides=draw(
            iteration_overrides(
                group,
                {key for key, value in config.items() if value is not None}
                - ({"n_samples"} if config.get("random_start") is False else set()),
            )
        ),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def label_arrays(batch: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.int64, batch, elements=st.integers(0, N_CLASSES - 1))


def example_settings(group: str, option: str) -> settings:
    target = option_config(group, option)._target_
    return settings(max_examples=MAX_EXAMPLES.get(target, DEFAULT_MAX_EXAMPLES), deadline=None, derandomize=True)


@functools.cache
def tiny_classifier(dtype: torch.dtype) -> PixelClassifier:
    """A seeded, frozen conv+linear classifier; cached so every example sees the same weights."""
    torch.manual_seed(0)
    channels, height, width = IMAGE_SHAPE
    network = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * height * width, N_CLASSES)
    )
    return PixelClassifier(network, name="tiny", input_shape=IMAGE_SHAPE).to(dtype)


@functools.cache
def tiny_robustifier(dtype: torch.dtype) -> Robustifier:
    torch.manual_seed(0)
    return Robustifier(IMAGE_SHAPE[0], width=4, kernel_size=3).to(dtype).requires_grad_(False)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """8×8 images gain nothing from intra-op threads; on a shared 2-core machine AutoAttack ran ~15x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def configure(base: DictConfig, case: Case, norm: str) -> DictConfig:
    """The composed config with the case's budget and iteration counts (struct mode rejects unknown keys)."""
    overrides = [f"threat.eps={case.eps!r}", f"threat.norm={norm}", *case.overrides]
    return OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))


def run_unmodified(part: Part, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Calls `part(x, labels)` and checks that neither input was written to."""
    x_before, labels_before = x.clone(), labels.clone()
    out = part(x, labels)
    assert torch.equal(x, x_before), "the input images were modified in place"
    assert torch.equal(labels, labels_before), "the input labels were modified in place"
    return out


def assert_valid_output(out: torch.Tensor, x: torch.Tensor, eps: float, norm: str, budgeted: bool) -> None:
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert not out.requires_grad
    if budgeted:
        assert (distance(out, x, norm) <= eps + BUDGET_TOLERANCE).all(), distance(out, x, norm)


def test_discovery_finds_the_current_options() -> None:
    assert {"none", "fast_preemption"} <= set(DEFENSES)
    assert {"none", "pgd", "autoattack"} <= set(ATTACKS)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("option", DEFENSES)
def test_defense_output_is_valid_and_within_budget(option: str, norm: str, compose_config) -> None:
    base = compose_config(f"defense={option}")
    budgeted = "eps" in base.defense  # NoDefense has no budget: it sends the images as they are
    if norm not in getattr(get_object(base.defense._target_), "norms", NORMS):
        pytest.skip(f"{option} refuses norm={norm} (tested in its own tests)")

    @example_settings("defense", option)
    @given(case=cases("defense", option, norm), data=st.data())
    def check(case: Case, data: st.DataObject) -> None:
        cfg = configure(base, case, norm)
        x = torch.from_numpy(case.images)
        labels = torch.from_numpy(data.draw(label_arrays(len(x)), label="labels"))
        torch.manual_seed(case.seed)
        # A5: a seeded random robustifier stands in for the trained one.
        models = {"backbone": tiny_classifier(x.dtype), "robustifier": tiny_robustifier(x.dtype)}
        defense = bind(instantiate(cfg.defense), models)
        protected = run_unmodified(defense, x, labels)
        assert_valid_output(protected, x, case.eps, norm, budgeted)

    check()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("option", ATTACKS)
def test_attack_output_is_valid_and_within_budget(option: str, norm: str, compose_config) -> None:
    base = compose_config(f"attack={option}")
    budgeted = "eps" in base.attack  # NoAttack has no budget: it passes the images through
    if norm not in getattr(get_object(base.attack._target_), "norms", NORMS):
        pytest.skip(f"{option} refuses norm={norm} (tested in its own tests)")

    @example_settings("attack", option)
    @given(case=cases("attack", option, norm))
    def check(case: Case) -> None:
        cfg = configure(base, case, norm)
        x = torch.from_numpy(case.images)
        victim = tiny_classifier(x.dtype)
        # Attack the victim's own predictions so every sample is attacked: AutoAttack returns misclassified
        # samples unchanged, which would pass the budget check without testing it.
        with torch.no_grad():
            labels = victim(x).argmax(dim=1)
        torch.manual_seed(case.seed)
        attack = bind(instantiate(cfg.attack), {"model": victim})
        x_adv = run_unmodified(attack, x, labels)
        assert_valid_output(x_adv, x, case.eps, norm, budgeted)

    check()
