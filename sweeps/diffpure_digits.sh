#!/usr/bin/env bash
# DiffPure on the receiver's side of the digits job (the project's score model, t* = 0.1, dt = 1e-3: 100 score-model
# calls per purification), no sender-side defense, Linf 0.2, three seeds. Three man-in-the-middle attacks:
#   pgd       PGD-10, exact gradients through the whole reverse SDE, one draw of the noise per step;
#   eot       10 FGSM steps of eps/4 on the gradient averaged over 5 draws (EOT), untargeted (100 images: ~5× dearer);
#   bpda_eot  forward through DiffPure, backward as the identity, 5 draws per step, 10 steps.
# The clean accuracy, the purification's seconds per image and its output variance come with every run.
#   bash sweeps/diffpure_digits.sh [extra overrides]      (LOG_DIR=... to write elsewhere than outputs/)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
log_dir=${LOG_DIR:-outputs}
common=(paths.log_dir="$log_dir" defense=none logger=csv seed=0,1,2)

run() {  # task name, then overrides
  local task=$1
  shift
  $python src/main.py -m task_name="$task" "${common[@]}" "$@"
}

run diffpure_digits receiver_defense=none,diffpure attack=pgd "$@"
run diffpure_digits_eot receiver_defense=diffpure attack=eot attack.steps=10 attack.eot_samples=5 attack.step_size=0.25 \
  attack.targeted=false dataset.n_samples=100 "$@"
run diffpure_digits_bpda receiver_defense=diffpure attack=bpda_eot attack.approximation=identity attack.steps=10 \
  attack.eot_samples=5 attack.step_size=0.25 attack.targeted=false "$@"
for task in diffpure_digits diffpure_digits_eot diffpure_digits_bpda; do
  latest=$(ls -d "$log_dir/$task/multiruns/"* | tail -n 1)
  echo "== $task ($latest)"
  $python -m preempt.commands.results --over-seeds "$latest"
done
