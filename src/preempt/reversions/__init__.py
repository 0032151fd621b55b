"""Reversion attacks (`reversion=<name>`): the man in the middle's guess of the original image from the protected
one, made before the attack (protect → revert → attack → score); and the protocol's verdict on them. The
contract is `preempt.parts.Reversion`."""
