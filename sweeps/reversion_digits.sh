#!/usr/bin/env bash
# The Fast Preemption paper's Table V on the offline digits job: Fast Preemption (Linf 0.2, the paper's settings)
# against each reversion attack, seeds 0,1,2, the whole digits test split (360 images), AutoAttack standard after
# the reversion. Under the protocol (classifier=noisy_labels: half the sender's labels wrong, drawn per seed) and,
# as the paper's fourth row, with the default classifier, where protection raises accuracy and no verdict is
# possible, and under PGD-10, which starts from the reversion's guess inside the budget around what it received
# (AutoAttack, which has no start point, attacks the guess and is projected back into that budget). Black-box: the
# attacker re-runs the defense on the model it has, the victim.
#   bash sweeps/reversion_digits.sh [extra overrides]      (LOG_DIR=... to write elsewhere than outputs/)
#   then: python -m preempt.commands.results outputs/reversion_digits --over-seeds
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${LOG_DIR:-outputs}/reversion_digits
reversions=none,jpeg,diffpure,preemptive_reversion,preemptive_reversion_black_box
common=(defense=fast_preemption dataset.n_samples=360 seed=0,1,2 logger=csv)

run() { $python src/main.py -m hydra.sweep.dir="$out/$1" "${common[@]}" "${@:2}"; }
run protocol classifier=noisy_labels reversion=$reversions "$@"
run good_classifier classifier=digits_cnn reversion=$reversions attack=none "$@"
run pgd classifier=noisy_labels reversion=$reversions attack=pgd "$@"
$python -m preempt.commands.results "$out" --over-seeds
