#!/usr/bin/env bash
# The Fast Preemption paper's ablations on the offline digits job as Hydra multiruns (one results.json per job):
#   ablation_n_samples   Table VIII's N: 1, 5, 20 averaged FGSM starts
#   ablation_optimizer   Table VIII: FGSM or PGD (Eq. 12) inner optimizer × N ∈ {1, 20}
#   ablation_fore_back   Figure 9: T→ ∈ {0,1,2} × T← ∈ {1,2,3}
#   ablation_schedules   Figure 8's end points, 100 steps at eta 0.1: F100-B0, F0-B100, F10-B90, and 50+50 alternate
#   ablation_classifier  Table VI: the sender's labels from the ground truth, the standard CNN or the MLP
#   ablation_backbone    Table VII: four backbones against the PGD-trained LeNet victim (backbone=digits_lenet_at
#                        is the white-box case, the others transfer)
# PGD keeps each job to seconds on a CPU; pass attack=autoattack for the paper's attack, seed=0,1,2 for the spread
# (then: python -m preempt.commands.results outputs/ablation_* --over-seeds).
#   bash sweeps/digits_ablations.sh [extra overrides]      (LOG_DIR=... to write elsewhere than outputs/)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
log_dir=${LOG_DIR:-outputs}

extra=("$@")
sweep() {  # sweep <task> <overrides...>: one multirun with the shared settings and the script's arguments
  local task=$1
  shift
  $python src/main.py -m task_name="$task" paths.log_dir="$log_dir" attack=pgd logger=csv "$@" ${extra[@]+"${extra[@]}"}
}

sweep ablation_n_samples defense.n_samples=1,5,20
sweep ablation_optimizer defense.optimizer=fgsm,pgd defense.n_samples=1,20
sweep ablation_fore_back defense.forward_steps=0,1,2 defense.backward_steps=1,2,3
# Paired (T→, T←) settings are not a product: one multirun each, side by side in one folder.
schedules="$log_dir/ablation_schedules/multiruns/$(date +%Y-%m-%d_%H-%M-%S)"
for setting in F100-B0:cascade F0-B100:cascade F10-B90:cascade F50-B50:alternate; do
  IFS=":-" read -r forward backward schedule <<<"$setting"
  sweep ablation_schedules hydra.sweep.dir="$schedules/$forward-$backward-$schedule" defense.eta=0.1 \
    defense.forward_steps="${forward#F}" defense.backward_steps="${backward#B}" defense.schedule="$schedule"
done
sweep ablation_classifier classifier=ground_truth,digits_cnn,digits_mlp
sweep ablation_backbone backbone=digits_cnn_at,digits_lenet_at,digits_cnn,digits_mlp

for task in ablation_n_samples ablation_optimizer ablation_fore_back ablation_schedules ablation_classifier \
  ablation_backbone; do
  latest=$(ls -d "$log_dir/$task/multiruns/"* | tail -n 1)
  echo "== $task ($latest)"
  $python -m preempt.commands.results "$latest"
done
