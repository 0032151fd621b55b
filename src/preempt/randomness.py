"""Per-sample random streams, so that a result does not depend on the batch size.

With `randomness=per_batch` (the default) the test loop seeds torch once per batch from the run seed and the
batch's first sample index: results repeat across batch orders and process counts, but another batch size
cuts the draws differently. With `randomness=per_sample` every image draws from its own generator, seeded from
the run seed and its sample index, wherever the draws go through this module: the preemptive defenses' random
starts (Fast Preemption, Bi-Level), PGD's random start and the random targets. The batch size then changes
speed only. Draws elsewhere (AutoAttack's, the random receiver-side transforms', DiffPure's) stay per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

# Seeds are spaced by this prime, so (run seed, sample index) pairs never collide.
SEED_STRIDE = 1_000_003
_GENERATORS: ContextVar[list[torch.Generator] | None] = ContextVar("per_sample_generators", default=None)


@contextlib.contextmanager
def per_sample_streams(run_seed: int, indices: Tensor) -> Iterator[None]:
    """Within this block, the batch of samples `indices` draws through this module from one generator each."""
    device = indices.device
    generators = [torch.Generator(device=device).manual_seed(run_seed * SEED_STRIDE + i) for i in indices.tolist()]
    token = _GENERATORS.set(generators)
    try:
        yield
    finally:
        _GENERATORS.reset(token)


def seed_batch(run_seed: int, first_index: int) -> None:
    """Seed torch for the batch that starts at sample `first_index`: the same draws whatever the batch order."""
    torch.manual_seed(run_seed * SEED_STRIDE + first_index)


def _draw(shape: tuple[int, ...], rows_per_sample: int, sample: Callable[..., Tensor]) -> Tensor:
    """`sample(shape, generator)` for the whole batch: outside a `per_sample_streams` block one draw from torch's
    generator; inside it, `rows_per_sample` consecutive rows from each sample's own generator."""
    generators = _GENERATORS.get()
    if generators is None:
        return sample(shape, None)
    if shape[0] != len(generators) * rows_per_sample:
        raise ValueError(
            f"a per-sample draw of {shape[0]} rows for {len(generators)} samples × {rows_per_sample} rows each: "
            f"the caller's rows_per_sample does not match its layout"
        )
    return torch.cat([sample((rows_per_sample, *shape[1:]), generator) for generator in generators])


def uniform(like: Tensor, rows_per_sample: int = 1) -> Tensor:
    """U[0,1) shaped like `like`."""
    return _draw(
        tuple(like.shape),
        rows_per_sample,
        lambda shape, generator: torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype),
    )


def normal(like: Tensor, rows_per_sample: int = 1) -> Tensor:
    """N(0,1) shaped like `like`."""
    return _draw(
        tuple(like.shape),
        rows_per_sample,
        lambda shape, generator: torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype),
    )


def integers(low: int, high: int, like: Tensor, rows_per_sample: int = 1) -> Tensor:
    """Integers in [low, high) shaped like `like`."""
    return _draw(
        tuple(like.shape),
        rows_per_sample,
        lambda shape, generator: torch.randint(low, high, shape, generator=generator, device=like.device),
    )


def stream_states() -> list[Tensor] | None:
    """The per-sample generators' states inside a `per_sample_streams` block (None outside one)."""
    generators = _GENERATORS.get()
    return None if generators is None else [generator.get_state() for generator in generators]


def restore_stream_states(states: list[Tensor] | None) -> None:
    """Put the block's generators where `stream_states` found them (a cached step is skipped, not re-drawn)."""
    generators = _GENERATORS.get()
    if generators is not None and states is not None:
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
