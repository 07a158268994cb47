#!/usr/bin/env bash
# The CPU runs behind docs/benchmarks.md's tables, in the order they were made (about 40 minutes on 2 shared
# cores). One torch thread: on a CPU that other work shares, two threads wait on each other at every parallel region
# (measured: the tiny transformer at batch 54 took 0.79 s with 2 threads, 0.046 s with 1).
set -euo pipefail
cd "$(dirname "$0")/.."
# tiny: every part (cost, learning with 3 seeds x 30 s per algorithm, ablations of 10 iterations)
treegrpo bench --size tiny --threads 1 --iterations 3 --warmup 1 --seeds 0,1,2 --budget 30 --ablation-iterations 10
# small (~22M-parameter transformer): iteration cost, the paper's k = d = 3 and 27 images per prompt
treegrpo bench --parts cost --size small --threads 1 --iterations 3 --warmup 1 --prompts-per-iteration 1 \
  --limit-repeats 1 --out benchmarks/results/small
# on a GPU host (the H100 figures; diffusers, ruamel.yaml and open_clip installed there as on any machine):
#   treegrpo bench --parts cost --size small --device cuda --iterations 3 --warmup 1 --prompts-per-iteration 1 \
#     --out benchmarks/results/small-h100
#   treegrpo bench --parts learning --size small --device cuda --seeds 0,1,2 --budget 25 --eval-points 5 \
#     --out benchmarks/results/small-h100-learning
#   treegrpo bench --parts cost --size sd35m --device cuda --iterations 2 --warmup 1 --prompts-per-iteration 1 \
#     --no-isolate --limit-repeats 1 --out benchmarks/results/sd35m-h100
