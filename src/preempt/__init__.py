"""Preemptive adversarial defense toolbox: protect -> attack -> score."""
