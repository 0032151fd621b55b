"""Parts that fail on purpose, importable as `_target_`s by runs the tests start (PYTHONPATH=tests/helpers)."""

import torch.distributed as dist

from preempt.attacks.base import NoAttack


class FailsOnRankOne(NoAttack):
    """The identity on rank 0; raises on rank 1, to test that a DDP run ends with that rank's error."""

    def __call__(self, x, y, target=None, start=None):
        if dist.is_available() and dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")
        return super().__call__(x, y, target, start)
