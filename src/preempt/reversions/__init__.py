"""Reversion attacks (`reversion=<name>`): the man in the middle's guess of the original image from the protected
one, made before the attack (protect → revert → attack → score); and the protocol's verdict on them."""

from preempt.reversions.base import NoReversion, Reversion, revert
from preempt.reversions.preemptive_reversion import PreemptiveReversion, reverse_secondary_defense

__all__ = ["NoReversion", "PreemptiveReversion", "Reversion", "reverse_secondary_defense", "revert"]
