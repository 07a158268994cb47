"""Does the policy gradient point uphill? Its signal-to-noise ratio per prompt group, for a few tree shapes.

At the LoRA's current weights (no optimizer step), each prompt of an iteration gives its own gradient g_i: that of
the loss of its trees' trained edges alone. Over M such groups `treegrpo.core.signal.gradient_snr` estimates the
SNR per group and b = 1 / (3 SNR), the groups an optimizer step must average for a gradient with cosine ~0.5 to the
true one: when b is far above `train.prompts_per_iteration`, the reward (or the tree's shape) gives the update
little to follow. Each shape is timed, so `snr_per_second` says which shape buys signal cheapest.

Notation: B = prompts per iteration, M = B * reps prompt groups, D = trained (LoRA) parameters, k = branching,
d = depth.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from treegrpo.bench.harness import BenchSetup, bench_params, make_trainer, release_memory
from treegrpo.core.signal import gradient_snr
from treegrpo.training.algorithms import iteration_shape

log = logging.getLogger(__name__)
EXTRA_SHAPES = ((2, 2), (2, 1), (3, 3))  # (k, d) measured beside params.yaml's own shape


class IterationGradients(NamedTuple):
    grads: Tensor  # (B, D) float32 on the CPU: the LoRA gradient of each prompt group's edges alone
    seconds: float  # wall time of the iteration's sampling, decoding, scoring, advantages and B backward passes
    window_start: int
    reward_mean: float  # the mean (weighted) leaf reward


def group_gradient(trainer, samples, parents: Tensor, edge_adv: Tensor, old: Tensor, velocity,
                   weights: Sequence[torch.nn.Parameter]) -> Tensor:
    """(D,) the gradient of the loss (and KL term) of the child edges of `parents` alone, in `train.micro_batch`
    micro-batches scaled as `TreeGRPOTrainer.policy_step` scales them (one mean over the group's parents)."""
    t = trainer.params.train
    trainer.optimizer.zero_grad(set_to_none=True)
    for idx in parents.split(t.micro_batch):
        out, kl = trainer.edge_loss(samples, idx, edge_adv, old, velocity)
        scale = len(idx) / len(parents) if t.loss_reduction == "mean" else 1.0
        ((out.loss + t.kl_beta * kl) * scale).backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in weights]).cpu()


def group_gradients(trainer, it: int) -> IterationGradients:
    """Iteration `it`'s trees, sampled and scored as `TreeGRPOTrainer.iteration` does, and one LoRA gradient per
    prompt group at the current weights. No optimizer step; the gradients are zeroed before each group and after the
    last (the trainer's window state moves on as in training).

    Args:
        trainer: a set-up `TreeGRPOTrainer` (one process).
        it: the iteration index (it draws the prompts, the window and the noise).

    Returns:
        IterationGradients, `grads` (B, D) in the order of `trainer.prompt_batch(it)`.
    """
    params, start = trainer.params, time.perf_counter()
    keys = trainer.prompt_batch(it)
    prompts = [trainer.prompts[k] for k in keys]
    shape, trainer.state.window = iteration_shape(params, it, trainer.schedule, trainer.state.window)
    embeds = trainer.policy.encode(prompts)
    samples = trainer.sample_batch(it, keys, embeds, shape)
    images = trainer.policy.decode(samples.leaf_latents)  # (L, 3, H, W)
    rewards = trainer.score(images, [prompts[i] for i in samples.leaf_prompt.tolist()])  # (R, L)
    edge_adv = trainer.advantages(samples, rewards, shape.normalization)  # (P, k)
    velocity = trainer.policy.velocity(embeds, trainer.model)
    old = trainer.recompute_log_probs(samples, velocity) if params.train.recompute_old_log_prob \
        else samples.child_log_prob  # (P, k)
    rows = trainer.trained_rows(samples, shape.trained_levels)  # (P,)
    weights = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.model.train()
    grads = [group_gradient(trainer, samples, (rows & (samples.parent_prompt == g)).nonzero().flatten(), edge_adv,
                            old, velocity, weights) for g in range(len(prompts))]
    trainer.optimizer.zero_grad(set_to_none=True)
    return IterationGradients(torch.stack(grads), time.perf_counter() - start, int(samples.window_start),
                              float(trainer.weighted_reward(rewards).mean()))


def default_configs(setup: BenchSetup) -> list[tuple[str, dict[str, Any]]]:
    """params.yaml's own tree shape (with the setup's overrides), then each of EXTRA_SHAPES that differs from it:
    [(label, overrides)]."""
    sampler = setup.base_params["sampler"]
    k = setup.overrides.get("sampler.branching", sampler["branching"])
    d = setup.overrides.get("sampler.depth", sampler["depth"])
    configs: list[tuple[str, dict[str, Any]]] = [(f"k={k} d={d} (params)", {})]
    for kk, dd in EXTRA_SHAPES:
        if (kk, dd) != (k, d):
            configs.append((f"k={kk} d={dd}", {"sampler.branching": kk, "sampler.depth": dd}))
    return configs


def measure_gradient(setup: BenchSetup, label: str, overrides: dict[str, Any], prompts: Sequence[str],
                     groups: int = 32, seed: int = 0, work_dir: str | Path = "outputs/bench/work") -> dict[str, Any]:
    """One configuration's gradient SNR over at least `groups` prompt groups (iterations 0, 1, ... of B prompts).

    Returns:
        a JSON-ready row: config, overrides, prompts_per_iteration, iterations, groups (M = B * iterations),
        parameters (D), snr_per_group, signal, noise, split_half_cos, groups_for_cos_half, seconds_per_group,
        snr_per_second, zero_gradient_groups (groups whose gradient is exactly 0: every leaf of the prompt tied),
        window_starts, reward_mean.
    """
    setup.apply_threads()
    out = Path(work_dir) / "gradient"
    shutil.rmtree(out, ignore_errors=True)
    params = bench_params(setup, "treegrpo", out, {"train.seed": seed, **overrides})
    b = params.train.prompts_per_iteration
    reps = max(1, math.ceil(groups / b))
    if b * reps < 2:
        raise ValueError(f"groups={groups} with {b} prompt(s) per iteration: the SNR needs >= 2 prompt groups")
    trainer = make_trainer(params, prompts)
    its = [group_gradients(trainer, it) for it in range(reps)]
    grads = torch.cat([r.grads for r in its])  # (M, D)
    snr = gradient_snr(grads)
    seconds = sum(r.seconds for r in its) / len(grads)
    log.info("gradient %s: %d groups, SNR per group %.3g, %.2f s per group", label, len(grads), snr.snr_per_group,
             seconds)
    row = {"config": label, "overrides": overrides, "prompts_per_iteration": b, "iterations": reps,
           "groups": len(grads), "parameters": grads.shape[1], "snr_per_group": snr.snr_per_group,
           "signal": snr.signal, "noise": snr.noise, "split_half_cos": snr.split_half_cos,
           "groups_for_cos_half": snr.groups_for_cos_half, "seconds_per_group": seconds,
           "snr_per_second": snr.snr_per_group / seconds, "zero_gradient_groups": snr.zero_groups,
           "window_starts": [r.window_start for r in its],
           "reward_mean": sum(r.reward_mean for r in its) / len(its)}
    del trainer, grads
    release_memory()
    shutil.rmtree(out, ignore_errors=True)
    return row


def run_gradient(setup: BenchSetup, prompts: Sequence[str],
                 configs: Sequence[tuple[str, dict[str, Any]]] | None = None, groups: int = 32, seed: int = 0,
                 work_dir: str | Path = "outputs/bench/work") -> list[dict[str, Any]]:
    """`measure_gradient` for each (label, overrides) of `configs` (None: `default_configs`), all at the setup's
    reward and seed; the rows, in order."""
    return [measure_gradient(setup, label, over, prompts, groups, seed, work_dir)
            for label, over in (configs if configs is not None else default_configs(setup))]


def _n(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else "∞" if math.isinf(value) else f"{value:.{digits}g}"


def gradient_section(part: dict[str, Any]) -> list[str]:
    """The report's table of the gradient part, and one reading per configuration."""
    lines = ["## Does the gradient point uphill?", "",
             f"Reward `{part['reward']}`. Per prompt group (one prompt's trees), the LoRA gradient of its edges' loss "
             "at the initial weights; over the M groups: noise = trace of their covariance, signal = ||mean||² − "
             "noise / M (unbiased for ||E g||²), SNR = signal / noise. A mean of b groups has cosine² ≈ b SNR / (1 "
             "+ b SNR) to the true gradient: cosine 0.5 at b = 1 / (3 SNR). Split-half cos: the mean gradients of "
             "the two halves of the groups (≈ 0 when there is no signal). Seconds: sampling, scoring and the "
             "backward passes, per group.", "",
             "| config | groups | SNR per group | split-half cos | groups for cos 0.5 | s per group | SNR per s | "
             "zero-gradient groups |", "|---|---|---|---|---|---|---|---|"]
    rows = part["rows"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['groups']} | {_n(r['snr_per_group'])} | {_n(r['split_half_cos'], 2)} | "
                     f"{_n(r['groups_for_cos_half'])} | {_n(r['seconds_per_group'])} | {_n(r['snr_per_second'])} | "
                     f"{r['zero_gradient_groups']} |")
    lines.append("")
    for r in rows:
        b = r["groups_for_cos_half"]
        reading = (f"{math.ceil(b)} groups per optimizer step give a gradient with cosine ~0.5 to the true one"
                   if math.isfinite(b) else "SNR <= 0: no signal above the noise in these groups (more "
                   "--gradient-groups, or another reward or shape)")
        lines.append(f"- {r['config']}: {reading} (this run used B = {r['prompts_per_iteration']}).")
    return lines + [""]
