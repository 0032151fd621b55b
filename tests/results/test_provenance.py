"""Where and with what a number was computed: versions, the checkout's commit, the device."""

import subprocess

import torch
from conftest import ROOT

from preempt.results.record import build_results

CONFIG = {
    "dataset": {"_target_": "preempt.datasets.digits.digits"},
    "defense": {"_target_": "preempt.defenses.fast_preemption.FastPreemption"},
    "receiver_defense": {"_target_": "preempt.parts.Identity"},
    "attack": {"_target_": "preempt.attacks.autoattack.AutoAttack"},
    "threat": {"eps": 0.2, "norm": "Linf", "oblivious": False},
}


def test_results_record_what_a_rerun_needs() -> None:
    run = build_results({**CONFIG, "seed": 3}, {}, n_samples=1, wall_seconds=1.0, warnings=["careful"])["run"]
    assert run["seed"] == 3 and run["warnings"] == ["careful"]
    assert run["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"lightning", "pyautoattack", "robustbench", "hydra-core"} <= set(run["versions"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert run["git"]["commit"] == head and isinstance(run["git"]["dirty"], bool)
    assert run["device"].startswith("cpu") or run["device"] == torch.cuda.get_device_name()
