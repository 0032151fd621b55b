"""`python src/main.py` (the evaluation) end to end, as users run it, offline: in this process (as a reproduction's
batch runs it), and in a process of its own where that is the point (DDP, a failing rank, a sweep script)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SCORE_MODEL, TRANSFORMS, main_arguments, main_command, run_main
from omegaconf import open_dict

from preempt.commands.evaluate import evaluate

pytestmark = pytest.mark.slow


def run_process(output_dir: Path, zoo_dir: Path, *overrides: str) -> dict:
    """One run of src/main.py in a process of its own (DDP starts its other process from that command line)."""
    done = subprocess.run(main_command(output_dir, zoo_dir, *overrides), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((output_dir / "results.json").read_text())


def run_job(capfd, output_dir: Path, zoo_dir: Path, *overrides: str) -> tuple[dict, str]:
    """One run of src/main.py: its results.json and what it printed."""
    status = run_main(main_arguments(output_dir, zoo_dir, *overrides))
    printed = capfd.readouterr().out
    assert status == 0, printed[-3000:]
    return json.loads((output_dir / "results.json").read_text()), printed


def test_fast_preemption_beats_no_defense_under_autoattack(tmp_path: Path, zoo_dir: Path, digits_models, capfd) -> None:
    # One multirun, as a sweep runs: job 0 undefended, job 1 protected, each with its own W&B run.
    printed: list[str] = []
    undefended, protected = run_sweep(
        capfd,
        tmp_path,
        zoo_dir,
        "defense=none,fast_preemption",
        "attack=autoattack",
        "dataset.n_samples=48",
        "logger=default",
        printed=printed,
    )
    base, fp = undefended["metrics"], protected["metrics"]

    assert base["test/robust_acc"] <= 0.5 * base["test/clean_acc"]  # AutoAttack at least halves accuracy
    assert fp["test/robust_acc"] >= base["test/robust_acc"] + 0.2
    assert fp["test/protected_clean_acc"] >= fp["test/clean_acc"]
    assert fp["test/linf"] <= 0.2 + 1e-5 and 0.5 < fp["test/ssim"] < 1
    assert fp["test/attack_distance"] <= 0.2 + 1e-5
    assert fp["test/defense_seconds_per_image"] > 0 and base["test/defense_seconds_per_image"] < 1e-3
    assert all(fp[f"test/{stage}_seconds_per_image"] > 0 for stage in ("label", "attack", "score", "receiver"))
    assert protected["run"]["n_samples"] == 48 and protected["config"]["defense"]["n_samples"] == 20
    table = (tmp_path / "1" / "results.md").read_text()
    assert table.startswith("| defense") and "| FastPreemption | Identity         | AutoAttack | 48 " in table
    # A job's W&B run ends with it: before, job 1 logged into job 0's run and had no run folder of its own.
    runs = [list((tmp_path / job / "wandb").glob("offline-run-*")) for job in ("0", "1")]
    assert [len(found) for found in runs] == [1, 1] and runs[0][0].name != runs[1][0].name
    assert printed[0].count("├── defense") == 2, "each job prints its composed config as a tree"
    # W&B's banner is off: one line per run, naming its offline folder.
    assert printed[0].count("W&B run (offline): ") == 2 and "wandb: " not in printed[0]
    assert f"W&B run (offline): {runs[1][0]}" in printed[0]
    assert list((tmp_path / "1" / "csv").rglob("metrics.csv"))


def test_cifar10_samples_with_shipped_resnet18_writes_results(tmp_path: Path, zoo_dir: Path, capfd) -> None:
    results, printed = run_job(
        capfd,
        tmp_path,
        zoo_dir,
        "experiment=cifar10_resnet18",
        "dataset.n_samples=8",
        "logger=none",
        "print_config=false",
    )
    assert "├── dataset" not in printed, "print_config=false prints no config tree"
    metrics = results["metrics"]
    assert results["run"]["n_samples"] == 8
    assert metrics["test/clean_acc"] >= 0.75
    assert metrics["test/linf"] <= 8 / 255 + 1e-5
    for key in ("test/clean_acc", "test/protected_clean_acc", "test/robust_acc", "test/ssim"):
        assert 0 <= metrics[key] <= 1
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_real_photos_with_three_different_real_imagenet_models(tmp_path: Path, zoo_dir: Path, capfd) -> None:
    """Fast Preemption's headline setting offline: EfficientNet-Lite2 labels, Lite0 protects, Lite1 is the victim,
    on shipped ImageNet photos at the ImageNet budget (4/255); kept small (2 photos, N 2, PGD-2) for the suite."""
    results, _ = run_job(
        capfd,
        tmp_path,
        zoo_dir,
        "dataset=imagenet_samples",
        "dataset.n_samples=2",
        "classifier=efficientnet_lite2",
        "backbone=efficientnet_lite0",
        "victim=efficientnet_lite1",
        "defense.n_samples=2",
        "attack=pgd",
        "attack.steps=2",
        "logger=none",
        "print_config=false",
    )
    metrics, config = results["metrics"], results["config"]
    assert [config[role]["variant"] for role in ("classifier", "backbone", "victim")] == [2, 0, 1]
    assert config["threat"]["eps"] == 4 / 255 and 0 < metrics["test/linf"] <= 4 / 255 + 1e-5
    assert metrics["test/clean_acc"] == 1.0  # both photos: the victim's top-1 on the first ones
    assert 0 <= metrics["test/robust_acc"] <= 1 and 0.5 < metrics["test/ssim"] < 1


# One cheap ImageNet run around a victim of the user's: two real photos, no defense, PGD-1.
OWN_VICTIM_RUN = (
    "dataset=imagenet_samples",
    "dataset.n_samples=2",
    "classifier=ground_truth",
    "backbone=efficientnet_lite0",
    "defense=none",
    "attack=pgd",
    "attack.steps=1",
    "logger=none",
    "print_config=false",
)
LITE0_STATISTICS = ("mean=[0.498,0.498,0.498]", "std=[0.502,0.502,0.502]")  # efficientnet_lite.MEAN, STD


@pytest.fixture(scope="module")
def lite0_clean_acc(lite0) -> float:
    """What EfficientNet-Lite0 scores on the run's two photos, computed directly."""
    from conftest import accuracy

    from preempt.datasets.package_samples import imagenet_samples

    photos = imagenet_samples(image_size=224, n_samples=2)
    return accuracy(lite0, photos.images, photos.labels)


@pytest.mark.parametrize("option", ["timm", "torchscript"])
def test_a_victim_from_the_user_s_own_file_scores_as_the_model_it_was_saved_from(
    option: str, own_model_files, lite0_clean_acc, tmp_path: Path, zoo_dir: Path, capfd
) -> None:
    """victim=timm with Lite0's weights saved as a state dict, victim=torchscript with its traced network."""
    keys = {"timm": ("architecture", "checkpoint"), "torchscript": ("file",)}[option]
    files = [f"victim.{key}={own_model_files[key]}" for key in keys]
    statistics = [f"victim.{setting}" for setting in LITE0_STATISTICS]
    results, _ = run_job(capfd, tmp_path, zoo_dir, f"victim={option}", *files, *statistics, *OWN_VICTIM_RUN)
    assert results["metrics"]["test/clean_acc"] == lite0_clean_acc
    assert 0 <= results["metrics"]["test/robust_acc"] <= 1


OWN_LOADER = """\
# own_lite0_models.py: my own ImageNet model, timm's EfficientNet-Lite0 with the weights of a file of mine.
import timm

from preempt.checkpoints import load_checkpoint
from preempt.models import PixelClassifier
from preempt.parts import ModelSpec, declares_spec
from preempt.parts.constraints import WeightFile


@declares_spec(lambda **settings: ModelSpec(input_shape=(3, 224, 224), num_classes=1000))
def my_lite0(checkpoint: WeightFile) -> PixelClassifier:
    network = timm.create_model("efficientnet_lite0", pretrained=False)
    network.load_state_dict(load_checkpoint(checkpoint))
    return PixelClassifier(network, name="my_lite0", input_shape=(3, 224, 224), mean=(0.498,) * 3, std=(0.502,) * 3)
"""


def test_an_own_loader_from_a_config_folder_of_the_user_s_runs_as_docs_extending_shows(
    own_model_files, lite0_clean_acc, tmp_path: Path, zoo_dir: Path, capfd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/extending.md's recipe: a module on the path, `my_conf/model/<name>.yaml` with the three role links, and
    hydra.searchpath; its loader's annotated file is refused at validation when missing, naming it."""
    (tmp_path / "own_lite0_models.py").write_text(OWN_LOADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PREEMPT_TRUSTED_MODULES", "own_lite0_models")
    my_conf = tmp_path / "my_conf"
    (my_conf / "model").mkdir(parents=True)
    (my_conf / "model" / "my_lite0.yaml").write_text(
        f"_target_: own_lite0_models.my_lite0\ncheckpoint: {own_model_files['checkpoint']}\n"
    )
    for role in ("classifier", "backbone", "victim"):
        (my_conf / role).symlink_to("model")
    own = (f"hydra.searchpath=[file://{my_conf}]", "victim=my_lite0", *OWN_VICTIM_RUN)
    results, _ = run_job(capfd, tmp_path / "run", zoo_dir, *own)
    assert results["config"]["victim"] == {
        "_target_": "own_lite0_models.my_lite0",
        "checkpoint": own_model_files["checkpoint"],
    }
    assert results["metrics"]["test/clean_acc"] == lite0_clean_acc
    missing = tmp_path / "moved.pth"
    refusal = run_main(main_arguments(tmp_path / "refused", zoo_dir, *own, f"victim.checkpoint={missing}"))
    assert f"no file {missing}: put the weight file there" in refusal


def test_two_process_ddp_equals_one_process(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    """19 samples in batches of 4: five batches over two ranks, uneven, with nothing padded or repeated; targets,
    per-round counts and sanity flags are reduced over ranks too."""
    targeted = ("attack.targeted=true", "attack.early_stop=true", "attack.record_every=5")
    common = ("attack=pgd", *targeted, "dataset.n_samples=19", "batch_size=4", "logger=csv")
    single = run_process(tmp_path / "single", zoo_dir, "trainer=default", *common)
    ddp = run_process(tmp_path / "ddp", zoo_dir, "trainer=ddp", "trainer.accelerator=cpu", *common)
    assert ddp["config"]["trainer"]["strategy"] == "ddp" and ddp["config"]["trainer"]["devices"] == 2
    assert ddp["metrics"].keys() == single["metrics"].keys()
    assert ddp["rounds"] == single["rounds"] and single["rounds"]["round"] == [5, 10]
    assert ddp["sanity_checks"] == single["sanity_checks"]
    for key, value in single["metrics"].items():
        if key.endswith("_acc"):  # counts of correct predictions: identical
            assert ddp["metrics"][key] == value, key
        elif not key.endswith("_seconds_per_image"):  # float sums reduced across ranks in another order
            assert ddp["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_bad_override_fails_with_the_fix(tmp_path: Path) -> None:
    """An empty model cache: the refusal must come before the zoo is trained, as one line (a SystemExit with the
    line, which Python prints alone) without a traceback."""
    refusal = run_main(main_arguments(tmp_path / "run", tmp_path / "empty_cache", "threat.eps=8"))
    assert isinstance(refusal, str) and refusal.startswith("error: threat: Linf eps=8 is larger")
    assert "8/255" in refusal and "\n" not in refusal
    assert not (tmp_path / "empty_cache").exists()


RECORDER = """#!{python}
# Stands in for the Python the sweep script calls: records each command line, and makes the sweep folder a
# multirun of src/main.py would make, so the script goes on to table it.
import json, pathlib, sys
arguments = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(arguments) + "\\n")
settings = dict(a.split("=", 1) for a in arguments if "=" in a)
if "task_name" in settings:
    sweep = pathlib.Path(settings["paths.log_dir"]) / settings["task_name"] / "multiruns" / "run"
    sweep.mkdir(parents=True, exist_ok=True)
"""


def test_ablation_sweep_script_lists_every_job_and_each_one_validates(
    tmp_path: Path, compose_config, digits_models
) -> None:
    """The script's grid, read from the commands it runs (a recorder stands in for Python, so no job is run here:
    each knob runs through src/main.py in the test below), expanded as Hydra's sweeper expands it; every job's
    config composes and passes validation, and every sweep is tabled."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from preempt.validation import validate_config

    log = tmp_path / "commands.jsonl"
    recorder = tmp_path / "python"
    recorder.write_text(RECORDER.format(python=sys.executable, log=str(log)))
    recorder.chmod(0o755)
    env = {**os.environ, "LOG_DIR": str(tmp_path / "logs"), "PYTHON": str(recorder)}
    script = ROOT / "sweeps" / "digits_ablations.sh"
    done = subprocess.run(["bash", str(script), "dataset.n_samples=8"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    commands = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [command for command in commands if command[:2] == ["src/main.py", "-m"]]
    tabled = [command for command in commands if command[:2] == ["-m", "preempt.commands.results"]]
    jobs: dict[str, list[list[str]]] = {}
    parser = OverridesParser.create()
    for command in runs:
        overrides = [o for o in command[2:] if not o.startswith(("hydra.", "paths.log_dir=", "task_name="))]
        task = next(o for o in command if o.startswith("task_name=")).removeprefix("task_name=")
        for batch in BasicSweeper.split_arguments(parser.parse_overrides(overrides), None):
            jobs.setdefault(task, []).extend(batch)
    counts = {"n_samples": 3, "optimizer": 4, "fore_back": 9, "schedules": 4, "classifier": 3, "backbone": 4}
    assert {task: len(found) for task, found in jobs.items()} == {f"ablation_{t}": n for t, n in counts.items()}
    assert len(tabled) == len(counts)
    every_job = [job for found in jobs.values() for job in found]
    assert any(job[-3:-1] == ["defense.forward_steps=2", "defense.backward_steps=3"] for job in every_job)
    for job in every_job:
        assert "attack=pgd" in job and job[-1] == "dataset.n_samples=8"  # the script's arguments come last
        validate_config(compose_config(*job))
    schedules = [job for job in jobs["ablation_schedules"] if "defense.schedule=alternate" in job]
    assert schedules and "defense.forward_steps=50" in schedules[0] and "defense.backward_steps=50" in schedules[0]


def test_a_failing_ddp_rank_ends_the_run_with_its_error(tmp_path: Path, zoo_dir: Path, digits_models) -> None:
    """Rank 1 raises mid-loop: the run must stop (no hang) and say last what failed, not gloo's 'closed by peer'."""
    command = main_command(
        tmp_path,
        zoo_dir,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "attack=none",
        "attack._target_=faulty_parts.FailsOnRankOne",
        "dataset.n_samples=16",
        "batch_size=4",
        "logger=none",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "helpers"), "PREEMPT_TRUSTED_MODULES": "faulty_parts"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode != 0
    last_line = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert last_line.startswith("error: rank 1 failed: RuntimeError: injected failure on rank 1"), last_line
    # Only the job's own process marks the folder (a DDP process renaming it would hide the failure reports).
    assert "rank 1 failed" in (tmp_path.with_name(tmp_path.name + "_failed") / "FAILED").read_text()


def test_a_finished_run_folder_is_left_untouched(tmp_path: Path, zoo_dir: Path) -> None:
    """Hydra writes .hydra/ before the job starts: the refusal must come before that."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("finished: true\n")
    (tmp_path / "results.json").write_text("{}\n")
    refusal = run_main(main_arguments(tmp_path, zoo_dir))
    assert isinstance(refusal, str) and refusal.startswith("error:") and "finished run" in refusal
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == "finished: true\n"
    assert (tmp_path / "results.json").read_text() == "{}\n"


def test_a_refusal_names_the_option_the_user_picked(tmp_path: Path) -> None:
    refusal = run_main(
        main_arguments(tmp_path / "run", tmp_path / "cache", "dataset=cifar10_samples", "victim=digits_mlp")
    )
    assert refusal.startswith(
        "error: classifier digits_cnn takes 1×16×16 images (C×H×W) but dataset cifar10_samples gives 3×32×32"
    )
    assert not (tmp_path / "cache").exists()  # refused before the zoo was trained
    assert not (tmp_path / "run").exists(), "a failed run's folder is marked, not left looking like a run"
    assert "takes 1×16×16 images" in (tmp_path / "run_failed" / "FAILED").read_text()


def test_bpda_against_the_second_papers_defense_records_every_round(
    tmp_path: Path, zoo_dir: Path, digits_models, capfd
) -> None:
    results, stdout = run_job(
        capfd, tmp_path, zoo_dir, "defense=none", "receiver_defense=dct_distortion", "attack=bpda", "attack.steps=6",
        "threat.norm=normalized_L2", "threat.eps=0.3", "dataset.n_samples=24", "logger=default",
    )  # fmt: skip
    rounds = results["rounds"]
    assert rounds["round"] == [1, 2, 3, 4, 5, 6] and len(rounds["accuracy"]) == len(rounds["attack_success_rate"]) == 6
    assert results["run"]["attack"] == "BPDA targeted"
    assert results["sanity_checks"]["randomized"] is True  # DCT+distortion draws per call: the flag says so
    assert "| NoDefense | DCTDistortion    | BPDA targeted |" in stdout
    assert 0 <= results["metrics"]["test/attack_success_rate"] <= 1
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_diffpure_purifies_receiver_side_and_an_eot_attack_differentiates_through_it(
    tmp_path: Path, zoo_dir: Path, digits_models, digits_score_model, capfd
) -> None:
    """receiver_defense=diffpure with the trained digits score model, attacked with exact gradients through the
    reverse SDE averaged over draws (EOT)."""
    results, stdout = run_job(
        capfd, tmp_path / "digits", zoo_dir, "defense=none", "receiver_defense=diffpure",
        "receiver_defense.t_star=0.05", *TEST_SCORE_MODEL, "attack=eot", "attack.steps=3", "attack.eot_samples=2",
        "dataset.n_samples=16", "logger=none",
    )  # fmt: skip
    metrics = results["metrics"]
    assert metrics["test/clean_acc"] >= 0.7 and metrics["test/robust_acc"] <= metrics["test/clean_acc"]
    assert metrics["test/receiver_variance_l2"] > 0 and metrics["test/receiver_variance_ssim"] < 1  # random g
    assert results["sanity_checks"]["randomized"] is True
    assert "| NoDefense | DiffPure " in stdout and metrics["test/receiver_seconds_per_image"] > 0


def run_sweep(capfd, sweep_dir: Path, zoo_dir: Path, *overrides: str, printed: list[str] | None = None) -> list[dict]:
    """One Hydra multirun of src/main.py; the results.json of every job, in job order (what it printed is
    appended to `printed`)."""
    status = run_main(
        ["-m", *main_arguments(sweep_dir / "unused", zoo_dir, *overrides), f"hydra.sweep.dir={sweep_dir}"]
    )
    output = capfd.readouterr()
    assert status == 0, output.out[-3000:] + output.err[-3000:]
    if printed is not None:
        printed.append(output.out + output.err)
    jobs = sorted((path for path in sweep_dir.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))
    return [json.loads((job / "results.json").read_text()) for job in jobs]


def test_preemptive_baselines_and_fast_preemption_knobs_run_through_main(
    tmp_path: Path, zoo_dir: Path, digits_models, capfd
) -> None:
    """Bi-Level, A5, the two presets and the ablation knobs as users run them: each protects within the budget and
    leaves the victim more robust to PGD than no defense, on the same 32 digits."""
    common = ("attack=pgd", "dataset.n_samples=32", "logger=none")
    options = ["none", "bilevel", "bilevel_fp", "a5", "fast_preemption_mspd"]
    baselines = run_sweep(capfd, tmp_path / "baselines", zoo_dir, f"defense={','.join(options)}", *common)
    knobs = run_sweep(
        capfd,
        tmp_path / "knobs",
        zoo_dir,
        "defense=fast_preemption",
        "defense.optimizer=fgsm,pgd",
        "defense.schedule=cascade,alternate",
        *common,
    )
    undefended = baselines[0]["metrics"]["test/robust_acc"]
    assert [result["run"]["defense"] for result in baselines] == [
        "NoDefense",
        "BiLevel",
        "FastPreemption",
        "A5",
        "FastPreemption",
    ]
    assert [result["config"]["defense"]["eta"] for result in (baselines[2], baselines[4])] == [0.1, 1.0]
    assert [(r["config"]["defense"]["optimizer"], r["config"]["defense"]["schedule"]) for r in knobs] == [
        ("fgsm", "cascade"),
        ("fgsm", "alternate"),
        ("pgd", "cascade"),
        ("pgd", "alternate"),
    ]
    for result in baselines[1:] + knobs:
        metrics, overrides = result["metrics"], result["run"]["overrides"]
        assert metrics["test/linf"] <= 0.2 + 1e-5, overrides
        assert metrics["test/robust_acc"] >= undefended + 0.15, (overrides, undefended, metrics["test/robust_acc"])
        assert metrics["test/defense_seconds_per_image"] > 0, overrides


def test_a_sweep_run_again_with_skip_finished_recomputes_nothing(
    tmp_path: Path, zoo_dir: Path, digits_models, capfd
) -> None:
    """The second sweep finds both jobs' results by their config (in the first sweep's folders) and runs neither."""
    common = ("defense=none", "attack=none", "dataset.n_samples=8", "logger=none", f"paths.log_dir={tmp_path}")
    first = run_sweep(capfd, tmp_path / "first", zoo_dir, "seed=0,1", *common)
    arguments = main_arguments(tmp_path / "unused", zoo_dir, "seed=0,1", *common, "skip_finished=true")
    assert run_main(["-m", f"hydra.sweep.dir={tmp_path / 'second'}", *arguments]) == 0
    printed = capfd.readouterr().out
    for job in ("0", "1"):
        assert f"finished before, in {tmp_path / 'first' / job / 'results.json'}" in printed
        assert not (tmp_path / "second" / job).exists()
    assert [result["run"]["seed"] for result in first] == [0, 1]


def test_a_finished_run_folder_is_refused(compose_config, no_model_building) -> None:
    cfg = compose_config()
    output = Path(cfg.paths.output_dir)
    output.mkdir(parents=True)
    (output / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="finished run"):
        evaluate(cfg)
    assert (output / "results.json").read_text() == "{}"


def test_a_finished_run_is_found_by_its_config_and_skipped_when_asked(compose_config, tmp_path: Path, digits_models):
    """skip_finished=true: the same resolved config (another folder, task name, logger) is not computed again;
    another setting is; skip_finished=false runs it anyway."""

    def run(folder: str, *overrides: str) -> dict:
        cfg = compose_config(
            f"paths.log_dir={tmp_path / 'outputs'}", "defense=none", "attack=none", "dataset.n_samples=8", *overrides
        )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "outputs" / folder)
        (tmp_path / "outputs" / folder / ".hydra").mkdir(parents=True)  # as Hydra leaves it before the job
        return evaluate(cfg)

    first = run("first", "logger=none")
    again = run("again", "skip_finished=true", "task_name=other", "logger=csv")
    assert again == first and not (tmp_path / "outputs" / "again").exists(), "skipped, and no empty run folder left"
    other = run("other", "skip_finished=true", "logger=none", "seed=1")
    assert other["run"]["fingerprint"] != first["run"]["fingerprint"]
    forced = run("forced", "logger=none")
    assert forced["run"]["fingerprint"] == first["run"]["fingerprint"]
    assert (tmp_path / "outputs" / "forced" / "results.json").is_file()


def test_every_transform_runs_receiver_side_through_main(tmp_path: Path, zoo_dir: Path, digits_models, capfd) -> None:
    """One multirun over every transform (oblivious PGD), then both sides at once, as a user would run them."""
    sweep = ",".join(TRANSFORMS)
    common = ("attack=pgd", "threat.oblivious=true", "dataset.n_samples=16", "logger=none")
    results = run_sweep(capfd, tmp_path / "sweep", zoo_dir, f"receiver_defense={sweep}", "defense=none", *common)
    assert len(results) == len(TRANSFORMS)
    for result in results:
        option = result["config"]["receiver_defense"]["_target_"]
        metrics = result["metrics"]
        assert result["run"]["oblivious"] is True and result["run"]["defense"] == "NoDefense"
        assert 0 <= metrics["test/robust_acc"] <= 1 and 0 <= metrics["test/clean_acc"] <= 1, option
        assert metrics["test/receiver_variance_ssim"] <= 1, option

    both = ("defense=fast_preemption", "receiver_defense=dct_distortion", *common)
    result, printed = run_job(capfd, tmp_path / "both", zoo_dir, *both)
    assert (result["run"]["defense"], result["run"]["receiver_defense"]) == ("FastPreemption", "DCTDistortion")
    assert result["metrics"]["test/linf"] <= 0.2 + 1e-5 and result["metrics"]["test/receiver_variance_l2"] > 0
    assert "| FastPreemption | DCTDistortion    | PGD (oblivious) | 16" in printed
