#!/usr/bin/env bash
# Fast Preemption ablations on the offline digits job as Hydra multiruns (one results.json per job), in the
# spirit of the paper's Table VIII (N averaged FGSM starts) and Figure 9 (forward vs backward steps).
# PGD keeps each job to seconds on a CPU; pass attack=autoattack for the paper's attack, seed=0,1,2 for the spread
# (then: python -m preempt.results outputs/ablation_n_samples outputs/ablation_fore_back --over-seeds).
#   bash sweeps/digits_ablations.sh [extra overrides]      (LOG_DIR=... to write elsewhere than outputs/)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
log_dir=${LOG_DIR:-outputs}

$python src/main.py -m task_name=ablation_n_samples paths.log_dir="$log_dir" attack=pgd logger=csv \
  defense.n_samples=1,5,20 "$@"
$python src/main.py -m task_name=ablation_fore_back paths.log_dir="$log_dir" attack=pgd logger=csv \
  defense.forward_steps=0,1,2 defense.backward_steps=1,2,3 "$@"
for task in ablation_n_samples ablation_fore_back; do
  latest=$(ls -d "$log_dir/$task/multiruns/"* | tail -n 1)
  echo "== $task ($latest)"
  $python -m preempt.results "$latest"
done
