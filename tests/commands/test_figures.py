"""`python -m preempt.commands.figures`: a figure from the files runs wrote, or a clear refusal."""

from pathlib import Path

import pytest

from preempt.commands.figures import main
from preempt.files import write_json_atomically
from preempt.results.record import build_results

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.parts.NoDefense"},
    "threat": {"eps": 0.3, "norm": "normalized_L2", "oblivious": False},
}


def test_no_round_records_is_a_clear_refusal(tmp_path: Path) -> None:
    write_json_atomically(
        build_results({**CONFIG, "receiver_defense": CONFIG["defense"], "attack": CONFIG["defense"]}, {}, 1, 1.0),
        tmp_path / "r" / "results.json",
    )
    with pytest.raises(SystemExit, match="record_every"):
        main(["rounds", str(tmp_path), "--out", str(tmp_path / "f.png")])
