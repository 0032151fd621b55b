#!/usr/bin/env bash
# The Fast Preemption paper's preemptive comparisons on the offline digits job, under AutoAttack (standard, Linf
# 0.2), over seeds 0–2: Bi-Level (the authors' algorithm and the paper's reading of it), A5, the authors'-code
# preset, and Fast Preemption with its Table VIII PGD optimizer and Figure 8's alternate schedule (beside the
# cascade of the same steps: F2-B2, eta 0.4). One results.json per job; the table is each setting's mean
# [min–max] over the seeds.
#   bash sweeps/preemptive_baselines.sh [extra overrides]   (LOG_DIR=... to write elsewhere than outputs/)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
log_dir=${LOG_DIR:-outputs}
common=(task_name=preemptive_baselines paths.log_dir="$log_dir" attack=autoattack logger=csv seed=0,1,2)

$python src/main.py -m "${common[@]}" defense=none,fast_preemption,fast_preemption_mspd,bilevel,bilevel_fp,a5 "$@"
$python src/main.py -m "${common[@]}" defense=fast_preemption defense.optimizer=pgd "$@"
$python src/main.py -m "${common[@]}" defense=fast_preemption defense.schedule=cascade,alternate defense.forward_steps=2 \
  defense.backward_steps=2 defense.eta=0.4 "$@"
echo "== preemptive_baselines"
$python -m preempt.commands.results "$log_dir/preemptive_baselines" --over-seeds
