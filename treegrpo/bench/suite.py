"""The benchmark's parts as functions that return JSON-ready dicts (what `treegrpo bench` runs).

- `run_cost`: iteration cost of each algorithm and the sampler against its bare-forward limit (harness.py).
- `run_learning`: every algorithm for the same wall-clock budget from the same seeds (learning.py).
- `run_ablations`: TreeGRPO's tree shapes and window placements (ablations.py).
- `run_gradient`: the policy gradient's signal-to-noise ratio per prompt group, per tree shape (gradient.py).
Each part records the device, the model and the command that produced it.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from treegrpo.bench import ablations, gradient, learning
from treegrpo.bench.flops import peak_bf16
from treegrpo.bench.harness import BenchSetup, measure_cost, run_isolated
from treegrpo.bench.probe import device_info

log = logging.getLogger(__name__)


def command_line() -> str:
    return "treegrpo " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "treegrpo bench"


def transformer_params(model_dir: str | Path) -> int:
    """Parameter count of the pipeline's transformer, from its config (built on the meta device: no memory)."""
    from diffusers import SD3Transformer2DModel

    config = SD3Transformer2DModel.load_config(Path(model_dir) / "transformer")
    with torch.device("meta"):
        model = SD3Transformer2DModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def resolved_device(setup: BenchSetup) -> torch.device:
    from treegrpo.models.pipeline import resolve_device

    return resolve_device(setup.device)


def _part(setup: BenchSetup, **fields: Any) -> dict[str, Any]:
    return {"size": setup.size, "device": device_info(resolved_device(setup)), "command": command_line(),
            "transformer_params": transformer_params(setup.model_dir), "reward": setup.reward, **fields}


def load_prompt_sets(base_params: dict[str, Any], eval_count: int | None = 8) -> tuple[list[str], list[str]]:
    """(train, held-out) prompts: the validated sets when `treegrpo validate` has run, else the bundled sample split
    by position (every fourth prompt held out). At most `eval_count` held-out prompts (None: all)."""
    from treegrpo.data import load_prompts

    validated = Path(base_params["data"]["validated_dir"])
    if (validated / "train.parquet").is_file() and (validated / "eval.parquet").is_file():
        train, held = load_prompts(validated / "train.parquet"), load_prompts(validated / "eval.parquet")
    else:
        sample = Path(base_params["data"]["path"])
        rows = [json.loads(line)["prompt"] for line in sample.read_text().splitlines() if line.strip()]
        train, held = [p for i, p in enumerate(rows) if i % 4], rows[::4]
    return train, held if eval_count is None else held[:eval_count]


def run_cost(setup: BenchSetup, algorithms: Sequence[str], prompts: Sequence[str], iterations: int, warmup: int,
             limit_repeats: int = 2, isolate: bool = True, work_dir: str | Path = "outputs/bench/work",
             overrides: dict[str, Any] | None = None, peak_tflops: float | None = None) -> dict[str, Any]:
    """The cost part: `measure_cost` per algorithm (each in a fresh process when `isolate`), and the device's
    dense bf16 peak for the MFU (`peak_tflops` if given, else `flops.PEAK_BF16_TFLOPS` by GPU name; none on a
    CPU)."""
    results = []
    for algo in algorithms:
        log.info("cost: %s", algo)
        kwargs = {"iterations": iterations, "warmup": warmup, "limit_repeats": limit_repeats, "work_dir": work_dir,
                  "overrides": overrides}
        if isolate:
            results.append(run_isolated(measure_cost, setup, algo, list(prompts), **kwargs))
        else:
            results.append(measure_cost(setup, algo, prompts, **kwargs))
    part = _part(setup, iterations=iterations, warmup=warmup, isolated=isolate, results=results)
    peak = peak_bf16(part["device"].get("gpu"))
    if peak_tflops:
        part.update(peak_bf16_tflops=peak_tflops, peak_source="--peak-tflops")
    elif peak:
        part.update(peak_bf16_tflops=peak.tflops, peak_source=peak.source)
    return part


def run_learning(setup: BenchSetup, algorithms: Sequence[str], seeds: Sequence[int], train_prompts: Sequence[str],
                 eval_prompts: Sequence[str], budget_s: float, eval_points: int = 6, noises: int = 2,
                 work_dir: str | Path = "outputs/bench/work") -> dict[str, Any]:
    """The learning part: seeds outermost, so slow drifts of the machine's load hit every algorithm alike."""
    runs = []
    for seed in seeds:
        for algo in algorithms:
            log.info("learning: %s seed %d", algo, seed)
            runs.append(learning.train_for_budget(setup, algo, seed, train_prompts, eval_prompts, budget_s,
                                                  eval_points, noises, work_dir))
    return _part(setup, budget_s=budget_s, seeds=list(seeds), eval_prompts=len(eval_prompts), noises=noises,
                 runs=runs, summary=learning.summarise(runs))


def run_ablations(setup: BenchSetup, train_prompts: Sequence[str], eval_prompts: Sequence[str], iterations: int,
                  seed: int = 0, noises: int = 2, work_dir: str | Path = "outputs/bench/work") -> dict[str, Any]:
    tables = ablations.run_ablations(setup, train_prompts, eval_prompts, iterations, seed, noises=noises,
                                     work_dir=work_dir)
    return _part(setup, iterations=iterations, seed=seed, tables=tables)


def run_gradient(setup: BenchSetup, train_prompts: Sequence[str], groups: int = 32, seed: int = 0,
                 configs: Sequence[tuple[str, dict[str, Any]]] | None = None,
                 work_dir: str | Path = "outputs/bench/work") -> dict[str, Any]:
    """The gradient part: `gradient.run_gradient` (params.yaml's tree shape and a few others when `configs` is
    None), at least `groups` prompt groups each."""
    rows = gradient.run_gradient(setup, train_prompts, configs, groups, seed, work_dir)
    return _part(setup, groups=groups, seed=seed, rows=rows)
