"""Man-in-the-middle attacks on the victim: `attack(model=victim)(x, y) -> x_adv`, one small class each."""

from preempt.attacks.base import Attack, NoAttack

__all__ = ["Attack", "NoAttack"]
