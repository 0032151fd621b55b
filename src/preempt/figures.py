"""Figures built from the files runs write (results.json, a protect manifest), never from numbers typed in
(`python -m preempt.commands.figures`).

`plot_rounds`: accuracy and attack success rate against attack rounds (the second paper's Figure 3), one panel
row per attack, one line per receiver-side defense, the mean over seeds with their range shaded.
`plot_steps`: the victim's accuracy on the defense's iterate against its learning step, clean and attacked (the
Fast Preemption paper's Figure 8), one panel per accuracy, a curve per table row, mean and range over seeds.
`plot_protected`: the originals, the files `preempt protect` wrote, and their difference amplified so the budget
spans the whole range, with the manifest's figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preempt.protection.manifest import read_manifest
from preempt.protection.photos import read_photo

CURVES = (("accuracy", "ACC"), ("attack_success_rate", "ASR"))
STEP_CURVES = (("protected_clean_acc", "clean accuracy"), ("robust_acc", "robust accuracy"))


def round_curves(results: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """attack -> receiver-side defense -> the `rounds` records of its runs (one per seed)."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for result in results:
        if result.get("rounds"):
            run = result["run"]
            grouped.setdefault(run["attack"], {}).setdefault(run["receiver_defense"], []).append(result["rounds"])
    return grouped


def plot_rounds(results: list[dict], out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = round_curves(results)
    if not grouped:
        raise SystemExit("no results.json with per-round records (run an iterative attack with record_every)")
    defenses = sorted({defense for by_defense in grouped.values() for defense in by_defense})
    colors = {defense: f"C{index}" for index, defense in enumerate(defenses)}  # one color per defense throughout
    figure, axes = plt.subplots(len(grouped), 2, figsize=(10, 3.6 * len(grouped)), squeeze=False)
    for row, (attack, by_defense) in enumerate(sorted(grouped.items())):
        for column, (key, label) in enumerate(CURVES):
            axis = axes[row][column]
            for defense, records in sorted(by_defense.items()):
                draw_spread(axis, records, "round", key, defense, colors[defense])
            axis.set(xlabel="attack round", ylabel=label, ylim=(-0.02, 1.02), title=f"{attack}: {label}")
            axis.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8)
    return saved(figure, out, title)


def draw_spread(axis, records: list[dict], x_key: str, key: str, name: str, color: str) -> None:
    """One curve of a runs' records (one per seed): its mean over the seeds whose x values are the first's, their
    range shaded."""
    xs = records[0][x_key]
    values = np.array([record[key] for record in records if record[x_key] == xs])
    axis.plot(xs, values.mean(axis=0), color=color, label=f"{name} ({len(values)} seeds)")
    axis.fill_between(xs, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)


def saved(figure, out: Path, title: str | None) -> Path:
    """The figure, titled, written to `out` as PNG and closed."""
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def plot_steps(rows: dict[str, list[dict]], out: Path, title: str | None = None) -> Path:
    """`rows`: a curve's name -> its runs' results.json (one per seed); runs without `steps` are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: [result["steps"] for result in found if result.get("steps")] for name, found in rows.items()}
    curves = {name: records for name, records in curves.items() if records}
    if not curves:
        raise SystemExit("no results.json with per-step records (run Fast Preemption with defense.record_every)")
    figure, axes = plt.subplots(1, len(STEP_CURVES), figsize=(5 * len(STEP_CURVES), 3.8), squeeze=False)
    for axis, (key, label) in zip(axes[0], STEP_CURVES, strict=True):
        for index, (name, records) in enumerate(curves.items()):
            draw_spread(axis, records, "step", key, name, f"C{index}")
        axis.set(xlabel="learning step", ylabel=label, ylim=(-0.02, 1.02), title=label)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return saved(figure, out, title)


def plot_protected(output_dir: Path, out: Path, limit: int = 8) -> Path:
    """Columns: the first `limit` protected files; rows: original, protected (as written), and δ = protected −
    original shown as ½ + δ/(2ε) per channel (−ε black, 0 gray, +ε white), re-read from the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [entry for entry in read_manifest(output_dir).values() if entry["status"] == "protected"][:limit]
    if not entries:
        raise SystemExit(f"no protected files recorded in {output_dir}")
    figure, axes = plt.subplots(3, len(entries), figsize=(1.6 * len(entries), 6.2), squeeze=False)
    for column, entry in enumerate(entries):
        original = read_photo(Path(entry["input_dir"]) / entry["input"], entry["channels"]).pixels
        protected = read_photo(output_dir / entry["output"], entry["channels"]).pixels
        budget = entry["settings"]["budget"]
        eps = budget["eps"] if budget and budget["norm"] == "Linf" else float((protected - original).abs().max())
        shown = [original, protected, (0.5 + (protected - original) / (2 * max(eps, 1e-12))).clamp(0, 1)]
        for row, image in enumerate(shown):
            axis = axes[row][column]
            axis.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0][column].set_title(f"label {entry['label']}\nloss {entry['loss_before']:.2g}", fontsize=8)
        axes[1][column].set_title(f"loss {entry['loss_after']:.2g}\nSSIM {ssim_text(entry['ssim'])}", fontsize=8)
        axes[2][column].set_title(f"Linf {entry['linf_levels']}/255", fontsize=8)
    for row, name in enumerate(("original", "protected", "δ, ±ε → 0…1")):
        axes[row][0].set_ylabel(name)
    return saved(figure, out, None)


def ssim_text(ssim: float | None) -> str:
    """A file's SSIM as its picture's title gives it; an image too small for SSIM's window has none."""
    return "not measured" if ssim is None else f"{ssim:.2f}"
