"""The PPO-clipped GRPO objective on tree edges (SPEC §6), and the optional KL to the reference policy.

For each edge e: ratio_e = exp(logp(e) - logp_old(e)),
loss_e = -min(ratio_e A_e, clip(ratio_e, 1 - eps, 1 + eps) A_e), averaged (or summed) over edges.

Notation:
    E        edges in the micro-batch (any shape: (E,) or (P, k))
    P        parents in the micro-batch
    C, H, W  latent channels, height, width
    eps      clip_range (1e-4 by default at this scale: the ratio of mean log-probs sits very close to 1)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum")


class LossOutput(NamedTuple):
    """loss: () with gradients. The rest are detached diagnostics.

    ratio: (*E,) per-edge ratio. clip_fraction: () fraction of edges with |ratio - 1| > clip_range.
    approx_kl: () 0.5 * mean((logp - logp_old)^2), as flow_grpo reports it.
    """

    loss: Tensor
    clip_fraction: Tensor
    ratio: Tensor
    approx_kl: Tensor


def grpo_loss(
    log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip_range: float, reduction: str = "mean"
) -> LossOutput:
    """PPO-clipped surrogate over edges.

    Args:
        log_prob: (*E,) current log-probs, with gradients.
        old_log_prob: (*E,) the behaviour policy's log-probs (treated as data).
        advantages: (*E,) edge advantages (treated as data).
        clip_range: eps > 0; the ratio is clipped to [1 - eps, 1 + eps].
        reduction: "mean" (default) or "sum" over edges.

    Returns:
        LossOutput(loss (), clip_fraction (), ratio (*E,), approx_kl ()), float32.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: must be one of {', '.join(REDUCTIONS)}")
    if not clip_range > 0:
        raise ValueError(f"clip_range={clip_range}: must be > 0 (1e-4 for mean log-probs)")
    if not log_prob.shape == old_log_prob.shape == advantages.shape:
        raise ValueError(
            f"log_prob {tuple(log_prob.shape)}, old_log_prob {tuple(old_log_prob.shape)} and advantages "
            f"{tuple(advantages.shape)} must have the same shape"
        )
    log_ratio = log_prob.float() - old_log_prob.detach().float()  # (*E,)
    ratio = torch.exp(log_ratio)  # (*E,)
    adv = advantages.detach().float()  # (*E,)
    unclipped = ratio * adv  # (*E,)
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * adv  # (*E,)
    per_edge = -torch.minimum(unclipped, clipped)  # (*E,)
    loss = per_edge.mean() if reduction == "mean" else per_edge.sum()  # ()
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()  # ()
        approx_kl = 0.5 * (log_ratio**2).mean()  # ()
    return LossOutput(loss, clip_fraction, ratio.detach(), approx_kl)


def kl_to_reference(mean: Tensor, reference_mean: Tensor, std: Tensor) -> Tensor:
    """KL between the policy's and the reference's step Gaussians (same std), per element averaged over C*H*W.

    KL(N(mu, s^2) || N(mu_ref, s^2)) = (mu - mu_ref)^2 / (2 s^2) elementwise, the form flow_grpo uses.

    Args:
        mean: (P, C, H, W) the policy's step mean, with gradients.
        reference_mean: (P, C, H, W) the reference policy's (LoRA disabled) step mean.
        std: (P, 1, 1, 1) the step std.

    Returns:
        (P,) float32 KL per parent; the trainer adds beta * kl.mean().
    """
    sq = (mean.float() - reference_mean.detach().float()) ** 2 / (2.0 * std.float() ** 2)  # (P, C, H, W)
    return sq.flatten(1).mean(dim=1)  # (P,)


def warmup_learning_rate(learning_rate: float, iteration: int, warmup_iterations: int) -> float:
    """The learning rate of optimizer step `iteration` (0-based) under a linear warm-up: lr * (iteration + 1) / W for
    the first W steps, then lr (W = 0: lr from the first step). A function of the iteration alone, so a resumed run
    steps with the same rates as an uninterrupted one.

    Adam's first steps move every parameter by about lr whatever the gradient's size (its second-moment estimate has
    seen one noisy gradient), so on a noisy policy gradient they are the largest and least informed steps of a run.

    Args:
        learning_rate: the peak rate.
        iteration: the optimizer step's index, >= 0.
        warmup_iterations: W >= 0.
    Returns:
        the rate for this step.
    """
    if warmup_iterations <= 0:
        return learning_rate
    return learning_rate * min(1.0, (iteration + 1) / warmup_iterations)
