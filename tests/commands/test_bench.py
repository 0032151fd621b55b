"""`python -m preempt.commands.bench` end to end on the digits zoo, at a size that takes seconds: every section is
measured and written (the figures themselves are the benchmark's job, not a test's)."""

import json
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from preempt.commands.bench import bench, floor_seconds_per_image, format_report, image_levels_apart
from preempt.parts import ConfigError

TINY = [
    "dataset=digits",
    "classifier=digits_cnn",
    "backbone=digits_cnn_at",
    "victim=digits_lenet_at",
    "bench.batch_sizes=[1,4]",
    "batch_size=4",
    "bench.chunk_sizes=[8,32]",
    "bench.floor_copies=32",
    "bench.repeats=1",
    "bench.min_images=4",
    "bench.n_samples=[2,4]",
    "bench.scaling_batch=4",
    "bench.options=[channels_last,bf16]",
    "bench.options_batch=4",
    "bench.compare_images=2",
    "bench.compare.bilevel.iterations=2",
    "bench.compare.bilevel_fp.backward_steps=2",
    "bench.compare.fast_preemption_pgd.iterations=2",
    "bench.loop_images=8",
    "attack.steps=2",
]


def test_bench_measures_every_section_and_writes_json_table_and_plot(zoo_dir: Path, digits_models, tmp_path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=[f"paths.cache_dir={zoo_dir}", f"paths.output_dir={tmp_path}", *TINY])
    report = bench(cfg)

    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "bench.md").read_text().strip() == format_report(report)
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert report["passes_per_image"] == 20 * 3  # N·(T→+T←), the paper's settings
    assert [row["batch_size"] for row in report["by_batch"]] == [1, 4]
    for row in report["by_batch"]:
        assert row["seconds_per_image"] > 0 and row["overhead"] > 0 and row["peak_memory_mib"] > 0
        assert row["floor_chunk"] <= 20 * row["batch_size"]
        assert row["own_chunk_overhead"] > 0 and row["copies_per_pass"] <= 20 * row["batch_size"]
    assert report["default_batch"]["batch_size"] == 4
    # The defense's chunk was timed (the config's chunk_timings file) and the floor timed it too.
    assert report["copies_per_pass"] == report["chunk_choice"]["copies_per_pass"]
    assert str(report["copies_per_pass"]) in report["floor_seconds_per_copy"]
    assert "the fastest of the memory bound" in format_report(report)
    assert [row["n_samples"] for row in report["by_n"]] == [2, 4]
    assert [row["option"] for row in report["options"]] == ["fp32", "channels_last", "bf16"]
    assert report["options"][1]["max_levels"] <= 1  # channels_last: the same protection
    fp32 = report["options"][0]
    assert fp32["backbone_loss"] < fp32["backbone_loss_clean"]  # the protection lowers the backbone's loss
    assert report["options"][2]["backbone_loss_vs_fp32"] == pytest.approx(1, abs=0.05)  # bf16: the same effect
    assert report["options"][2]["effect_vs_fp32"] == pytest.approx(1, abs=0.05)
    assert [row["defense"] for row in report["comparisons"]] == [
        "fast_preemption",
        "bilevel",
        "bilevel_fp",
        "fast_preemption_pgd",
    ]
    assert set(report["loop"]["seconds_per_image"]) == {"label", "defense", "attack", "score"}
    assert report["loop"]["slowest_stage"] in report["loop"]["seconds_per_image"]


def test_a_comparison_outside_the_project_is_refused_before_any_model_is_built(tmp_path, no_model_building) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=[f"paths.output_dir={tmp_path}", "bench.compare.bilevel._target_=shutil.copy"])
    with pytest.raises(ConfigError, match=r"bench\.compare\.bilevel\._target_=shutil\.copy: shutil is not a trusted"):
        bench(cfg)


def test_the_floor_uses_only_chunks_a_batch_can_fill() -> None:
    curve = {16: 2.0, 64: 1.0, 1024: 0.5}
    assert floor_seconds_per_image(curve, passes=60, copies=20) == (120.0, 16)
    assert floor_seconds_per_image(curve, passes=60, copies=2560) == (30.0, 1024)


def test_levels_apart_counts_8bit_levels() -> None:
    import torch

    a = torch.zeros(1, 1, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0] = 2 / 255
    levels = image_levels_apart(a, b)
    assert levels["max_levels"] == pytest.approx(2)
    assert levels["fraction_over_one_level"] == 0.25
