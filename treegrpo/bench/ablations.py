"""Ablations in the shape of the paper's Table 3 (tree shape: k, d, trees per prompt) and Table 4 (where the window
sits: truncated-geometric alpha 0.3 / 0.5 / 0.7, and the shifting window).

Each configuration trains TreeGRPO for the same number of iterations from the same seed and reports EffGrp (images
per prompt), EffSteps (parents trained per prompt), the median iteration time, the mean training reward, the
held-out reward at the end (as `learning.heldout_scores`) and the tree's signal figures per window start
(`harness.tree_signal_by_start`).
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from treegrpo.bench.harness import BenchSetup, bench_params, make_trainer, release_memory, tree_signal_by_start
from treegrpo.bench.learning import heldout_scores

_DEFAULT = {"sampler.branching": 3, "sampler.depth": 3, "sampler.trees_per_prompt": 1,
            "sampler.window.strategy": "random", "sampler.window.alpha": 0.5}


def _shape(k: int, d: int, trees: int) -> dict[str, Any]:
    return {**_DEFAULT, "sampler.branching": k, "sampler.depth": d, "sampler.trees_per_prompt": trees}


# (table, label, overrides); the default k = d = 3, one tree, random window alpha 0.5 appears in both tables
ABLATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("shape", "k=3 d=3 T=1 (default)", _shape(3, 3, 1)),
    ("shape", "k=2 d=3 T=1", _shape(2, 3, 1)),
    ("shape", "k=3 d=2 T=1", _shape(3, 2, 1)),
    ("shape", "k=4 d=2 T=1", _shape(4, 2, 1)),
    ("shape", "k=3 d=2 T=3", _shape(3, 2, 3)),
    ("window", "random alpha=0.3", {**_DEFAULT, "sampler.window.alpha": 0.3}),
    ("window", "random alpha=0.5 (default)", _DEFAULT),
    ("window", "random alpha=0.7", {**_DEFAULT, "sampler.window.alpha": 0.7}),
    ("window", "shifting (stride 1, every 1)", {**_DEFAULT, "sampler.window.strategy": "shifting",
                                                "sampler.window.start": 0, "sampler.window.stride": 1,
                                                "sampler.window.every": 1}),
]


def run_ablation(setup: BenchSetup, label: str, overrides: dict[str, Any], train_prompts: Sequence[str],
                 eval_prompts: Sequence[str], iterations: int, seed: int = 0, noises: int = 2,
                 work_dir: str | Path = "outputs/bench/work") -> dict[str, Any]:
    """Train one configuration for `iterations` iterations; its figures (module docstring)."""
    out = Path(work_dir) / "ablation"
    shutil.rmtree(out, ignore_errors=True)
    params = bench_params(setup, "treegrpo", out, {"train.seed": seed, **overrides})
    trainer = make_trainer(params, train_prompts)
    before = heldout_scores(trainer, eval_prompts, noises)
    records, times = [], []
    for it in range(iterations):
        start = time.perf_counter()
        records.append(trainer.iteration(it))
        times.append(time.perf_counter() - start)
    after = heldout_scores(trainer, eval_prompts, noises)
    result = {
        "label": label, "overrides": overrides, "iterations": iterations, "seed": seed,
        "eff_group": records[-1]["eff_group"], "eff_steps": records[-1]["eff_steps"],
        "nfe_per_prompt_mean": statistics.fmean(r["nfe"] for r in records) / params.train.prompts_per_iteration,
        "window_starts": [int(r["window_start"]) for r in records],
        "iteration_time_median": statistics.median(times),
        "train_reward_mean": statistics.fmean(r["reward_mean"] for r in records),
        "heldout_start": before["reward"], "heldout_final": after["reward"], "signal": tree_signal_by_start(records),
    }
    if "accuracy" in after:  # the world: the strict accuracy too
        result.update(heldout_accuracy_start=before["accuracy"], heldout_accuracy_final=after["accuracy"])
    del trainer
    release_memory()
    shutil.rmtree(out, ignore_errors=True)
    return result


def run_ablations(setup: BenchSetup, train_prompts: Sequence[str], eval_prompts: Sequence[str], iterations: int,
                  seed: int = 0, which: Sequence[str] = ("shape", "window"), **kwargs) -> dict[str, list[dict]]:
    """Every configuration of ABLATIONS in the tables named by `which`; {table: [results]}."""
    tables: dict[str, list[dict]] = {}
    done: list[dict] = []
    for table, label, overrides in ABLATIONS:
        if table not in which:
            continue
        same = [r for r in done if r["overrides"] == overrides]  # the default sits in both tables: run it once
        result = {**same[0], "label": label} if same else \
            run_ablation(setup, label, overrides, train_prompts, eval_prompts, iterations, seed, **kwargs)
        done.append(result)
        tables.setdefault(table, []).append(result)
    return tables
