"""`python -m preempt.commands.gpu_check`: one line and exit 0 without CUDA; its rehearsal on the CPU runs every
section at tiny sizes (so the script a lent GPU machine runs once cannot fail on its own code); a failing or
overrunning section is recorded and the others still run; rehearsal numbers never reach the stable copy."""

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, run_main
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from preempt.commands import gpu_check as command
from preempt.models.paper_networks import PAPER_NETWORKS

REHEARSAL = ["gpu_check.rehearse_on_cpu=true", "gpu_check.options=[bf16,cuda_graphs]"]  # compile: 40 s on this CPU


def compose_check(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "gpu_check",
            overrides=[
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"paths.output_dir={tmp_path / 'run'}",
                f"gpu_check.out_dir={tmp_path / 'stable'}",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One rehearsal for the module's tests, with CUDA hidden in this process as the children hide it."""
    tmp_path = tmp_path_factory.mktemp("gpu_check")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        report = command.gpu_check(compose_check(tmp_path, *REHEARSAL))
    return report, tmp_path


def test_without_cuda_it_prints_one_line_and_exits_0_before_anything_is_built(
    tmp_path: Path, monkeypatch, capfd, no_model_building
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    started = time.perf_counter()
    status = run_main([f"hydra.run.dir={tmp_path / 'run'}"], command=command.main)
    assert status == 0 and time.perf_counter() - started < 10
    assert capfd.readouterr().out.splitlines() == [command.SKIPPED]
    assert not (tmp_path / "run").exists()  # Hydra never started: no run folder


@pytest.mark.slow
def test_the_rehearsal_runs_every_section_on_the_cpu_and_writes_both_files(rehearsal) -> None:
    report, tmp_path = rehearsal
    run = tmp_path / "run"
    assert report["rehearsal"] is True and report["device"].startswith("cpu") and report["date"]
    assert {name: section["error"] for name, section in report["sections"].items()} == dict.fromkeys(
        ["fast_preemption", "end_to_end", "networks", "protect"]
    )
    assert report["passed"] and all(section["wall_seconds"] > 0 for section in report["sections"].values())
    assert json.loads((run / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
    assert (run / "gpu_check.md").read_text().strip() == command.format_report(report)

    fast = report["sections"]["fast_preemption"]
    assert fast["passes_per_image"] == 2 * 3 and fast["seconds_per_image"] > 0 and fast["overhead"] > 0
    assert fast["times_target"] == pytest.approx(fast["ms_per_image"] / 2.0)
    bf16, graphs = fast["options"]
    assert (
        bf16["option"] == "bf16" and bf16["within_tolerance"] and bf16["effect_vs_fp32"] == pytest.approx(1, abs=0.05)
    )
    assert graphs["option"] == "cuda_graphs" and "CUDA only" in graphs["skipped"]

    end_to_end = report["sections"]["end_to_end"]
    assert all(run["returncode"] == 0 for run in end_to_end["runs"].values())
    assert [end_to_end["runs"][f"ddp_rank_{rank}"]["joined"] for rank in (0, 1)] == [True, True]
    assert {name: c["within_tolerance"] for name, c in end_to_end["comparisons"].items()} == {
        "device_vs_cpu": True,
        "ddp_vs_cpu": True,
    }
    ddp = json.loads((run / "end_to_end" / "ddp" / "results.json").read_text())
    assert ddp["config"]["trainer"]["num_nodes"] == 2 and ddp["run"]["n_samples"] == 4

    # What the cost model reads.
    assert set(report["networks"]) == {key for key, network in PAPER_NETWORKS.items() if network.parameters_m < 20}
    for timing in report["networks"].values():
        assert timing["forward_backward_s_per_img"] > timing["forward_s_per_img"] > 0
        assert timing["batch_size"] == 2 and timing["error"] is None

    protect = report["sections"]["protect"]
    assert protect["files"] == protect["files_protected"] == 2 and protect["verify_returncode"] == 0


@pytest.mark.slow
def test_a_rehearsal_never_writes_the_stable_copy(rehearsal) -> None:
    _, tmp_path = rehearsal
    assert not (tmp_path / "stable").exists()


def test_a_failing_or_overrunning_section_is_recorded_the_others_run_and_the_exit_is_1(
    tmp_path: Path, monkeypatch, capfd
) -> None:
    ran = []

    def fails(check, record) -> None:
        raise RuntimeError("injected failure\nsecond line")

    def overruns(check, record) -> None:
        time.sleep(10)

    def runs(check, record) -> None:
        ran.append(check.device)

    monkeypatch.setitem(command.SECTIONS, "fast_preemption", fails)
    monkeypatch.setitem(command.SECTIONS, "end_to_end", overruns)
    monkeypatch.setitem(command.SECTIONS, "networks", runs)
    monkeypatch.setitem(command.SECTIONS, "protect", runs)
    folders = [f"hydra.run.dir={tmp_path / 'run'}", f"gpu_check.out_dir={tmp_path / 'stable'}"]
    status = run_main([*folders, *REHEARSAL, "gpu_check.rehearsal.seconds.end_to_end=0.5"], command=command.main)
    assert status == 1 and ran == ["cpu", "cpu"]
    report = json.loads((tmp_path / "run" / "gpu_check.json").read_text())
    sections = report["sections"]
    assert sections["fast_preemption"]["error"] == "RuntimeError: injected failure"
    assert sections["end_to_end"]["error"] == "SectionTimeout: the section's budget of 0.5 s ran out"
    assert sections["end_to_end"]["wall_seconds"] < 5
    assert [sections[name]["passed"] for name in sections] == [False, False, True, True] and not report["passed"]
    assert "gpu-check: fast_preemption: " in capfd.readouterr().out
    assert not (tmp_path / "stable").exists()


def test_on_a_gpu_the_measurement_is_also_copied_to_the_stable_path(tmp_path: Path, monkeypatch) -> None:
    """Sections stubbed and CUDA faked: what is written where, not what is measured."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("preempt.speed.device_name", lambda device: "NVIDIA H100 (stand-in)")
    for name in command.SECTIONS:
        monkeypatch.setitem(command.SECTIONS, name, lambda check, record: None)
    report = command.gpu_check(compose_check(tmp_path))
    assert report["rehearsal"] is False and report["passed"] and report["device"] == "NVIDIA H100 (stand-in)"
    for folder in (tmp_path / "run", tmp_path / "stable"):
        assert json.loads((folder / "gpu_check.json").read_text()) == json.loads(json.dumps(report))
        assert (folder / "gpu_check.md").is_file()


def test_device_metrics_are_compared_within_an_image_for_accuracies_and_exactly_for_counts() -> None:
    settings = OmegaConf.create({"acc_tolerance_images": 1, "float_tolerance": 0.001})
    reference = {
        "run": {"n_samples": 20},
        "metrics": {"test/robust_acc": 0.5, "test/ssim": 0.9, "test/check_dynamic": 0.0, "test/x_seconds_per_image": 1},
    }

    def compared(**metrics: float) -> list[str]:
        results = {"metrics": {**reference["metrics"], **metrics}}
        return command.compare_metrics(results, reference, settings)["outside"]

    assert compared(**{"test/robust_acc": 0.55, "test/ssim": 0.9009, "test/x_seconds_per_image": 9}) == []
    assert compared(**{"test/robust_acc": 0.6}) == ["test/robust_acc"]  # two images
    assert compared(**{"test/check_dynamic": 1.0, "test/ssim": 0.902}) == ["test/ssim", "test/check_dynamic"]
