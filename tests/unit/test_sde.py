"""sde_step / ode_step: Euler exactness, Normal log-probs, bf16 inputs, per-sample steps, marginals (SPEC §2)."""

from __future__ import annotations

import math

import pytest
import torch

from treegrpo.core.sde import child_log_probs, ode_step, sde_moments, sde_step

# SPEC §1: SD3's sigmas for N = 10, shift 3.
SPEC_SIGMAS = [1.0, 0.960, 0.913, 0.858, 0.790, 0.707, 0.602, 0.465, 0.278, 0.0089, 0.0]


def sd3_sigmas(num_inference_steps: int, shift: float = 3.0) -> torch.Tensor:
    """SD3's FlowMatchEulerDiscreteScheduler sigmas, written out by hand (no diffusers in the core tests).

    The scheduler spaces t linearly from 1 down to its (already shifted) sigma_min = shift(1/1000), shifts each with
    sigma = shift * t / (1 + (shift - 1) * t), and appends the terminal 0.
    """
    shifted = lambda t: shift * t / (1 + (shift - 1) * t)
    t = torch.linspace(1.0, shifted(1e-3), num_inference_steps, dtype=torch.float64)
    return torch.cat([shifted(t), torch.zeros(1, dtype=torch.float64)]).float()  # (N + 1,)


def test_sd3_sigmas_match_spec():
    sigmas = sd3_sigmas(10)
    assert torch.allclose(sigmas, torch.tensor(SPEC_SIGMAS), atol=6e-4)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0


@pytest.mark.parametrize("step", [0, 3, 9])
def test_noise_level_zero_is_exactly_euler(step):
    sigmas = sd3_sigmas(10)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=g)
    velocity = torch.randn(3, 4, 8, 8, generator=g)
    euler = latents + (sigmas[step + 1] - sigmas[step]) * velocity
    out = sde_step(latents, velocity, sigmas, step, noise_level=0.0, generator=g)
    assert torch.equal(out.prev_sample, euler)
    assert torch.equal(out.mean, euler)
    assert torch.equal(ode_step(latents, velocity, sigmas, step), euler)
    assert torch.isfinite(out.log_prob).all()


def test_std_by_hand():
    # Step 1 of the SPEC schedule: sigma = 0.96, sigma' = 0.913, a = 0.7:
    # std = 0.7 * sqrt(0.96 / 0.04) * sqrt(0.047) = 0.7 * 4.898979 * 0.216795 = 0.743452
    sigmas = torch.tensor(SPEC_SIGMAS)
    out = sde_moments(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), sigmas, 1, 0.7)
    assert out.std.shape == (1, 1, 1, 1)
    assert out.std.item() == pytest.approx(0.743452, rel=1e-5)
    # Step 0 (sigma == 1): sigma_hat = sigma_1, std = 0.7 * sqrt(1 / 0.04) * sqrt(0.04) = 0.7.
    assert sde_moments(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), sigmas, 0, 0.7).std.item() == pytest.approx(
        0.7, rel=1e-6
    )


def test_log_prob_equals_torch_normal_and_rescoring():
    sigmas = sd3_sigmas(10)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(5, 4, 8, 8, generator=g)
    velocity = torch.randn(5, 4, 8, 8, generator=g)
    out = sde_step(latents, velocity, sigmas, 4, 0.7, generator=g)
    expected = torch.distributions.Normal(out.mean, out.std).log_prob(out.prev_sample).mean(dim=(1, 2, 3))
    assert out.log_prob.shape == (5,) and out.log_prob.dtype == torch.float32
    torch.testing.assert_close(out.log_prob, expected, rtol=0, atol=2e-6)
    rescored = sde_step(latents, velocity, sigmas, 4, 0.7, prev_sample=out.prev_sample)
    assert torch.equal(rescored.log_prob, out.log_prob)
    assert torch.equal(rescored.prev_sample, out.prev_sample)


def test_child_log_probs_match_per_child_scoring():
    sigmas = sd3_sigmas(10)
    g = torch.Generator().manual_seed(2)
    latents, velocity = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mean, std = sde_moments(latents, velocity, sigmas, 2, 0.7)
    children = mean.unsqueeze(1) + std.unsqueeze(1) * torch.randn(2, 4, 3, 8, 8, generator=g)  # (2, 4, 3, 8, 8)
    logp = child_log_probs(mean, std, children)
    assert logp.shape == (2, 4)
    for c in range(4):
        single = sde_step(latents, velocity, sigmas, 2, 0.7, prev_sample=children[:, c]).log_prob
        torch.testing.assert_close(logp[:, c], single, rtol=0, atol=1e-6)


def test_gradient_flows_through_velocity_only():
    sigmas = sd3_sigmas(10)
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 2, 4, 4, generator=g)
    velocity = torch.randn(2, 2, 4, 4, generator=g, requires_grad=True)
    target = torch.randn(2, 2, 4, 4, generator=g, requires_grad=True)
    out = sde_step(latents, velocity, sigmas, 5, 0.7, prev_sample=target)
    out.log_prob.sum().backward()
    assert velocity.grad is not None and velocity.grad.abs().sum() > 0
    assert target.grad is None


def test_bf16_inputs_give_finite_float32():
    sigmas = sd3_sigmas(10)
    g = torch.Generator().manual_seed(4)
    latents = torch.randn(4, 16, 16, 16, generator=g).bfloat16()
    velocity = torch.randn(4, 16, 16, 16, generator=g).bfloat16()
    for step in range(9):
        out = sde_step(latents, velocity, sigmas, step, 0.7, generator=g)
        for t in out:
            assert t.dtype == torch.float32 and torch.isfinite(t).all()
        fp32 = sde_step(latents.float(), velocity.float(), sigmas, step, 0.7, prev_sample=out.prev_sample)
        assert torch.equal(out.log_prob, fp32.log_prob)


def test_per_sample_step_index_matches_int_calls():
    sigmas = sd3_sigmas(10)
    g = torch.Generator().manual_seed(5)
    steps = torch.tensor([0, 3, 3, 7, 8])
    latents, velocity = torch.randn(5, 2, 4, 4, generator=g), torch.randn(5, 2, 4, 4, generator=g)
    targets = torch.randn(5, 2, 4, 4, generator=g)
    batched = sde_step(latents, velocity, sigmas, steps, 0.7, prev_sample=targets)
    for i, step in enumerate(steps.tolist()):
        single = sde_step(latents[i : i + 1], velocity[i : i + 1], sigmas, step, 0.7, prev_sample=targets[i : i + 1])
        assert torch.equal(batched.mean[i], single.mean[0])
        assert torch.equal(batched.std[i], single.std[0])
        torch.testing.assert_close(batched.log_prob[i], single.log_prob[0], rtol=0, atol=1e-6)
    batched_ode = ode_step(latents, velocity, sigmas, steps)
    assert torch.equal(batched_ode[1], ode_step(latents[1:2], velocity[1:2], sigmas, 3)[0])


def test_bad_step_index_names_the_value():
    with pytest.raises(ValueError, match="step_index=10"):
        sde_step(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), sd3_sigmas(10), 10, 0.7)


# Marginals. Data x0 ~ N(m, s^2) per element, x_t = (1 - t) x0 + t eps. Then x_t ~ N((1 - t) m, V_t) with
# V_t = (1 - t)^2 s^2 + t^2, Cov(x0, x_t) = (1 - t) s^2, Cov(eps, x_t) = t, so the SD3 velocity (v = eps - x0) is
#   v(x, t) = E[eps - x0 | x_t = x] = -m + (t - (1 - t) s^2) / V_t * (x - (1 - t) m).
M, S = 0.8, 0.5


def gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    var = (1 - t) ** 2 * S**2 + t**2
    return -M + (t - (1 - t) * S**2) / var * (x - (1 - t) * M)


def marginal(t: float) -> tuple[float, float]:
    return (1 - t) * M, math.sqrt((1 - t) ** 2 * S**2 + t**2)


def discrete_moments(sigmas: list[float], noise_level: float) -> list[tuple[float, float]]:
    """Exact mean/std after each step of SPEC §2's discrete update: the velocity is affine in x, so a Gaussian stays
    Gaussian with mean' = A mean + B and var' = A^2 var + std^2."""
    mu, var, out = 0.0, 1.0, []
    for i in range(len(sigmas) - 1):
        t, dt = sigmas[i], sigmas[i + 1] - sigmas[i]
        t_hat = sigmas[1] if t == 1 else t
        sigma_t = noise_level * math.sqrt(t / (1 - t_hat))
        x_coef, v_coef = 1 + sigma_t**2 * dt / (2 * t), 1 + sigma_t**2 * (1 - t) / (2 * t)
        slope = (t - (1 - t) * S**2) / ((1 - t) ** 2 * S**2 + t**2)
        a, b = x_coef + slope * v_coef * dt, (-slope * (1 - t) * M - M) * v_coef * dt
        mu, var = a * mu + b, a * a * var + sigma_t**2 * (-dt)
        out.append((mu, math.sqrt(var)))
    return out


def run_particles(sigmas: torch.Tensor, noise_level: float, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 1, 1, generator=g)  # (n, 1, 1, 1) one element per particle
    path = []
    for i in range(sigmas.numel() - 1):
        x = sde_step(x, gaussian_velocity(x, sigmas[i].item()), sigmas, i, noise_level, generator=g).prev_sample
        path.append(x.flatten())
    return path


@pytest.mark.parametrize("noise_level", [0.7, 0.0])
def test_marginals_on_sd3_schedule(noise_level):
    """N = 10, shift 3: the mean follows the true marginal (1 - sigma) m at every step, for the SDE and the ODE
    alike; the spread follows the discrete update's exact moments. (At N = 10 that spread is not the continuous
    marginal's: the Euler ODE ends at std 0.359 and the SDE at 0.421 for s = 0.5; the fine-grid test covers that.)"""
    sigmas, n = sd3_sigmas(10), 100_000
    path = run_particles(sigmas, noise_level, n, seed=10)
    exact = discrete_moments(sigmas.double().tolist(), noise_level)
    for i, x in enumerate(path):
        true_mean, true_std = marginal(sigmas[i + 1].item())
        mc_err = 4 * true_std / math.sqrt(n)
        assert abs(x.mean().item() - true_mean) < mc_err + 1e-5, i
        assert abs(x.mean().item() - exact[i][0]) < mc_err + 1e-5, i
        assert abs(x.std().item() - exact[i][1]) < 4 * exact[i][1] / math.sqrt(2 * n) + 1e-5, i


def test_sde_and_ode_preserve_marginals_on_fine_grid():
    """N = 200 (shift 3): SDE and ODE both track the continuous marginal N((1 - t) m, V_t) at every step and end at
    the data distribution N(m, s^2). The SDE's std runs up to ~5% high in the first steps: Flow-GRPO's sigma_hat
    substitution makes the first steps' noise ~a regardless of N (an Euler-Maruyama error of a^4 / 4 in variance)."""
    sigmas, n = sd3_sigmas(200), 100_000
    sde_path = run_particles(sigmas, 0.7, n, seed=11)
    ode_path = run_particles(sigmas, 0.0, n, seed=11)
    for i in range(200):
        true_mean, true_std = marginal(sigmas[i + 1].item())
        for x, std_tol in ((sde_path[i], 0.06), (ode_path[i], 0.03)):  # worst seen: 4.3%, 1.7% (Euler error)
            assert abs(x.mean().item() - true_mean) < 4 * true_std / math.sqrt(n), i
            assert abs(x.std().item() / true_std - 1) < std_tol, i
    for final in (sde_path[-1], ode_path[-1]):
        assert final.mean().item() == pytest.approx(M, abs=4 * S / math.sqrt(n))
        assert final.std().item() == pytest.approx(S, rel=0.02)
        # Quartiles of N(m, s^2): m -+ 0.6745 s.
        q = torch.quantile(final, torch.tensor([0.25, 0.75]))
        torch.testing.assert_close(q, torch.tensor([M - 0.6745 * S, M + 0.6745 * S]), rtol=0, atol=0.02)
