"""The cost model against real runs: the passes it counts from a config are the passes a run makes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import TEST_SCORE_MODEL
from omegaconf import OmegaConf

from preempt.commands.evaluate import evaluate
from preempt.config import composer
from preempt.fingerprint import run_fingerprint
from preempt.models.pixel_classifier import PixelClassifier
from preempt.reproduce.cost import (
    BACKWARD,
    FORWARD,
    Passes,
    PassTimes,
    PricedRun,
    format_costs,
    hours_text,
    measured_times,
    pass_times,
    price,
    run_passes,
    table_costs,
)
from preempt.reproduce.runs import table_cells
from preempt.reproduce.tables import load_tables
from preempt.score_models.base import NoisePredictor


def counted_passes(cfg) -> Counter:
    """(network, 'forward' | 'forward_backward') -> images through it, over one in-process run."""
    counts: Counter = Counter()

    def count(module, inputs, output) -> None:
        if isinstance(module, PixelClassifier):
            name = module.name
        elif isinstance(module, NoisePredictor):
            name = "digits_score_model"
        else:
            return
        x = inputs[0]
        # A checkpointed forward run again inside the backward pass is one more forward pass.
        recomputed = torch._C._current_graph_task_id() != -1
        gradient = torch.is_grad_enabled() and x.requires_grad and not recomputed
        counts[name, "forward_backward" if gradient else "forward"] += len(x)

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        evaluate(cfg)
    finally:
        handle.remove()
    return counts


def in_folder(cfg, folder: Path):
    """The config writing its results into `folder` (each run needs its own)."""
    cfg.paths.output_dir = str(folder)
    return cfg


def predicted(cfg, images: int) -> Counter:
    config = OmegaConf.to_container(cfg, resolve=True)
    protection, rest = run_passes(config)
    passes = Passes().merge(protection, images).merge(rest, images)
    found: Counter = Counter()
    for key, value in passes.counts.items():
        for kind, index in (("forward", FORWARD), ("forward_backward", BACKWARD)):
            if value[index]:
                found[key, kind] = round(value[index])
    return found


SETTINGS = {
    "fast_preemption_pgd_8bit": ["defense=fast_preemption", "attack=pgd", "attack.steps=3", "transmit_8bit=true"],
    "bilevel_ifgsm": [
        "defense=bilevel", "defense.iterations=3", "defense.inner_steps=2", "attack=ifgsm", "attack.steps=2"
    ],
    "preemptive_reversion": ["defense=fast_preemption", "reversion=preemptive_reversion", "attack=none"],
    "black_box_reversion_pgd": [
        "defense=fast_preemption", "defense.n_samples=2", "reversion=preemptive_reversion_black_box", "attack=pgd",
        "attack.steps=2",
    ],
    "bpda_eot_on_dct": [
        "defense=none", "receiver_defense=dct_distortion", "attack=bpda_eot", "attack.steps=3",
        "attack.eot_samples=2", "attack.early_stop=false", "attack.record_every=null",
    ],
    # SHIELD draws its JPEG qualities anew on every call: EOT averages its draws (the class says so, not a list).
    "bpda_eot_on_shield": [
        "defense=none", "receiver_defense=shield", "attack=bpda_eot", "attack.steps=2", "attack.eot_samples=3",
        "attack.early_stop=false", "attack.record_every=null",
    ],
    "recorded_steps_and_rounds": [
        "defense=fast_preemption", "defense.record_every=1", "attack=pgd", "attack.steps=2", "attack.record_every=1",
    ],
    "diffpure_receiver": [
        "defense=none", "receiver_defense=diffpure", "receiver_defense.t_star=0.004", "attack=fgsm", *TEST_SCORE_MODEL
    ],
}  # fmt: skip


def passes_of_8_more_images(settings: list[str], compose_config, tmp_path: Path) -> Counter:
    """The passes a run of 16 digits makes more than a run of 8: what a run does once (its first batch's sanity
    checks, its chunk timing) cancels."""
    settings = [*settings, "batch_size=8", "logger=none", "print_config=false", "speed.chunk_timings=null"]
    small = in_folder(compose_config(*settings, "dataset.n_samples=8"), tmp_path / "small")
    large = in_folder(compose_config(*settings, "dataset.n_samples=16"), tmp_path / "large")
    made = counted_passes(large)
    made.subtract(counted_passes(small))
    return Counter({key: value for key, value in made.items() if value})


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_counted_passes_are_the_passes_a_run_makes(
    name: str, compose_config, digits_models, digits_score_model, tmp_path: Path
) -> None:
    """Per image, exactly."""
    made = passes_of_8_more_images(SETTINGS[name], compose_config, tmp_path)
    assert made == predicted(compose_config(*SETTINGS[name], "dataset.n_samples=16"), 8)


@pytest.mark.parametrize(
    "settings",
    [
        ["attack=autoattack", "attack.attacks=[apgd-ce,square]"],
        ["attack=pgd", "attack.steps=4", "attack.early_stop=true"],
        ["attack=cw", "attack.binary_search_steps=2", "attack.steps=10", "threat.norm=L2", "threat.eps=1.0"],
        ["attack=lbfgs", "attack.search_steps=2", "attack.max_iterations=5", "threat.norm=L2", "threat.eps=1.0"],
    ],
    ids=["autoattack", "early_stopping_pgd", "cw", "lbfgs"],
)
def test_attacks_that_stop_early_are_counted_as_if_no_image_stopped(
    settings: list[str], compose_config, digits_models, tmp_path: Path
) -> None:
    made = passes_of_8_more_images([*settings, "defense=none"], compose_config, tmp_path)
    bound = predicted(compose_config(*settings, "defense=none", "dataset.n_samples=16"), 8)
    # L-BFGS-B's evaluations per iteration vary with its line search: its count is an estimate.
    slack = 1.25 if "attack=lbfgs" in settings else 1.0
    assert set(made) <= set(bound) and all(made[key] <= slack * bound[key] for key in made), (made, bound)


def test_a_shared_protection_and_a_shared_run_are_paid_once(compose_config) -> None:
    """Table IV's three attacks reuse one protection per seed; a run two tables list is run once."""
    times = PassTimes({"digits_cnn_at": (1.0, 3.0), "digits_cnn_std": (1.0, 3.0), "digits_lenet_at": (1.0, 3.0)}, {})
    times.sources.update(dict.fromkeys(times.seconds, "test"))

    def config(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_config("dataset.n_samples=10", *overrides), resolve=True)

    pgd, fgsm = config("attack=pgd", "attack.steps=1"), config("attack=fgsm")
    (alone,) = table_costs([PricedRun("a", "row/pgd", pgd)], times)
    runs = [PricedRun("a", "row/pgd", pgd), PricedRun("a", "row/fgsm", fgsm), PricedRun("b", "x/pgd", pgd, True)]
    both = table_costs(runs, times)
    protection = 20 * 3 * 10 * 3.0 / 3600  # N 20, 3 steps, 10 images, 3 s per forward+backward
    assert both[0].hours == pytest.approx(alone.hours + (alone.hours - protection) + 0, rel=0.02)
    assert both[1].runs == 0 and both[1].hours == 0  # b's run is a's: paid by a
    assert both[0].hours_to_run == both[0].hours
    own = {**pgd, "defense": {**pgd["defense"], "_target_": "lab.defenses.Mine"}}
    (mine,) = table_costs([PricedRun("c", "row/pgd", own)], times)  # a part of your own: named, not priced
    assert mine.hours == 0 and mine.unpriced == {"row/pgd (no pass count for defense lab.defenses.Mine)"}
    # A receiver-side transform of anyone else's is not imported to ask whether it is random: no count either.
    foreign = {**pgd, "receiver_defense": {"_target_": "lab.transforms.Blur"}}
    (theirs,) = table_costs([PricedRun("d", "row/pgd", foreign)], times)
    assert theirs.unpriced == {"row/pgd (no pass count for transform lab.transforms.Blur)"}
    table = format_costs(both, times, "one H100")
    assert "| a | 2 |" in table and "**total**" in table and "digits_cnn_at: 1e+03 ms, 3e+03 ms — test" in table


def test_measured_times_replace_the_estimates_and_rehearsals_are_not_measurements(tmp_path: Path) -> None:
    flops = {
        "Peng2023Robust": {"forward_gflops_per_image": 100.0},
        "guided_imagenet256": {"forward_gflops_per_image": 1e3},
    }
    check = {
        "device": "NVIDIA H100 80GB HBM3",
        "date": "2026-12-07",
        "rehearsal": False,
        "networks": {
            "Peng2023Robust": {"forward_s_per_img": 0.002, "forward_backward_s_per_img": 0.005, "error": None}
        },
    }
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(check))
    times = pass_times(path, flops)
    assert times.of("Peng2023Robust") == (0.002, 0.005) and "measured on NVIDIA H100" in times.sources["Peng2023Robust"]
    assert times.of("guided_imagenet256") == pytest.approx((5e-3, 15e-3))  # 1 TFLOP at 200 TFLOP/s, fp16 trunk
    assert "estimate" in times.sources["guided_imagenet256"]
    assert measured_times({**check, "rehearsal": True}).seconds == {}
    seconds, unpriced = price(Passes().add("Peng2023Robust", forward=10, backward=2).add("digits_cnn_at", 1), times)
    assert seconds == pytest.approx(10 * 0.002 + 2 * 0.005) and unpriced == {"digits_cnn_at"}
    # Hours without a price for some passes are a lower bound; with none priced, no figure at all.
    assert hours_text(1234.5, set()) == "1,234.5" and hours_text(2.0, unpriced) == "≥ 2.0"
    assert hours_text(0.0, unpriced) == "—"


def test_cpu_measured_pass_times_predict_the_defense_time_on_the_cpu(compose_config, digits_models) -> None:
    """The hours a plan prints are passes times seconds per pass: with the backbone's forward+backward seconds per
    copy measured here (at the copies per pass the defense uses), the cost model's time for a Fast Preemption
    protection is within a factor of two of the protection timed beside it (the best of 25 interleaved rounds each,
    so that other work on the machine does not decide it)."""
    from hydra.utils import instantiate

    from preempt.attacks.fgsm import loss_gradient
    from preempt.speed import timed

    cfg = compose_config("defense=fast_preemption", "defense.copies_per_pass=160", "speed.chunk_timings=null")
    backbone = digits_models["digits_cnn_at"]
    defense = instantiate(cfg.defense)(backbone=backbone)
    x, labels = torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long)  # N 20 × 8: one pass of 160 per step
    copies, copy_labels = torch.rand(160, 1, 16, 16), torch.zeros(160, dtype=torch.long)
    with torch.enable_grad():
        defense(x, labels)  # warm-up
        rounds = [
            (
                timed(x, lambda: defense(x, labels))[1],
                timed(copies, lambda: loss_gradient(backbone, copies, copy_labels))[1],
            )
            for _ in range(25)
        ]  # interleaved, so that both see the machine as it is
        protection = min(seconds for seconds, _ in rounds) / len(x)
        per_copy = min(seconds for _, seconds in rounds) / 160
    times = PassTimes({"digits_cnn_at": (per_copy / 3, per_copy)}, {"digits_cnn_at": "measured here"})
    passes, _ = run_passes(OmegaConf.to_container(cfg, resolve=True))
    predicted, _ = price(passes, times)
    assert 0.5 < predicted / protection < 2.0, (predicted, protection)


def test_the_runs_priced_are_the_runs_the_plan_would_run() -> None:
    """The configs the cost is counted from (composed before validation, so a missing weight file does not stop
    the estimate) have the fingerprints of the runs the plan lists."""
    with composer():
        table = load_tables(["fast_preemption_table8"])[0]
        composed: list[PricedRun] = []
        cells, _ = table_cells(table, "quick", [], composed)
    assert [run_fingerprint(run.config) for run in composed] == [
        key for cell in cells for key in cell.fingerprints.values()
    ]


def test_the_paper_scale_plan_prints_each_tables_gpu_hours_without_the_weights(tmp_path: Path, capsys) -> None:
    """Offline, without one checkpoint: the plan still prices every run (from FLOP estimates, labelled so), then
    names the missing files and exits 2."""
    from preempt.commands.reproduce import main

    arguments = ["--scale", "paper", "--plan", "--tables", "fast_preemption_table8", "fast_preemption_table1"]
    status = main([*arguments, "--out", str(tmp_path), "--gpu-check", str(tmp_path / "none.json")])
    out, err = capsys.readouterr()
    assert status == 2 and "Peng2023Robust.pt is missing" in err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"fast_preemption_table8", "fast_preemption_table1", "**total**"} <= set(rows)
    hours = float(rows["fast_preemption_table8"].split("|")[5].replace(",", ""))
    assert hours > 0
    assert "- Peng2023Robust:" in out and "estimate:" in out and "GFLOP forward at 100 TFLOP/s" in out
