"""Sweeps fanned out: the Slurm and local launcher presets (conf/hydra/launcher/) and the W&B sweep files."""

import itertools
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import joblib
import pytest
import submitit
from conftest import CONF_DIR, ROOT, main_command
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig
from submitit.slurm.slurm import SlurmExecutor
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

from preempt.results.tables import COLUMNS
from preempt.validation import validate_config

WANDB_SWEEPS = sorted((ROOT / "sweeps" / "wandb").glob("*.yaml"))


def compose_with_hydra(sweep_dir: Path, *overrides: str) -> DictConfig:
    """main.yaml with Hydra's own config (where the launcher lives), sweeping into `sweep_dir`."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="main", overrides=[f"hydra.sweep.dir={sweep_dir}", *overrides], return_hydra_config=True
        )


@pytest.mark.parametrize(("trainer", "devices"), [("default", 1), ("gpu", 1), ("ddp", 2)])
def test_slurm_asks_for_one_task_per_device_of_the_trainer(trainer: str, devices: int, tmp_path: Path) -> None:
    launcher = compose_with_hydra(tmp_path, "hydra/launcher=slurm", f"trainer={trainer}").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (devices, devices, 1)
    assert launcher.partition is None and launcher.setup is None
    assert launcher.submitit_folder == f"{tmp_path}/.submitit/%j"


def test_slurm_follows_trainer_devices_overrides_and_takes_its_own(tmp_path: Path) -> None:
    launcher = compose_with_hydra(
        tmp_path, "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "hydra.launcher.partition=a100"
    ).hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition) == (4, 4, "a100")
    cpu = compose_with_hydra(tmp_path, "hydra/launcher=slurm", "trainer=cpu", "hydra.launcher.gpus_per_node=0")
    assert (cpu.hydra.launcher.gpus_per_node, cpu.hydra.launcher.tasks_per_node) == (0, 1)


def test_the_launcher_is_read_once_per_sweep_from_the_unswept_trainer(tmp_path: Path) -> None:
    """Hydra builds the launcher from the sweep's config without its swept overrides: a sweep over trainers gets
    the default trainer's resources for every job (slurm.yaml says to run one sweep per trainer)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        overrides = ["hydra/launcher=slurm", "trainer=ddp,gpu"]
        master = loader.load_configuration(config_name="main", overrides=overrides, run_mode=RunMode.MULTIRUN)
    assert master.hydra.launcher.gpus_per_node == 1


def test_slurm_launcher_hands_submitit_the_resolved_resources(tmp_path: Path, monkeypatch) -> None:
    """The plugin as Hydra instantiates it, launching two jobs into a recording stand-in for submitit: the real
    AutoExecutor checks every parameter name and renders the sbatch script; nothing is submitted."""
    calls: dict = {}

    class RecordingExecutor(submitit.AutoExecutor):
        def __init__(self, **kwargs) -> None:
            calls["init"] = kwargs
            super().__init__(**kwargs)

        def update_parameters(self, **kwargs) -> None:
            calls["parameters"] = kwargs
            super().update_parameters(**kwargs)

        def map_array(self, fn, *arguments):
            calls["jobs"] = list(zip(*arguments, strict=True))
            calls["sbatch"] = self._executor._make_submission_file_text("<command>", "<uid>")
            return [SimpleNamespace(results=lambda job=job: [job[2]]) for job in calls["jobs"]]

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if `srun` were installed
    monkeypatch.setattr(submitit, "AutoExecutor", RecordingExecutor)
    config = compose_with_hydra(tmp_path, "hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu")
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=None, callbacks=None), task_function=print, config=config
    )
    assert type(launcher).__name__ == "SlurmLauncher"

    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == [0, 1]
    assert calls["init"] == {"cluster": "slurm", "folder": f"{tmp_path}/.submitit/%j", "slurm_max_num_timeout": 0}
    parameters = calls["parameters"]
    assert (parameters["gpus_per_node"], parameters["tasks_per_node"], parameters["nodes"]) == (2, 2, 1)
    assert (parameters["timeout_min"], parameters["cpus_per_task"], parameters["mem_gb"]) == (720, 6, 64)
    assert parameters["slurm_partition"] == "gpu" and parameters["slurm_setup"] is None
    assert [(job[0], job[2]) for job in calls["jobs"]] == [(["seed=0"], 0), (["seed=1"], 1)]
    for line in ("--gpus-per-node=2", "--ntasks-per-node=2", "--cpus-per-task=6", "--mem=64GB", "--time=720"):
        assert f"#SBATCH {line}\n" in calls["sbatch"]
    assert "#SBATCH --partition=gpu\n" in calls["sbatch"]
    assert f"#SBATCH --output={tmp_path}/.submitit/%j/%j_0_log.out\n" in calls["sbatch"]


def test_local_launcher_runs_two_jobs_at_a_time(tmp_path: Path) -> None:
    launcher = compose_with_hydra(tmp_path, "hydra/launcher=local").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2


@pytest.mark.slow
def test_a_local_sweep_runs_both_jobs_side_by_side(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    """Two jobs through joblib's worker processes, each with its share of the cores (joblib sets the thread
    variables torch reads in its workers, unless the user set them)."""
    command = main_command(
        tmp_path / "unused", zoo_dir, "hydra/launcher=local", "defense=none", "attack=none", "dataset.n_samples=8",
        "logger=none", "seed=0,1", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    command.insert(2, "-m")
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in done.stdout + done.stderr
    results = [json.loads((tmp_path / job / "results.json").read_text()) for job in ("0", "1")]
    assert [result["run"]["seed"] for result in results] == [0, 1]
    threads = max(1, joblib.cpu_count() // 2)
    assert all(result["run"]["device"].endswith(f", {threads} threads)") for result in results)


def grid_points(sweep: dict) -> list[dict]:
    """Every run of a W&B grid: the product of the `values` lists, with the fixed `value`s."""
    names = list(sweep["parameters"])
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in sweep["parameters"].values()]
    return [dict(zip(names, point, strict=True)) for point in itertools.product(*choices)]


def agent_command(sweep: dict, point: dict) -> list[str]:
    """The command line `wandb agent` runs for one grid point (its substitution, with W&B's own argument forms)."""
    variables = create_sweep_command_args({"args": {name: {"value": value} for name, value in point.items()}})
    variables |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [sweep["program"]]}
    command = []
    for part in sweep["command"]:
        command += variables[part[2:-1]] if part.startswith("${") else [part]
    return command


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda path: path.stem)
def test_every_wandb_sweep_point_is_a_valid_run_of_main(path: Path, compose_config) -> None:
    """Each grid point as the agent renders it composes, with the runs reporting online to the sweep's metric."""
    sweep = load_sweep_config(str(path))
    assert sweep["program"] == "src/main.py" and sweep["method"] == "grid"
    assert sweep["metric"] == {"name": "test/robust_acc", "goal": "maximize"}
    assert sweep["metric"]["name"] in {key for key, _, _ in COLUMNS}
    assert sweep["command"][:3] == ["${env}", "${interpreter}", "${program}"]
    assert sweep["command"][-1] == "${args_no_hyphens}" and "logger=wandb" in sweep["command"]
    for point in grid_points(sweep):
        command = agent_command(sweep, point)
        assert command[:3] == ["/usr/bin/env", "python", "src/main.py"]
        config = compose_config(*command[3:])
        validate_config(config)  # refuses what cannot run; F0-B1's eta·(T→+T←) ≤ 1 warns, as in Figure 9's grid
        assert config.logger.wandb.offline is False
