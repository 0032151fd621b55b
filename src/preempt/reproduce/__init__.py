"""Both papers' tables and figures: presets, sweeps, the runs that fill them, and their rendering."""
