"""The W&B logger, offline and quiet: one line naming the offline run's folder instead of W&B's banner."""

from pathlib import Path

from preempt.logger import QuietWandbLogger, finish_wandb_run


def test_a_finished_offline_run_says_where_it_is_and_how_to_upload_it(tmp_path: Path, capsys) -> None:
    logger = QuietWandbLogger(project="preemptive-defense", save_dir=str(tmp_path), offline=True)
    logger.log_metrics({"test/robust_acc": 0.5})
    folder = Path(logger.experiment.dir).parent
    finish_wandb_run()
    printed = capsys.readouterr().out
    assert f"W&B run (offline): {folder}  (upload it with: wandb sync {folder})" in printed
    assert "wandb:" not in printed and folder.is_dir()


def test_with_no_run_there_is_nothing_to_finish(capsys) -> None:
    finish_wandb_run()
    assert capsys.readouterr().out == ""
