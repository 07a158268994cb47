"""The harness: params for each algorithm at equal images per prompt, trainers, and the iteration-cost measurement.

Every algorithm runs the same `TreeGRPOTrainer` recipe (only `train.algorithm` and the `baselines` section differ),
on the same model, prompts, reward and NFE, with `baselines.group_size = k^d * T` so the baselines make as many
images per prompt as TreeGRPO. Figures come from two places and are checked against each other: the trainer's own
(`time_*`, `nfe`, `parents_trained`, ...) and the benchmark's probe on the transformer (`ForwardProbe`).

Notation: N = num_inference_steps, k = branching, d = depth, s = window start, T = trees per prompt,
G = group size (trajectories per prompt), B = prompts per iteration.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from treegrpo.bench.flops import CallFlops, tflops
from treegrpo.bench.probe import ForwardProbe, bare_forward_seconds
from treegrpo.config.base import set_dotted
from treegrpo.config.train import ALGORITHMS
from treegrpo.core.tree import tree_nfe
from treegrpo.training.metrics import PeakMemory

log = logging.getLogger(__name__)
SIZES = ("tiny", "small", "sd35m", "world")
PHASES = ("time_sampling", "time_decoding", "time_reward", "time_training")
# what each model size changes in params.yaml (tiny and small run the embedded default's 64 px, float32)
SIZE_OVERRIDES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {},
    "world": {},  # the embedded default's own model, `treegrpo pretrain`'s output (its reward: composition by default)
    # SD3.5-Medium's setting in the paper: 512 px, bf16, T5 sequence 256
    "sd35m": {"model.resolution": 512, "model.dtype": "bfloat16", "model.max_sequence_length": 256,
              "train.mixed_precision": "bf16"},
}


@dataclass(frozen=True)
class BenchSetup:
    """What every part of the benchmark shares.

    Args:
        size: the model: tiny | small (random-weight SD3.5 architectures on the CPU) | sd35m (SD3.5-Medium's
            architecture, random weights; needs a GPU) | world (the pretrained world model, `pretrain.output`).
        model_dir: where that pipeline is (built there when missing; world: never built here).
        base_params: params.yaml as parsed YAML (a plain mapping); the benchmark overrides keys of it.
        device: auto | cpu | cuda[:N].
        reward: the reward trained and evaluated (a weight-free one needs no download).
        prompts_per_iteration: B; None keeps params.yaml's.
        overrides: more dotted keys, e.g. {"sampler.max_batch": 32}.
        threads: torch's intra-op CPU threads (None: torch's default). On a CPU shared with other work, 1 can be
            many times faster than 2: threads that wait at every parallel region for a descheduled sibling.
    """

    size: str
    model_dir: Path
    base_params: dict[str, Any]
    device: str = "auto"
    reward: str = "jpeg_compressibility"
    prompts_per_iteration: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def apply_threads(self) -> None:
        """Set torch's CPU threads in this process (a spawned process starts with torch's default)."""
        if self.threads:
            torch.set_num_threads(self.threads)


def ensure_model(size: str, model_dir: str | Path, seed: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """The benchmark's pipeline at `model_dir`, built there (random weights, offline) when missing.

    `tokenizer_dir`: sd35m only, a pipeline folder whose tokenizers to reuse (see `treegrpo.bench.sd35m`).
    """
    model_dir = Path(model_dir)
    if (model_dir / "model_index.json").is_file():
        return model_dir
    if size not in SIZES:
        raise ValueError(f"bench size={size!r}: must be one of {', '.join(SIZES)}")
    if size == "world":  # pretrained, not built: minutes of `treegrpo pretrain`, which DVC caches
        from treegrpo.utils.errors import UserError

        raise UserError(f"--size world reads the pretrained world model, and {model_dir} has none: run "
                        "`dvc repro pretrain` (or `make run`) first, or pass --model-dir")
    log.info("building the %s pipeline at %s", size, model_dir)
    if size == "sd35m":
        from treegrpo.bench.sd35m import save_sd35m_pipeline

        return save_sd35m_pipeline(model_dir, seed=seed, tokenizer_dir=tokenizer_dir)
    from treegrpo.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(model_dir, size=size, seed=seed)


def bench_params(setup: BenchSetup, algorithm: str, out_dir: str | Path, overrides: dict[str, Any] | None = None):
    """Params for one run of `algorithm`: params.yaml, the size's and the caller's overrides, equal images per prompt.

    Returns:
        the validated `Params`.
    """
    from treegrpo.config import parse_params

    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r}: must be one of {', '.join(ALGORITHMS)}")
    raw = copy.deepcopy(setup.base_params)
    if "baselines" not in raw and algorithm != "treegrpo":
        raise KeyError("params.yaml has no `baselines` section: this checkout cannot run the baselines")
    values: dict[str, Any] = {
        "model.pretrained": str(setup.model_dir), "model.device": setup.device, "reward.device": setup.device,
        "train.algorithm": algorithm, "train.output_dir": str(out_dir), "reward.weights": {setup.reward: 1.0},
        "train.sample_every": 0,  # no PNG grids inside measured iterations
        **SIZE_OVERRIDES[setup.size], **setup.overrides, **(overrides or {}),
    }
    if setup.prompts_per_iteration is not None:
        values.setdefault("train.prompts_per_iteration", setup.prompts_per_iteration)
    for dotted, value in values.items():
        set_dotted(raw, dotted, value, "bench override")
    s = raw["sampler"]
    if "baselines" in raw and "baselines.group_size" not in values:  # the same images per prompt as TreeGRPO
        raw["baselines"]["group_size"] = s["trees_per_prompt"] * s["branching"] ** s["depth"]
    return parse_params(raw, "params.yaml + bench overrides")


def make_trainer(params, prompts: Sequence[str]):
    """A `TreeGRPOTrainer` on `prompts` with the one reward of `params.reward.weights`, set up."""
    from treegrpo.recipes.trainer import TreeGRPOTrainer
    from treegrpo.rewards.registry import build_rewards

    trainer = TreeGRPOTrainer(params, list(prompts), build_rewards(params.reward))
    trainer.setup()
    return trainer


def transformer_of(trainer) -> torch.nn.Module:
    return trainer.accelerator.unwrap_model(trainer.model)


def attach_probe(trainer) -> ForwardProbe:
    """A probe on the trainer's transformer; the trainer's sampling and update phases label their calls.

    The labels come from the trainer's phase hook (`trainer.phase_fn`: it runs its "sampling" and "training" phases
    inside `probe.phase`), so the probe knows which phase made each call without reading the trainer's timers.
    """
    probe = ForwardProbe(transformer_of(trainer), cfg=trainer.params.sampler.guidance_scale > 1.0)
    trainer.phase_fn = probe.phase
    return probe


def expected_nfe(params, window_start: int) -> int:
    """SPEC §4's count for TreeGRPO, B * T * tree_nfe(N, k, d, s); B * G * N for a baseline (every trajectory
    takes all N steps). No CFG doubling."""
    s, b = params.sampler, params.train.prompts_per_iteration
    if params.train.algorithm == "treegrpo":
        return b * s.trees_per_prompt * tree_nfe(s.num_inference_steps, s.branching, s.depth, window_start)
    return b * params.baselines.group_size * s.num_inference_steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_iteration(trainer, it: int, probe: ForwardProbe, memory: PeakMemory) -> dict[str, float]:
    """One trainer iteration with the benchmark's own clocks (wall and process CPU time), counts and peak memory."""
    probe.reset()
    device = trainer.accelerator.device
    memory_start = memory.start()
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    figures = trainer.iteration(it)
    _sync(device)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    record = {key: float(figures.get(key, float("nan"))) for key in (*PHASES, "images", "eff_group", "eff_steps",
                                                                      "parents_trained", "edges_trained",
                                                                      "reward_mean", "window_start")}
    record.update(
        iteration=float(it), time_iteration=elapsed, cpu_iteration=cpu,
        cpu_sampling=probe.cpu_seconds.get("sampling", 0.0), cpu_training=probe.cpu_seconds.get("training", 0.0),
        peak_memory_mb=memory.read(), start_memory_mb=memory_start, nfe_trainer=float(figures["nfe"]),
        nfe_counted=float(probe.nodes("sampling", grad=False)),
        grad_forwards=float(probe.nodes("training", grad=True)),
        extra_forwards=float(probe.nodes("training", grad=False) + probe.nodes("other")),
        nfe_expected=float(expected_nfe(trainer.params, int(figures["window_start"]))),
        transformer_calls=float(len(probe.shapes("sampling"))),
    )
    record["working_memory_mb"] = record["peak_memory_mb"] - memory_start  # what the iteration itself added
    record.update({key: float(value) for key, value in figures.items() if key.startswith("tree/")})
    return record


def add_flops(record: dict[str, float], probe: ForwardProbe, counter: CallFlops) -> None:
    """The FLOPs of the iteration's transformer calls (`CallFlops`: torch's counter on a replay of each distinct
    call shape) and the achieved TFLOP/s of sampling, of the update and of both, on the trainer's phase times.
    Call right after `timed_iteration`, before anything else calls the transformer."""
    calls = {phase: [(c.rows, c.text_tokens, c.grad) for c in probe.calls if c.phase == phase]
             for phase in ("sampling", "training")}  # a snapshot: the replays below call the transformer too
    sampling, training = counter.total(calls["sampling"]), counter.total(calls["training"])
    record.update(flops_sampling=float(sampling), flops_training=float(training),
                  tflops_sampling=tflops(sampling, record["time_sampling"]),
                  tflops_training=tflops(training, record["time_training"]),
                  tflops_total=tflops(sampling + training, record["time_sampling"] + record["time_training"]),
                  # on process CPU time (all threads): on a shared CPU, what the wall clock's load would hide
                  tflops_sampling_cpu=tflops(sampling, record["cpu_sampling"]),
                  tflops_training_cpu=tflops(training, record["cpu_training"]),
                  tflops_total_cpu=tflops(sampling + training, record["cpu_sampling"] + record["cpu_training"]))


def tree_signal_by_start(records: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """The `tree/...` figures of iteration records, averaged over the iterations that had the same window start:
    [{"window_start", "iterations", "tree/...": mean}], by start. Where a prompt's leaves tie, its compute trained
    nothing; this says at which window starts that happens."""
    by_start: dict[int, list[dict[str, float]]] = {}
    for record in records:
        by_start.setdefault(int(record["window_start"]), []).append(record)
    rows = []
    for start, group in sorted(by_start.items()):
        keys = sorted({k for r in group for k in r if k.startswith("tree/")})
        rows.append({"window_start": start, "iterations": len(group),
                     **{k: statistics.fmean(r[k] for r in group if k in r) for k in keys}})
    return rows


def sampler_limit(trainer, probe: ForwardProbe, record: dict[str, float], repeats: int) -> None:
    """Replay the iteration's sampling calls as bare forwards right after it (so both see the same machine load);
    add the limit and the sampler's ratio to it, on the wall clock and in CPU time, to `record`."""
    limit = bare_forward_seconds(transformer_of(trainer), probe.shapes("sampling"), trainer.policy.latent_shape,
                                 trainer.policy.dtype, trainer.accelerator.autocast, repeats=repeats)
    record.update(limit_wall=limit.wall, limit_cpu=limit.cpu,
                  sampler_ratio=record["time_sampling"] / limit.wall if limit.wall > 0 else math.nan,
                  sampler_ratio_cpu=record["cpu_sampling"] / limit.cpu if limit.cpu > 0 else math.nan)


def measure_cost(setup: BenchSetup, algorithm: str, prompts: Sequence[str], iterations: int = 3, warmup: int = 1,
                 limit_repeats: int = 2, seed: int | None = None, work_dir: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Iteration cost of `algorithm`: `warmup` iterations discarded, then the median of `iterations`; after each
    measured iteration, the sampler against its bare-forward limit (`sampler_limit`).

    Returns:
        {"algorithm", "median": {figure: median over the measured iterations}, "iterations": [records],
         "sampler_ratio", "sampler_limit_s", "batch_histogram", "memory_kind", "settings", "signal"
         (`tree_signal_by_start` of the measured iterations)}. A record has the FLOPs and TFLOP/s of `add_flops`.
    """
    setup.apply_threads()
    over = {"sampler.window.strategy": "fixed", "sampler.window.start": 0, **(overrides or {})}
    if seed is not None:
        over["train.seed"] = seed
    work = Path(work_dir or tempfile.mkdtemp(prefix="bench-cost-"))
    out = work / f"cost-{algorithm}"
    shutil.rmtree(out, ignore_errors=True)
    params = bench_params(setup, algorithm, out, over)
    trainer = make_trainer(params, prompts)
    probe = attach_probe(trainer)
    memory = PeakMemory(trainer.accelerator.device)
    counter = CallFlops(transformer_of(trainer), trainer.policy.latent_shape, trainer.policy.dtype,
                        trainer.accelerator.autocast)
    records = []
    for it in range(warmup + iterations):
        record = timed_iteration(trainer, it, probe, memory)
        log.info("%s iteration %d: %.2f s (sampling %.2f, training %.2f)", algorithm, it, record["time_iteration"],
                 record["time_sampling"], record["time_training"])
        if it >= warmup:
            add_flops(record, probe, counter)
            sampler_limit(trainer, probe, record, limit_repeats)
            record.update(tflops_limit=tflops(record["flops_sampling"], record["limit_wall"]),
                          tflops_limit_cpu=tflops(record["flops_sampling"], record["limit_cpu"]))
            records.append(record)
    medians = {key: statistics.median(r[key] for r in records) for key in records[0]}
    result = {
        "algorithm": algorithm, "median": medians, "iterations": records, "sampler_ratio": medians["sampler_ratio"],
        "sampler_ratio_cpu": medians["sampler_ratio_cpu"], "sampler_limit_s": medians["limit_wall"],
        "batch_histogram": probe.batch_histogram("sampling"), "memory_kind": memory.kind,
        "settings": _settings(params), "signal": tree_signal_by_start(records),
    }
    probe.detach()
    del trainer, probe
    release_memory()
    shutil.rmtree(out, ignore_errors=True)
    return result


def _settings(params) -> dict[str, Any]:
    from treegrpo.config import to_dict

    plain = to_dict(params)
    keep = {"sampler": plain["sampler"], "train": {k: plain["train"][k] for k in (
        "algorithm", "seed", "prompts_per_iteration", "micro_batch", "inner_epochs", "mixed_precision",
        "gradient_checkpointing", "recompute_old_log_prob")}, "model": {k: plain["model"][k] for k in (
            "dtype", "resolution", "max_sequence_length", "compile", "attention_backend") if k in plain["model"]}}
    if "baselines" in plain:
        keep["baselines"] = plain["baselines"]
    return keep


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_isolated(fn: Callable[..., Any], /, *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)` in a fresh (spawned) process: its peak memory and allocator are its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()
