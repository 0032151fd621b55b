#!/usr/bin/env bash
# Every attack on the offline digits job, as Hydra multiruns over seeds 0,1,2 (one results.json per job):
# undefended, against a sender-side defense (Fast Preemption) and against a receiver-side one (the second paper's
# DCT + distortion); without a random g, EOT has nothing to average, and BPDA alone is plain gradient descent. One L2 budget for all, since C&W and L-BFGS are L2 attacks. On the receiver side the standard
# attacks are oblivious of g (the second paper's Table 3), BPDA and BPDA+EOT see it, and EOT, which needs a
# differentiable g, attacks random resize-and-pad.
#   bash sweeps/digits_attacks.sh [extra overrides]      (LOG_DIR=... to write elsewhere than outputs/)
#   then: python -m preempt.commands.results outputs/digits_attacks --over-seeds
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${LOG_DIR:-outputs}/digits_attacks
standard=fgsm,ifgsm,pgd,cw,lbfgs,autoattack
common=(threat.norm=L2 threat.eps=1.0 dataset.n_samples=100 seed=0,1,2 logger=csv)

run() { $python src/main.py -m hydra.sweep.dir="$out/$1" "${common[@]}" "${@:2}"; }
run undefended defense=none attack=$standard,bpda "$@"
run sender defense=fast_preemption attack=$standard,bpda,eot,bpda_eot "$@"
run receiver_oblivious defense=none receiver_defense=dct_distortion threat.oblivious=true attack=$standard "$@"
run receiver_adaptive defense=none receiver_defense=dct_distortion attack=bpda,bpda_eot "$@"
run receiver_eot defense=none receiver_defense=random_resize_pad attack=eot "$@"
$python -m preempt.commands.results "$out" --over-seeds
