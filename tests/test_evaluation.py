"""The test loop: 8-bit transmission of protected images, scored both ways."""

import json
from pathlib import Path

import pytest
import torch

from preempt import run
from preempt.evaluation.module import PreemptiveEvaluation, to_8bit


def test_8bit_rounding_lands_on_the_png_grid_within_half_a_level() -> None:
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    sent = to_8bit(x)
    assert torch.equal(sent * 255, torch.round(sent * 255))
    assert (sent - x).abs().max() <= 0.5 / 255 + 1e-12
    assert sent.min() >= 0 and sent.max() <= 1


@pytest.mark.parametrize("transmit_8bit", [True, False])
def test_transmission_sends_8bit_images_and_reports_accuracy_both_ways(
    transmit_8bit: bool, compose_config, digits_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    attacked: list[torch.Tensor] = []
    original = PreemptiveEvaluation.run_attack

    def recording(self, x, y):
        attacked.append(x.clone())
        return original(self, x, y)

    monkeypatch.setattr(PreemptiveEvaluation, "run_attack", recording)
    cfg = compose_config(f"transmit_8bit={transmit_8bit}", "attack=pgd", "dataset.n_samples=16", "logger=none")
    results = run.evaluate(cfg)
    metrics = results["metrics"]

    on_grid = [torch.equal(x * 255, torch.round(x * 255)) for x in attacked]
    if transmit_8bit:
        assert on_grid == [True, False]  # the sent (8-bit) images, then the unrounded protection
        assert {"test/robust_acc_float", "test/protected_clean_acc_float"} <= metrics.keys()
        assert metrics["test/linf"] <= 0.2 + 0.5 / 255 + 1e-6  # rounding may add half a level
    else:
        assert on_grid == [False]
        assert "test/robust_acc_float" not in metrics
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["config"]["transmit_8bit"] is transmit_8bit and saved["metrics"] == metrics
