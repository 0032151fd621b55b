#!/usr/bin/env bash
# Bi-Level against Fast Preemption, seconds per image, in one multirun on the same 20 CIFAR-10 sample images with
# the shipped ResNet-18 as classifier, backbone and victim (attack=none: only the protection is timed).
# batch_size=5 puts Fast Preemption's N×batch = 100 copies through each backbone pass, near this CPU's fastest
# per-image pass; Bi-Level's passes are per image either way. Then: python -m preempt.commands.results <printed folder>.
#   bash sweeps/preemptive_speed.sh [extra overrides]      (LOG_DIR=... to write elsewhere than outputs/)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
log_dir=${LOG_DIR:-outputs}

$python src/main.py -m task_name=preemptive_speed paths.log_dir="$log_dir" experiment=cifar10_resnet18 attack=none \
  logger=csv batch_size=5 defense=fast_preemption,bilevel "$@"
latest=$(ls -d "$log_dir/preemptive_speed/multiruns/"* | tail -n 1)
echo "== preemptive_speed ($latest)"
$python -m preempt.commands.results "$latest"
