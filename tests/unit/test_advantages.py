"""Leaf advantages and the backup (SPEC §5), with hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from treegrpo.core.advantages import backup, backup_weights, grouped_leaf_advantages, leaf_advantages
from treegrpo.core.sde import child_log_probs, sde_moments


def test_leaf_advantages_by_hand():
    # reward 1: [1, 2, 3], mean 2, population std sqrt(2/3) -> z = [-1.224745, 0, 1.224745]
    # reward 2: [10, 10, 40], mean 20, population std sqrt(200) -> z = [-0.707107, -0.707107, 1.414214]
    # weights 0.8 / 0.2 -> [-1.121217, -0.141421, 1.262639]
    rewards = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])
    adv = leaf_advantages(rewards, torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(adv, torch.tensor([-1.121217, -0.141421, 1.262639]), rtol=0, atol=1e-5)
    assert adv.dtype == torch.float32


def test_weights_combine_z_scores_not_raw_rewards():
    # Rescaling one reward model (e.g. 0.3-scale HPS against ~6-scale aesthetic) must not change its influence.
    rewards = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])
    weights = torch.tensor([0.8, 0.2])
    scaled = rewards * torch.tensor([[1.0], [1000.0]]) + torch.tensor([[0.0], [-7.0]])
    torch.testing.assert_close(leaf_advantages(scaled, weights), leaf_advantages(rewards, weights))
    # A raw weighted sum [2.8, 3.6, 10.4] would z-score to [-0.83, -0.58, 1.41]: not what we get.
    assert leaf_advantages(rewards, weights)[1].item() == pytest.approx(-0.141421, abs=1e-5)


def test_equal_rewards_give_zeros():
    adv = leaf_advantages(torch.full((2, 5), 0.3), torch.tensor([0.5, 0.5]))
    assert torch.equal(adv, torch.zeros(5))


def test_clip():
    # G = 50, one leaf at 1, the rest 0: z(outlier) = sqrt(G - 1) = 7 -> clipped to 5; the others -1/7.
    rewards = torch.zeros(1, 50)
    rewards[0, 0] = 1.0
    adv = leaf_advantages(rewards, torch.tensor([1.0]), clip=5.0)
    assert adv[0].item() == pytest.approx(5.0)
    assert adv[1].item() == pytest.approx(-1 / 7, rel=1e-5)


def test_batched_groups_and_grouped_form():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(2, 3, 4, generator=g)  # (R, B, G)
    weights = torch.tensor([0.8, 0.2])
    batched = leaf_advantages(rewards, weights)  # (B, G)
    for b in range(3):
        torch.testing.assert_close(batched[b], leaf_advantages(rewards[:, b], weights))
    # The same leaves shuffled, with a group label each.
    flat, group = rewards.reshape(2, 12), torch.arange(3).repeat_interleave(4)
    perm = torch.randperm(12, generator=g)
    grouped = grouped_leaf_advantages(flat[:, perm], group[perm], weights)
    torch.testing.assert_close(grouped, batched.reshape(12)[perm])


def test_backup_two_level_tree_by_hand():
    # Root -> u1, u2; u1 -> leaves (A = 1, -1) with log-probs (0, ln 3);
    # u2 -> leaves (A = 2, 0) with log-probs (ln 2, ln 2).
    # softmax: w(u1) = (1/4, 3/4) -> A(u1) = 1/4 - 3/4 = -0.5; w(u2) uniform -> A(u2) = 1.0.
    # mean: A(u1) = 0, A(u2) = 1.
    child_adv = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    child_logp = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]])
    torch.testing.assert_close(backup(child_adv, child_logp, "softmax"), torch.tensor([-0.5, 1.0]))
    torch.testing.assert_close(backup(child_adv, child_logp, "mean"), torch.tensor([0.0, 1.0]))
    # One node at a time gives a scalar.
    single = backup(child_adv[0], child_logp[0])
    assert single.shape == () and single.item() == pytest.approx(-0.5)
    # Temperature 2: weights ∝ (1, sqrt 3) -> (1 - sqrt 3) / (1 + sqrt 3) = -0.267949.
    assert backup(child_adv[0], child_logp[0], temperature=2.0).item() == pytest.approx(-0.267949, abs=1e-6)


def test_softmax_is_stable_for_large_log_probs():
    # Only differences matter: (1000, 1001) weighs like (0, 1): e / (1 + e) = 0.731059 on the second edge.
    w = backup_weights(torch.tensor([1000.0, 1001.0]))
    torch.testing.assert_close(w, torch.tensor([1 / (1 + math.e), math.e / (1 + math.e)], dtype=torch.float64))
    with pytest.raises(ValueError, match="mode='max'"):
        backup_weights(torch.zeros(2), mode="max")


def test_softmax_and_mean_agree_at_realistic_latent_size():
    # SD3.5-M latents at 512 px are 16x64x64: mean log-probs over 65,536 elements differ by ~3e-3 between siblings,
    # so the softmax weights are uniform to ~0.3% (SPEC §5); check within 1%.
    g = torch.Generator().manual_seed(0)
    sigmas = torch.tensor([1.0, 0.960, 0.913, 0.858, 0.790, 0.707, 0.602, 0.465, 0.278, 0.0089, 0.0])
    latents, velocity = torch.randn(4, 16, 64, 64, generator=g), torch.randn(4, 16, 64, 64, generator=g)
    mean, std = sde_moments(latents, velocity, sigmas, 3, 0.7)
    children = mean.unsqueeze(1) + std.unsqueeze(1) * torch.randn(4, 3, 16, 64, 64, generator=g)  # (4, 3, ...)
    logp = child_log_probs(mean, std, children)  # (4, 3)
    weights = backup_weights(logp)
    assert (weights * 3 - 1).abs().max().item() < 0.01
    child_adv = torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, -2.0], [0.3, 0.2, 0.1], [-1.0, -1.0, 2.0]])
    diff = backup(child_adv, logp, "softmax") - backup(child_adv, logp, "mean")
    assert diff.abs().max().item() < 0.01 * child_adv.abs().max().item()
