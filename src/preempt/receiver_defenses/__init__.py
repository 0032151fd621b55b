"""Input transforms g placed on the receiver's side (`receiver_defense=<name>`, the victim classifies g(x)) or
on the sender's (`defense=<name>`); each declares `differentiable` and `random` for the attacks."""

from preempt.receiver_defenses.base import ReceiverDefended, receiver_model

__all__ = ["ReceiverDefended", "receiver_model"]
