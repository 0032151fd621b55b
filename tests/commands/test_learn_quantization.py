"""`python -m preempt.commands.learn_quantization`: Algorithm 2's table learned on the digits, never overwritten."""

from pathlib import Path

from conftest import run_main

from preempt.commands.learn_quantization import main
from preempt.receiver_defenses.dct import read_table


def test_the_command_learns_a_table_on_digits_and_never_overwrites_one(tmp_path: Path, zoo_dir: Path, digits_models):
    table_file = tmp_path / "digits_table.txt"
    arguments = [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={zoo_dir}",
        "dataset.n_samples=32",
        "attack.steps=2",
        f"table_file={table_file}",
    ]
    assert run_main(arguments, main) == 0
    table = read_table(table_file)
    assert table.max() == 100 and table.min() >= 20
    assert "victim digits_lenet_at; attack pgd" in table_file.read_text()
    learned = table_file.read_text()

    refusal = run_main([*arguments[1:], f"hydra.run.dir={tmp_path / 'again'}"], main)
    assert isinstance(refusal, str) and "already exists" in refusal
    assert table_file.read_text() == learned
