"""Figures are drawn from results.json files: the attack-round curves (the second paper's Figure 3) and the
defense's learning-step curves (the Fast Preemption paper's Figure 8)."""

from pathlib import Path

import pytest
from PIL import Image

from preempt.commands.figures import main
from preempt.figures import plot_steps, round_curves
from preempt.files import write_json_atomically
from preempt.results.record import build_results

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.parts.NoDefense"},
    "threat": {"eps": 0.3, "norm": "normalized_L2", "oblivious": False},
}


def _write_run(folder: Path, receiver: str, eot_samples: int, seed: int) -> None:
    config = {
        **CONFIG,
        "seed": seed,
        "receiver_defense": {"_target_": f"preempt.receiver_defenses.{receiver.lower()}.{receiver}"},
        "attack": {"_target_": "preempt.attacks.adaptive.AdaptiveAttack", "eot_samples": eot_samples, "targeted": True},
    }
    rounds = {"round": [1, 2, 3], "accuracy": [0.8, 0.6 - seed / 10, 0.5], "attack_success_rate": [0.1, 0.3, 0.4]}
    results = build_results(config, {}, n_samples=10, wall_seconds=1.0, rounds=rounds)
    write_json_atomically(results, folder / f"{receiver}_{eot_samples}_{seed}" / "results.json")


def test_round_figure_has_a_panel_row_per_attack_and_a_line_per_defense(tmp_path: Path) -> None:
    for receiver in ("DCTDistortion", "RandomCrop"):
        for eot_samples in (1, 30):
            for seed in (0, 1):
                _write_run(tmp_path / "runs", receiver, eot_samples, seed)
    from preempt.results.store import load_results

    grouped = round_curves(load_results(sorted((tmp_path / "runs").rglob("results.json"))))
    assert set(grouped) == {"BPDA targeted", "BPDA+EOT targeted"}
    assert {name: len(records) for name, records in grouped["BPDA targeted"].items()} == {
        "DCTDistortion": 2,
        "RandomCrop": 2,
    }
    out = tmp_path / "figure3.png"
    main(["rounds", str(tmp_path / "runs"), "--out", str(out)])
    with Image.open(out) as image:
        assert image.format == "PNG" and image.height > image.width / 2  # two panel rows


def test_step_figure_has_a_panel_per_accuracy_and_a_curve_per_row(tmp_path: Path) -> None:
    def run(seed: int, fall: float | None) -> dict:
        config = {**CONFIG, "seed": seed, "receiver_defense": CONFIG["defense"], "attack": CONFIG["defense"]}
        steps = {"step": [10, 20, 30], "protected_clean_acc": [0.9, 0.95, 0.97], "robust_acc": [0.5, 0.7, 0.8]}
        if fall is not None:
            steps["robust_acc"][1] -= fall
        return build_results(config, {}, n_samples=10, wall_seconds=1.0, steps=None if fall is None else steps)

    rows = {"F10-B20": [run(0, 0.0), run(1, 0.1)], "F0-B30": [run(0, 0.2)], "no curve": [run(0, None)]}
    out = plot_steps(rows, tmp_path / "figure8.png", "Figure 8")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 1.5 * image.height  # two panels side by side
    with pytest.raises(SystemExit, match="record_every"):
        plot_steps({"no curve": rows["no curve"]}, tmp_path / "none.png")


def test_the_protected_picture_draws_a_file_too_small_for_ssim(tmp_path: Path) -> None:
    from helpers.manifests import manifest_line, write_manifest

    from preempt.figures import plot_protected

    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir(), target.mkdir()
    Image.new("L", (4, 4), 100).save(source / "tiny.png")
    Image.new("L", (4, 4), 104).save(target / "tiny.png")
    measured = {"label": 1, "loss_before": 0.5, "loss_after": 0.1, "linf_levels": 4, "ssim": None}
    write_manifest(target, [manifest_line("tiny.png", source, target) | measured])
    with Image.open(plot_protected(target, tmp_path / "tiny_figure.png")) as figure:
        assert figure.width > 0
