"""Leaf advantages from rewards, and their bottom-up backup through the tree (SPEC §5).

Leaf: for each reward model r separately, z-normalise over the G leaves of one prompt (population std),
A_r = (rew_r - mean) / (std + eps); then A = sum_r w_r A_r, clipped to [-clip, clip].
Backup: for a node u with child edges S(u), A(edge into u) = sum_{e in S(u)} w_u(e) A(e), with
w_u = softmax(log_prob(e) / temperature) over S(u) (`softmax`, the paper) or uniform (`mean`, the authors' code).

Notation:
    R  number of reward models
    G  leaves in one group (all leaves of all trees of one prompt)
    L  leaves in a batch (several groups)
    k  children per node (branching)
"""

from __future__ import annotations

import torch
from torch import Tensor

BACKUP_MODES = ("softmax", "mean")


def leaf_advantages(rewards: Tensor, weights: Tensor, eps: float = 1e-8, clip: float = 5.0) -> Tensor:
    """Weighted sum of per-reward z-scores over the last dim, clipped.

    Args:
        rewards: (R, *B, G) each reward model's scores; the z-score is taken over G within each *B group.
        weights: (R,) the reward weights w_r (e.g. HPSv2.1 0.8, CLIPScore 0.2).
        eps: added to the std; a group whose rewards are all equal gives 0, not NaN.
        clip: the advantages are clipped to [-clip, clip].

    Returns:
        (*B, G) float32 advantages.
    """
    if rewards.ndim < 2 or weights.shape != rewards.shape[:1]:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and weights {tuple(weights.shape)}: expected rewards (R, ..., G) "
            "and weights (R,)"
        )
    r = rewards.double()  # (R, *B, G)
    mean = r.mean(dim=-1, keepdim=True)  # (R, *B, 1)
    std = r.std(dim=-1, keepdim=True, unbiased=False)  # (R, *B, 1) population std
    z = (r - mean) / (std + eps)  # (R, *B, G)
    w = weights.double().to(r.device).view(-1, *([1] * (r.ndim - 1)))  # (R, 1, ..., 1)
    combined = (w * z).sum(dim=0)  # (*B, G)
    return combined.clamp(-clip, clip).float()  # (*B, G)


def grouped_leaf_advantages(
    rewards: Tensor, group: Tensor, weights: Tensor, eps: float = 1e-8, clip: float = 5.0
) -> Tensor:
    """`leaf_advantages` for leaves of several prompts in any order, normalised within each prompt's group.

    Args:
        rewards: (R, L) scores of L leaves.
        group: (L,) long, the group (prompt) of each leaf, e.g. `TreeSamples.leaf_prompt`.
        weights: (R,) the reward weights.
        eps: added to the std.
        clip: the advantages are clipped to [-clip, clip].

    Returns:
        (L,) float32 advantages, each normalised against its own group only.
    """
    if rewards.ndim != 2 or group.shape != rewards.shape[1:]:
        raise ValueError(f"rewards {tuple(rewards.shape)}, group {tuple(group.shape)}: expected (R, L) and (L,)")
    out = torch.empty(rewards.shape[1], dtype=torch.float32, device=rewards.device)  # (L,)
    for g in torch.unique(group):
        members = group == g  # (L,) bool
        out[members] = leaf_advantages(rewards[:, members], weights, eps, clip)  # (G,)
    return out


def backup_weights(child_log_probs: Tensor, mode: str = "softmax", temperature: float = 1.0) -> Tensor:
    """The weights w_u(e) over each node's k child edges, in float64.

    Args:
        child_log_probs: (*B, k) the child edges' (mean) log-probs.
        mode: "softmax" (paper) or "mean" (uniform: the authors' code).
        temperature: softmax temperature, > 0.

    Returns:
        (*B, k) float64 weights summing to 1 over k.
    """
    if mode not in BACKUP_MODES:
        raise ValueError(f"backup mode={mode!r}: must be one of {', '.join(BACKUP_MODES)}")
    logits = child_log_probs.double()  # (*B, k)
    if mode == "mean":
        return torch.full_like(logits, 1.0 / logits.shape[-1])  # (*B, k)
    if not temperature > 0:
        raise ValueError(f"backup temperature={temperature}: must be > 0 (the paper uses 1)")
    logits = logits / temperature  # (*B, k)
    logits = logits - logits.max(dim=-1, keepdim=True).values  # (*B, k), max 0: exp cannot overflow
    unnormalised = torch.exp(logits)  # (*B, k)
    return unnormalised / unnormalised.sum(dim=-1, keepdim=True)  # (*B, k)


def backup(
    child_advantages: Tensor, child_log_probs: Tensor, mode: str = "softmax", temperature: float = 1.0
) -> Tensor:
    """A node's advantage (that of the edge into it) from its k child edges; batched over leading dims.

    Args:
        child_advantages: (*B, k) advantages of the node's child edges.
        child_log_probs: (*B, k) those edges' log-probs.
        mode: "softmax" or "mean" (see `backup_weights`).
        temperature: softmax temperature.

    Returns:
        (*B,) advantages (a 0-d tensor for a single node), in `child_advantages`' float dtype (at least float32).
    """
    if child_advantages.shape != child_log_probs.shape:
        raise ValueError(
            f"child_advantages {tuple(child_advantages.shape)} and child_log_probs "
            f"{tuple(child_log_probs.shape)} must have the same shape (*B, k)"
        )
    w = backup_weights(child_log_probs, mode, temperature)  # (*B, k)
    value = (w * child_advantages.double()).sum(dim=-1)  # (*B,)
    return value.to(torch.promote_types(child_advantages.dtype, torch.float32))  # (*B,)
