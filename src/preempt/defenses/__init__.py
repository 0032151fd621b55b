"""Sender-side defenses: `defense(backbone=...)(x, labels) -> protected x`; the contract is `preempt.parts.Defense`."""
