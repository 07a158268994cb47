"""Is the tree carrying signal? Diagnostics of one iteration's rewards, advantages and backup weights.

Shared-prefix sampling can collapse diversity: when every leaf of a prompt scores the same, its advantages are 0 and
the compute spent on that prompt trains nothing. These figures say where the window carries signal:
- the per-prompt spread (population std) of the leaf rewards, its mean and min over prompts, and the fraction of
  prompts whose leaves all tie (std 0: every advantage of that prompt is 0);
- the spread (population std) of the edge advantages at each window level (level 0 = the window's first step);
- the effective sample size of the softmax backup weights of a node over its k child edges, 1 / sum(w^2): k when
  the weights are uniform (every child counts), 1 when one child takes all the weight.

Notation:
    L  leaves in the batch (several prompts)
    P  window parents, k children each
    d  window depth
"""

from __future__ import annotations

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
