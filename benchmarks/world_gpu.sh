#!/usr/bin/env bash
# The runs behind benchmarks/results/world-gpu and world-lora-kl (docs/benchmarks.md, "The world"). Needs `make run`'s
# models/world-sd3 and data/world.
#   bash benchmarks/world_gpu.sh            # GPU: 8 runs side by side on one GPU (an H200; its 16 CPU cores score
#                                           # the images), 400 s each at 512 prompts a step, then 6 with a warm-up
#                                           # for 150 s; about 11 minutes
#   PERTURB=1 bash benchmarks/world_gpu.sh  # CPU: the shipped LoRA's weight change against random ones and a LoRA
#                                           # trained on random rewards, scaled x1, x3, x10; about 10 minutes
#   LORA_KL=1 bash benchmarks/world_gpu.sh  # CPU: one-seed probes at the shipped B = 32 of a rank-16 LoRA that also
#                                           # reaches the feed-forward layers and proj_out, without and with a KL to
#                                           # the reference; one torch thread each, at most two at a time; ~40 minutes
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${PERTURB:-0}" = 1 ]; then  # CPU, ~10 minutes: is the shipped LoRA's change better than noise's?
  P=${PERTURB_RUNS:-/tmp/world-perturb-runs}
  out=benchmarks/results/world-perturb
  mkdir -p "$out"
  # the LoRA of `make run` against random weight changes of the same size, at 1, 3 and 10 times its size
  python benchmarks/world_gpu.py perturb outputs/train/lora/pytorch_lora_weights.safetensors --out "$P/shipped" \
    --scales 1 3 10 --draws 2
  cp "$P/shipped/perturb.jsonl" "$out/shipped-lora.jsonl"
  # the null control: the shipped recipe (40 iterations) on uniform random rewards, then the same scaling
  python benchmarks/world_gpu.py run --name null40 --out "$P" --seconds 100000 --iterations 40 --eval-every 40 \
    --noises 4 --random-reward
  cp "$P/null40/curve.jsonl" "$out/null-run-curve.jsonl"
  python benchmarks/world_gpu.py perturb "$P/null40/train/lora/pytorch_lora_weights.safetensors" --out "$P/null" \
    --scales 1 3 10 --draws 0
  cp "$P/null/perturb.jsonl" "$out/null-lora.jsonl"
  exit
fi

if [ "${LORA_KL:-0}" = 1 ]; then
  CPU=${CPU_RUNS:-/tmp/world-lora-kl-runs}
  wide=(--set "lora.target_modules=[attn.to_q, attn.to_k, attn.to_v, attn.to_out.0, attn.add_q_proj, attn.add_k_proj,
        attn.add_v_proj, attn.to_add_out, attn2.to_q, attn2.to_k, attn2.to_v, attn2.to_out.0, ff.net.0.proj, ff.net.2,
        ff_context.net.0.proj, ff_context.net.2, proj_out]" --set lora.rank=16 --set lora.alpha=16.0)
  probe() { python benchmarks/world_gpu.py run --out "$CPU" --threads 1 --noises 4 "${wide[@]}" "$@"; }
  probe --name ff_r16_lr3 --seconds 900 --eval-every 30 --set train.learning_rate=3.0e-3
  probe --name ff_kl1.0 --seconds 660 --eval-every 30 --set train.learning_rate=3.0e-3 --set train.kl_beta=1.0 &
  probe --name ff_kl10.0 --seconds 660 --eval-every 30 --set train.learning_rate=3.0e-3 --set train.kl_beta=10.0 &
  wait
  # these two were stopped by hand after their evaluation at 25 iterations (about 250 s)
  probe --name ff_lr10_kl10.0 --seconds 250 --eval-every 25 --set train.learning_rate=1.0e-2 --set train.kl_beta=10.0 &
  probe --name ff_lr10_kl30.0 --seconds 250 --eval-every 25 --set train.learning_rate=1.0e-2 --set train.kl_beta=30.0 &
  wait
  python benchmarks/world_gpu.py report "$CPU" benchmarks/results/world-lora-kl
  exit
fi

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
