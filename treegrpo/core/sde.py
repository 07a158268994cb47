"""Stateless flow-matching sampler steps with Gaussian log-probabilities (SPEC §2).

One step from sigma = sigmas[i] to sigma_next = sigmas[i + 1] (dt = sigma_next - sigma < 0), given the
(CFG-combined) velocity v of diffusers' SD3 convention (v = eps - x0, x' = x + dt * v):

- ODE: x' = x + dt * v (exactly the Euler step).
- SDE (Flow-GRPO's marginal-preserving form, noise level a):
  sigma_t = a * sqrt(sigma / (1 - sigma_hat)), sigma_hat = sigma except sigmas[1] where sigma == 1;
  mean = x * (1 + sigma_t^2 * dt / (2 sigma)) + v * (1 + sigma_t^2 * (1 - sigma) / (2 sigma)) * dt;
  std = sigma_t * sqrt(-dt); x' = mean + std * eps.

Everything is computed in float32 whatever the input dtype: in bf16 the squared residual over the variance
loses all precision and the log-probs come out NaN or wildly off (a recurring flow_grpo complaint).

Notation:
    N        batch of latents (frontier nodes or training parents)
    C, H, W  latent channels, height, width
    S        length of `sigmas` = num_inference_steps + 1 (the last sigma is 0)
    k        children per parent (`child_log_probs`)
    a        noise_level (0: the deterministic ODE)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Lower bound on the step's std. Real steps never come near it (at N = 10, a = 0.7 the smallest window std is ~0.22,
# the excluded last step's ~0.006); it only keeps log-probs finite when noise_level is 0.
STD_MIN = 1e-6
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class SdeMoments(NamedTuple):
    """The Gaussian of one step: mean (N, C, H, W) and std (N, 1, 1, 1), both float32."""

    mean: Tensor
    std: Tensor


class SdeStep(NamedTuple):
    """One SDE step.

    prev_sample: (N, C, H, W) float32, the next latent (drawn, or the `prev_sample` that was scored).
    log_prob: (N,) float32, the per-element log-density of prev_sample averaged over C*H*W (mean taken in float64).
    mean: (N, C, H, W) float32.
    std: (N, 1, 1, 1) float32, clamped to >= STD_MIN.
    """

    prev_sample: Tensor
    log_prob: Tensor
    mean: Tensor
    std: Tensor


def _step_sigmas(sigmas: Tensor, step_index: int | Tensor, n: int, device: torch.device) -> tuple[Tensor, ...]:
    """sigma, sigma_next and sigma_hat for each sample, each (N or 1, 1, 1, 1) float32 on `device`."""
    sigmas = sigmas.to(device=device, dtype=torch.float32)  # (S,)
    if isinstance(step_index, int):
        if not 0 <= step_index <= sigmas.numel() - 2:
            last = sigmas.numel() - 2
            raise ValueError(f"step_index={step_index}: must be in [0, {last}] for {sigmas.numel()} sigmas")
        index = torch.tensor([step_index], device=device)  # (1,)
    else:
        index = step_index.to(device=device, dtype=torch.long).reshape(-1)  # (N,) or (1,)
        if index.numel() not in (1, n):
            raise ValueError(f"step_index has {index.numel()} entries for a batch of {n}: pass one per sample")
    sigma = sigmas[index].view(-1, 1, 1, 1)  # (N, 1, 1, 1)
    sigma_next = sigmas[index + 1].view(-1, 1, 1, 1)  # (N, 1, 1, 1)
    # At sigma == 1 the ratio sigma / (1 - sigma) is infinite: Flow-GRPO substitutes the second sigma there.
    sigma_hat = torch.where(sigma >= 1.0, sigmas[1], sigma)  # (N, 1, 1, 1)
    return sigma, sigma_next, sigma_hat


def ode_step(latents: Tensor, velocity: Tensor, sigmas: Tensor, step_index: int | Tensor) -> Tensor:
    """The deterministic Euler step x' = x + (sigma_next - sigma) * v.

    Args:
        latents: (N, C, H, W) the latents at step `step_index`.
        velocity: (N, C, H, W) the model's velocity there.
        sigmas: (S,) the scheduler's sigmas, last 0.
        step_index: the step taken, an int or an (N,) long tensor (one step per sample).

    Returns:
        (N, C, H, W) float32 latents at the next step.
    """
    sigma, sigma_next, _ = _step_sigmas(sigmas, step_index, latents.shape[0], latents.device)
    return latents.float() + (sigma_next - sigma) * velocity.float()  # (N, C, H, W)


def sde_moments(
    latents: Tensor, velocity: Tensor, sigmas: Tensor, step_index: int | Tensor, noise_level: float
) -> SdeMoments:
    """Mean and std of the SDE step's Gaussian (SPEC §2); no noise drawn.

    Args:
        latents: (N, C, H, W) latents at step `step_index`, any float dtype (upcast to float32).
        velocity: (N, C, H, W) velocity there; gradients flow through it into `mean`.
        sigmas: (S,) the scheduler's sigmas, last 0.
        step_index: the step taken, an int or an (N,) long tensor.
        noise_level: a >= 0; 0 makes `mean` exactly the Euler step.

    Returns:
        SdeMoments(mean (N, C, H, W), std (N, 1, 1, 1) clamped to >= STD_MIN), float32.
    """
    if noise_level < 0:
        raise ValueError(f"noise_level={noise_level}: must be >= 0 (0 is the ODE; Flow-GRPO uses 0.7)")
    n = latents.shape[0]
    sigma, sigma_next, sigma_hat = _step_sigmas(sigmas, step_index, n, latents.device)
    x = latents.float()  # (N, C, H, W) float32: bf16 cannot resolve the residuals the log-prob needs
    v = velocity.float()  # (N, C, H, W)
    dt = sigma_next - sigma  # (N, 1, 1, 1), negative
    sigma_t = noise_level * torch.sqrt(sigma / (1.0 - sigma_hat))  # (N, 1, 1, 1)
    x_coef = 1.0 + sigma_t**2 * dt / (2.0 * sigma)  # (N, 1, 1, 1)
    v_coef = 1.0 + sigma_t**2 * (1.0 - sigma) / (2.0 * sigma)  # (N, 1, 1, 1)
    mean = x * x_coef + v * v_coef * dt  # (N, C, H, W); a = 0: x * 1 + v * 1 * dt, bitwise the Euler step
    std = (sigma_t * torch.sqrt(-dt)).clamp_min(STD_MIN).expand(n, 1, 1, 1)  # (N, 1, 1, 1)
    return SdeMoments(mean, std)


def gaussian_log_prob(sample: Tensor, mean: Tensor, std: Tensor, batch_dims: int = 1) -> Tensor:
    """Per-element Gaussian log-density averaged over all non-batch dims (SPEC §2).

    The elementwise density is float32 (as `torch.distributions.Normal.log_prob`); the mean over C*H*W is taken in
    float64 so that two calls on the same values agree to the last float32 bit whatever the reduction layout.

    Args:
        sample: (*B, C, H, W) the points to score (treated as data: callers pass detached samples).
        mean: broadcastable to `sample`, e.g. (*B, C, H, W) or (N, 1, C, H, W) against (N, k, C, H, W).
        std: broadcastable to `sample`, e.g. (N, 1, 1, 1).
        batch_dims: how many leading dims of `sample` are batch dims (*B).

    Returns:
        (*B,) float32 mean log-density.
    """
    x = sample.float()  # (*B, C, H, W)
    std = std.float()
    log_density = -((x - mean.float()) ** 2) / (2.0 * std**2) - torch.log(std) - _LOG_SQRT_2PI  # (*B, C, H, W)
    reduce_dims = tuple(range(batch_dims, log_density.ndim))
    return log_density.double().mean(dim=reduce_dims).float()  # (*B,)


def child_log_probs(mean: Tensor, std: Tensor, child_latents: Tensor) -> Tensor:
    """Log-probs of each parent's k children under that parent's one Gaussian (one forward serves all k; SPEC §6).

    Args:
        mean: (P, C, H, W) each parent's step mean (from `sde_moments`).
        std: (P, 1, 1, 1) each parent's step std.
        child_latents: (P, k, C, H, W) the stored children.

    Returns:
        (P, k) float32 mean log-densities.
    """
    return gaussian_log_prob(child_latents.detach(), mean.unsqueeze(1), std.unsqueeze(1), batch_dims=2)  # (P, k)


def standard_normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """eps ~ N(0, I) in float32, drawn on the generator's device (so a CPU generator reproduces on any device).

    Args:
        shape: the shape to draw.
        generator: the randomness; None uses torch's default generator (tests only: the core has no global RNG).
        device: where the result goes.

    Returns:
        `shape` float32 tensor on `device`.
    """
    draw_device = generator.device if generator is not None else device
    eps = torch.randn(shape, generator=generator, device=draw_device, dtype=torch.float32)
    return eps.to(device)


def sde_step(
    latents: Tensor,
    velocity: Tensor,
    sigmas: Tensor,
    step_index: int | Tensor,
    noise_level: float,
    generator: torch.Generator | None = None,
    prev_sample: Tensor | None = None,
) -> SdeStep:
    """One SDE step with the log-prob of its result; or, with `prev_sample`, the log-prob of a given next latent.

    Args:
        latents: (N, C, H, W) latents at step `step_index`, any float dtype (upcast to float32).
        velocity: (N, C, H, W) velocity there; gradients flow through it into `mean` and `log_prob`.
        sigmas: (S,) the scheduler's sigmas, last 0.
        step_index: the step taken, an int or an (N,) long tensor (a training micro-batch mixes steps).
        noise_level: a >= 0. With a = 0 the drawn sample is exactly the Euler step and no noise is drawn.
        generator: source of eps when drawing; on any device (see `standard_normal`).
        prev_sample: (N, C, H, W) a next latent to score instead of drawing one (treated as data).

    Returns:
        SdeStep(prev_sample (N, C, H, W), log_prob (N,), mean (N, C, H, W), std (N, 1, 1, 1)), all float32.
    """
    mean, std = sde_moments(latents, velocity, sigmas, step_index, noise_level)
    if prev_sample is not None:
        prev_sample = prev_sample.detach().float()  # (N, C, H, W)
    elif noise_level == 0:
        prev_sample = mean  # (N, C, H, W) the ODE: no draw, bitwise the Euler step
    else:
        eps = standard_normal(tuple(mean.shape), generator, mean.device)  # (N, C, H, W)
        prev_sample = mean + std * eps  # (N, C, H, W)
    log_prob = gaussian_log_prob(prev_sample.detach(), mean, std)  # (N,)
    return SdeStep(prev_sample, log_prob, mean, std)
