"""Every entry point of the toolbox: the top layer, built on the libraries below and imported by nothing of them.

`python src/main.py` (evaluate), `preempt protect` / `preempt verify`, `python -m preempt.commands.<name>` for
bench, reproduce, pictures, results, figures, samples, gallery, diffpure_speed and each `learn_*`."""
