"""Noise-prediction networks for the VP diffusion DiffPure runs: the project's digits model and the published ones."""
