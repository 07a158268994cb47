"""Learning efficiency: every algorithm trained for the same wall-clock budget from the same seeds, scored on
held-out prompts (SPEC §7; the paper's Figure 1).

The clock counts training iterations only (evaluations are paused out of it). The held-out score is the reward of
ODE samples (noise 0: the policy's mean behaviour) from fixed noise on fixed held-out prompts, the same for every
algorithm, so curves are comparable even though each algorithm samples its training images differently (a GRPO
trajectory is noisy at every step, a tree only in its window).

Notation: E = held-out prompts, V = noises per held-out prompt.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from treegrpo.bench.harness import BenchSetup, bench_params, make_trainer, release_memory, tree_signal_by_start

log = logging.getLogger(__name__)
EVAL_SEED = 123  # the held-out noise: the same for every algorithm, seed and evaluation


@torch.no_grad()
def heldout_scores(trainer, prompts: Sequence[str], noises: int = 2, seed: int = EVAL_SEED) -> dict[str, float]:
    """Held-out figures of the trainer's current policy: ODE samples of `prompts`, `noises` fixed noises each.

    Args:
        trainer: a set-up `TreeGRPOTrainer`.
        prompts: E held-out prompts.
        noises: V.
        seed: the noise seed.
    Returns:
        {"reward": the mean over the E * V images of the trainer's (weighted) reward}, and, when it trains on
        `composition` (the world), {"accuracy": the fraction of those images that meet every constraint}.
    """
    from treegrpo.core.tree import root_latents, sample_trees
    from treegrpo.rewards.composition import CompositionAccuracy

    p, acc, policy = trainer.params, trainer.accelerator, trainer.policy
    embeds = policy.encode(list(prompts))
    model = policy.transformer
    was_training = model.training
    model.eval()
    velocity = policy.velocity(embeds)
    roots, root_prompt = root_latents(range(len(prompts)), noises, policy.latent_shape, seed, 0, device=acc.device)
    with acc.autocast():  # a depth-1 "tree" with one child and noise 0 is the plain ODE sampler
        samples = sample_trees(velocity, roots, root_prompt, policy.sigmas, 0, 1, 1, 0.0, None,
                               p.sampler.max_batch)
    images = policy.decode(samples.leaf_latents)  # (E * V, 3, H, W)
    leaf_prompts = [prompts[i] for i in samples.leaf_prompt.tolist()]
    scores = trainer.score(images, leaf_prompts)  # (R, E * V)
    model.train(was_training)
    figures = {"reward": float(trainer.weighted_reward(scores).mean())}
    if "composition" in trainer.reward_names:
        figures["accuracy"] = float(CompositionAccuracy()(images, leaf_prompts).mean())
    return figures


def heldout_reward(trainer, prompts: Sequence[str], noises: int = 2, seed: int = EVAL_SEED) -> float:
    """`heldout_scores`' reward alone."""
    return heldout_scores(trainer, prompts, noises, seed)["reward"]


def train_for_budget(setup: BenchSetup, algorithm: str, seed: int, train_prompts: Sequence[str],
                     eval_prompts: Sequence[str], budget_s: float, eval_points: int = 6, noises: int = 2,
                     work_dir: str | Path = "outputs/bench/work", max_iterations: int = 10_000,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `algorithm` from `seed` until `budget_s` seconds of iterations have run; evaluate on the way.

    Evaluations happen before training and after the first iteration that passes each of `eval_points` evenly
    spaced times, and at the end.

    Returns:
        {"algorithm", "seed", "points": [{"time", "images", "iteration", "reward"}], "iteration_times": [...],
         "train_reward": [...], "iterations": int, "signal": `tree_signal_by_start` of its iterations}.
    """
    out = Path(work_dir) / f"learn-{algorithm}-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    params = bench_params(setup, algorithm, out, {"train.seed": seed, **(overrides or {})})
    trainer = make_trainer(params, train_prompts)
    device = trainer.accelerator.device
    points = [{"time": 0.0, "images": 0.0, "iteration": 0, **heldout_scores(trainer, eval_prompts, noises)}]
    elapsed, images, iteration_times, train_reward, signal = 0.0, 0.0, [], [], []
    marks = [budget_s * (i + 1) / eval_points for i in range(eval_points)]
    it = 0
    while elapsed < budget_s and it < max_iterations:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        figures = trainer.iteration(it)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        iteration_times.append(time.perf_counter() - start)
        elapsed += iteration_times[-1]
        images += figures["images"]
        train_reward.append(figures.get("reward_mean", float("nan")))
        signal.append({k: v for k, v in figures.items() if k.startswith("tree/") or k == "window_start"})
        it += 1
        if marks and (elapsed >= marks[0] or elapsed >= budget_s):
            while marks and elapsed >= marks[0]:
                marks.pop(0)
            points.append({"time": elapsed, "images": images, "iteration": it,
                           **heldout_scores(trainer, eval_prompts, noises)})
            log.info("%s seed %d: %.1f s, %d iterations, held-out reward %.4f", algorithm, seed, elapsed, it,
                     points[-1]["reward"])
    if points[-1]["iteration"] != it:
        points.append({"time": elapsed, "images": images, "iteration": it,
                       **heldout_scores(trainer, eval_prompts, noises)})
    del trainer
    release_memory()
    shutil.rmtree(out, ignore_errors=True)
    return {"algorithm": algorithm, "seed": seed, "points": points, "iteration_times": iteration_times,
            "train_reward": train_reward, "iterations": it, "signal": tree_signal_by_start(signal)}


def step_value(points: list[dict[str, float]], x: float, axis: str = "time", figure: str = "reward") -> float:
    """The held-out `figure` known at `x` on `axis` (time or images): the last evaluation at or before `x`."""
    value = points[0][figure]
    for point in points:
        if point[axis] <= x:
            value = point[figure]
    return value


def mean_curve(runs: list[dict[str, Any]], grid: list[float], axis: str = "time",
               figure: str = "reward") -> list[float]:
    """The seeds' mean held-out `figure` on `grid` (step-hold between evaluations)."""
    return [statistics.fmean(step_value(r["points"], x, axis, figure) for r in runs) for x in grid]


def time_to_reach(runs: list[dict[str, Any]], target: float, horizon: float, steps: int = 400,
                  axis: str = "time") -> float | None:
    """The first time (or images: `axis`) at which the seeds' mean held-out reward reaches `target`; None if it
    never does."""
    grid = [horizon * i / steps for i in range(steps + 1)]
    for x, value in zip(grid, mean_curve(runs, grid, axis), strict=True):
        if value >= target:
            return x
    return None


def summarise(runs: list[dict[str, Any]], baseline: str = "grpo") -> dict[str, Any]:
    """Per algorithm: start and final held-out reward (mean, min, max over seeds), median iteration time, images,
    and the time to reach the baseline's final reward (seed means)."""
    by_algo: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_algo.setdefault(run["algorithm"], []).append(run)
    horizon = max(r["points"][-1]["time"] for r in runs)
    image_horizon = max(r["points"][-1]["images"] for r in runs)
    # equal images sampled (the paper's "same training samples"): every algorithm read where the one that sampled
    # the fewest images in the budget stopped
    common_images = min(statistics.fmean(r["points"][-1]["images"] for r in group) for group in by_algo.values())
    summary: dict[str, Any] = {}
    for algo, group in by_algo.items():
        finals = [r["points"][-1]["reward"] for r in group]
        times = [t for r in group for t in r["iteration_times"]]
        summary[algo] = {
            "seeds": [r["seed"] for r in group], "start_reward": statistics.fmean(r["points"][0]["reward"]
                                                                               for r in group),
            "final_reward": statistics.fmean(finals), "final_reward_min": min(finals), "final_reward_max": max(finals),
            "iteration_time_median": statistics.median(times) if times else float("nan"),
            "iterations_mean": statistics.fmean(r["iterations"] for r in group),
            "images_mean": statistics.fmean(r["points"][-1]["images"] for r in group),
            "train_time_mean": statistics.fmean(r["points"][-1]["time"] for r in group),
            "common_images": common_images,
            "reward_at_common_images": mean_curve(group, [common_images], "images")[0],
        }
        if all("accuracy" in r["points"][0] for r in group):
            summary[algo].update(
                start_accuracy=statistics.fmean(r["points"][0]["accuracy"] for r in group),
                final_accuracy=statistics.fmean(r["points"][-1]["accuracy"] for r in group),
                accuracy_at_common_images=mean_curve(group, [common_images], "images", "accuracy")[0])
    if baseline in summary:
        target = summary[baseline]["final_reward"]
        for algo, group in by_algo.items():
            reach = time_to_reach(group, target, horizon)
            summary[algo]["time_to_baseline_final"] = reach
            summary[algo]["images_to_baseline_final"] = time_to_reach(group, target, image_horizon, axis="images")
            summary[algo]["baseline_final_reward"] = target
    return summary
