#!/usr/bin/env bash
# The runs behind benchmarks/results/world-gpu (docs/benchmarks.md, "The world on a GPU"): eight RL runs side by side
# on one GPU (an H200; 16 CPU cores, which score the images), each for SECS seconds of wall time, at 512 prompts per
# iteration, then six with a learning-rate warm-up. Needs `make run`'s models/world-sd3 and data/world. About 11
# minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-400}
RUNS=${RUNS:-/tmp/world-gpu-runs}
mkdir -p "$RUNS"
big="--set sampler.max_batch=8192 --set train.micro_batch=1024 --set train.prompts_per_iteration=512"
run() {
  name=$1; shift
  timeout $((SECS + 100)) python benchmarks/world_gpu.py run --name "$name" --out "$RUNS" --seconds "$SECS" $big "$@" \
    > "$RUNS/$name.log" 2>&1 &
}
for s in 0 1 2; do run tree_s$s --set train.seed=$s; done
for s in 0 1 2; do run grpo_s$s --set train.seed=$s --set train.algorithm=grpo; done
run tree_lr3_s0 --set train.seed=0 --set train.learning_rate=3.0e-3
run tree_lr10_s0 --set train.seed=0 --set train.learning_rate=1.0e-2
wait
# then a linear learning-rate warm-up over 20 iterations, at lr 1e-3 and 3e-3, 150 s each, evaluated every 5
SECS=150
for s in 0 1 2; do run wu_s$s --set train.seed=$s --set train.warmup_iterations=20 --eval-every 5; done
for s in 0 1 2; do
  run wu3_s$s --set train.seed=$s --set train.warmup_iterations=20 --set train.learning_rate=3.0e-3 --eval-every 5
done
wait
python benchmarks/world_gpu.py report "$RUNS" benchmarks/results/world-gpu
