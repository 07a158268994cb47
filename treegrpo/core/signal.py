"""Is the tree carrying signal? Diagnostics of one iteration's rewards, advantages and backup weights.

Shared-prefix sampling can collapse diversity: when every leaf of a prompt scores the same, its advantages are 0 and
the compute spent on that prompt trains nothing. These figures say where the window carries signal:
- the per-prompt spread (population std) of the leaf rewards, its mean and min over prompts, and the fraction of
  prompts whose leaves all tie (std 0: every advantage of that prompt is 0);
- the spread (population std) of the edge advantages at each window level (level 0 = the window's first step);
- the effective sample size of the softmax backup weights of a node over its k child edges, 1 / sum(w^2): k when
  the weights are uniform (every child counts), 1 when one child takes all the weight.
And does the estimate point uphill: the signal-to-noise ratio of the policy gradient over prompt groups
(`gradient_snr`, on one gradient per prompt group; `treegrpo.bench.gradient` collects them).

Notation:
    L  leaves in the batch (several prompts)
    P  window parents, k children each
    d  window depth
    M  prompt groups (one gradient each), D trained parameters (the LoRA's, flattened)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from treegrpo.core.advantages import backup_weights


class RewardSpread(NamedTuple):
    std_mean: float  # mean over prompts of the per-prompt leaf reward std
    std_min: float  # the smallest per-prompt std
    tie_fraction: float  # fraction of prompts whose leaves all score the same (std <= tie_tol)


def reward_spread(rewards: Tensor, group: Tensor, tie_tol: float = 1e-12) -> RewardSpread:
    """The per-prompt spread of the leaf rewards.

    Args:
        rewards: (L,) one (weighted) reward per leaf.
        group: (L,) long, the prompt of each leaf.
        tie_tol: a prompt whose population std is at most this is a tie (its z-scored advantages are all 0).

    Returns:
        RewardSpread over the prompts present in `group`.
    """
    if rewards.shape != group.shape or rewards.ndim != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)}, group {tuple(group.shape)}: expected both (L,)")
    r = rewards.double()  # (L,)
    stds = torch.stack([r[group == g].std(unbiased=False) for g in torch.unique(group)])  # (prompts,)
    return RewardSpread(stds.mean().item(), stds.min().item(), (stds <= tie_tol).double().mean().item())


def level_spread(edge_advantages: Tensor, parent_level: Tensor, depth: int) -> list[float]:
    """The population std of the edge advantages at each window level.

    Args:
        edge_advantages: (P, k) every parent's child-edge advantages.
        parent_level: (P,) long, each parent's window level in 0..d-1.
        depth: d.

    Returns:
        d floats, level 0 first.
    """
    if edge_advantages.shape[:1] != parent_level.shape:
        raise ValueError(f"edge_advantages {tuple(edge_advantages.shape)}, parent_level {tuple(parent_level.shape)}: "
                         "expected (P, k) and (P,)")
    adv = edge_advantages.double()  # (P, k)
    return [adv[parent_level == level].std(unbiased=False).item() for level in range(depth)]


def backup_ess(child_log_probs: Tensor, mode: str = "softmax", temperature: float = 1.0) -> Tensor:
    """The effective sample size 1 / sum(w^2) of each node's backup weights over its k child edges.

    Args:
        child_log_probs: (*B, k) the child edges' log-probs of each node.
        mode: "softmax" or "mean" (`treegrpo.core.advantages.backup_weights`).
        temperature: softmax temperature.

    Returns:
        (*B,) float64, between 1 (one-hot weights) and k (uniform).
    """
    w = backup_weights(child_log_probs, mode, temperature)  # (*B, k)
    return 1.0 / (w * w).sum(dim=-1)  # (*B,)


def tree_signal(rewards: Tensor, group: Tensor, edge_advantages: Tensor, parent_level: Tensor,
                child_log_prob: Tensor, depth: int, mode: str = "softmax", temperature: float = 1.0
                ) -> dict[str, float]:
    """One iteration's signal figures, keyed for logging.

    Args:
        rewards: (L,) the weighted leaf rewards; group: (L,) their prompts.
        edge_advantages: (P, k); parent_level: (P,); child_log_prob: (P, k) the edges' log-probs.
        depth: d.
        mode, temperature: the backup's (the weights that combine a node's child edges).

    Returns:
        `reward_std_mean`, `reward_std_min`, `tie_fraction`, `adv_std_level_<l>` for each level and, when d > 1,
        `backup_ess_mean` / `backup_ess_min` over the nodes whose weights the backup uses (levels 1..d-1).
    """
    spread = reward_spread(rewards, group)
    out = {"reward_std_mean": spread.std_mean, "reward_std_min": spread.std_min, "tie_fraction": spread.tie_fraction}
    for level, std in enumerate(level_spread(edge_advantages, parent_level, depth)):
        out[f"adv_std_level_{level}"] = std
    backed = parent_level >= 1  # (P,) the backup weighs these nodes' child edges into their parents' edges
    if bool(backed.any()):
        ess = backup_ess(child_log_prob[backed], mode, temperature)  # (P_backed,)
        out["backup_ess_mean"], out["backup_ess_min"] = ess.mean().item(), ess.min().item()
    return out


class GradientSNR(NamedTuple):
    snr_per_group: float  # signal / noise: what one prompt group's gradient carries (nan: every gradient is 0)
    signal: float  # ||g_bar||^2 - noise / M: an unbiased estimate of ||E g||^2 (negative when the noise hides it)
    noise: float  # sum_i ||g_i - g_bar||^2 / (M - 1): the trace of the groups' covariance
    split_half_cos: float  # cosine between the mean gradient of the first and of the second half of the groups
    groups_for_cos_half: float  # b = 1 / (3 snr): a mean of b groups has cosine ~0.5 to E g (inf: snr <= 0)
    zero_groups: int  # groups whose gradient is exactly 0 (e.g. every leaf of the prompt tied: all advantages 0)


def gradient_snr(grads: Tensor) -> GradientSNR:
    """The signal-to-noise ratio of a per-prompt-group gradient, and how many groups a step needs to point uphill.

    With g_i the gradient of prompt group i alone, E g the true gradient and noise = tr Cov(g), a mean of b groups
    has E||mean - E g||^2 = noise / b, so its squared cosine to E g is about b snr / (1 + b snr), snr = ||E g||^2 /
    noise: cosine 0.5 (cosine^2 = 1/4) at b = 1 / (3 snr). The split-half cosine is a check that needs no model of
    the noise: two independent halves of the groups agree in direction only when there is signal.

    Args:
        grads: (M, D) one flattened gradient per prompt group, M >= 2, groups independent (the order is the
            split: the first M // 2 rows against the rest).

    Returns:
        GradientSNR; undefined figures are nan (snr when the noise and the signal are both 0; the cosine when a
        half's mean is 0).
    """
    if grads.ndim != 2:
        raise ValueError(f"grads {tuple(grads.shape)}: expected (M, D), one flattened gradient per prompt group")
    m = grads.shape[0]
    if m < 2:
        raise ValueError(f"grads has M={m} prompt group(s): the noise needs >= 2 groups; collect more groups "
                         "(more prompts per iteration or more iterations)")
    g = grads.double()  # (M, D) float64: the signal is a small difference of large sums
    mean = g.mean(dim=0)  # (D,)
    noise = ((g - mean) ** 2).sum().item() / (m - 1)
    signal = mean.pow(2).sum().item() - noise / m
    if noise > 0:
        snr = signal / noise
    else:  # every group has the same gradient: infinite signal, or none at all
        snr = math.inf if signal > 0 else math.nan
    half = m // 2
    first, second = g[:half].mean(dim=0), g[half:].mean(dim=0)  # (D,) (D,)
    norms = (first.norm() * second.norm()).item()
    cos = (first @ second).item() / norms if norms > 0 else math.nan
    groups = 1.0 / (3.0 * snr) if snr > 0 else math.inf  # snr inf: 0 (one group is plenty)
    zero = int((g == 0).all(dim=1).sum())
    return GradientSNR(snr, signal, noise, cos, groups, zero)
