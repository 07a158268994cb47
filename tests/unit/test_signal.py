"""The tree-signal diagnostics on hand-worked values."""

import math

import pytest
import torch

from treegrpo.core.signal import backup_ess, gradient_snr, level_spread, reward_spread, tree_signal


def test_reward_spread_counts_ties_and_takes_population_std():
    # prompt 0: [1, 1, 1] ties (std 0); prompt 1: [0, 2] -> population std 1; prompt 2: [0, 0, 3, 3] -> std 1.5
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 3.0])
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    spread = reward_spread(rewards, group)
    assert spread.std_mean == pytest.approx((0.0 + 1.0 + 1.5) / 3)
    assert spread.std_min == 0.0
    assert spread.tie_fraction == pytest.approx(1 / 3)


def test_reward_spread_no_ties():
    spread = reward_spread(torch.tensor([0.0, 1.0, 5.0, 7.0]), torch.tensor([0, 0, 1, 1]))
    assert spread.tie_fraction == 0.0
    assert spread.std_min == pytest.approx(0.5)


def test_ess_of_uniform_weights_is_k_and_of_one_hot_is_one():
    k = 3
    uniform = torch.zeros(1, k)  # equal log-probs: softmax weights 1/3 each -> 1 / (3 * 1/9) = 3
    one_hot = torch.tensor([[0.0, -1e4, -1e4]])  # softmax puts all the weight on the first child
    assert backup_ess(uniform).item() == pytest.approx(k)
    assert backup_ess(one_hot).item() == pytest.approx(1.0)
    # mean backup is uniform whatever the log-probs
    assert backup_ess(one_hot, mode="mean").item() == pytest.approx(k)


def test_ess_of_two_children_by_hand():
    # log-probs (log 3, 0): weights (3/4, 1/4) -> 1 / (9/16 + 1/16) = 1.6
    assert backup_ess(torch.tensor([[math.log(3.0), 0.0]])).item() == pytest.approx(1.6)


def test_level_spread_per_level():
    adv = torch.tensor([[1.0, -1.0], [2.0, 2.0], [0.0, 4.0]])  # level 0: [1, -1]; level 1: [2, 2, 0, 4]
    level = torch.tensor([0, 1, 1])
    assert level_spread(adv, level, depth=2) == pytest.approx([1.0, math.sqrt(2.0)])


def test_tree_signal_keys_and_no_ess_for_depth_one():
    rewards, group = torch.tensor([0.0, 1.0]), torch.tensor([0, 0])
    out = tree_signal(rewards, group, torch.tensor([[0.5, -0.5]]), torch.tensor([0]), torch.zeros(1, 2), depth=1)
    assert out["tie_fraction"] == 0.0 and out["adv_std_level_0"] == pytest.approx(0.5)
    assert "backup_ess_mean" not in out  # a depth-1 window backs nothing up
    deep = tree_signal(rewards, group, torch.zeros(3, 2), torch.tensor([0, 1, 1]),
                       torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.log(3.0), 0.0]]), depth=2)
    assert deep["backup_ess_mean"] == pytest.approx((2.0 + 1.6) / 2)
    assert deep["backup_ess_min"] == pytest.approx(1.6)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        reward_spread(torch.zeros(3), torch.zeros(2, dtype=torch.long))


# four unit 2-D deviations that sum to 0, ordered so the split halves differ: (1,0),(0,1) | (-1,0),(0,-1)
E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def test_gradient_snr_by_hand():
    # g_i = mu + e_i with mu = (2, 0): g_bar = mu exactly; noise = sum ||e_i||^2 / (M - 1) = 4 / 3;
    # signal = ||mu||^2 - noise / M = 4 - 1/3 = 11/3; snr = (11/3) / (4/3) = 11/4; b = 1 / (3 * 11/4) = 4/33.
    # halves: mu + ((1,0) + (0,1)) / 2 = (2.5, 0.5) and mu + ((-1,0) + (0,-1)) / 2 = (1.5, -0.5):
    # cos = (3.75 - 0.25) / sqrt(6.5 * 2.5) = 3.5 / sqrt(16.25)
    out = gradient_snr(torch.tensor([2.0, 0.0]) + E)
    assert out.noise == pytest.approx(4 / 3) and out.signal == pytest.approx(11 / 3)
    assert out.snr_per_group == pytest.approx(11 / 4) and out.groups_for_cos_half == pytest.approx(4 / 33)
    assert out.split_half_cos == pytest.approx(3.5 / math.sqrt(16.25))
    assert out.zero_groups == 0


def test_gradient_snr_without_signal():
    # g_i = e_i, symmetric around 0: g_bar = 0, noise = 4/3, signal = 0 - (4/3) / 4 = -1/3, snr = -1/M = -1/4;
    # no batch size reaches cosine 0.5; the halves (0.5, 0.5) and (-0.5, -0.5) point opposite ways
    out = gradient_snr(E)
    assert out.noise == pytest.approx(4 / 3) and out.signal == pytest.approx(-1 / 3)
    assert out.snr_per_group == pytest.approx(-1 / 4) and out.groups_for_cos_half == math.inf
    assert out.split_half_cos == pytest.approx(-1.0)


def test_gradient_snr_of_zero_and_equal_gradients():
    zero = gradient_snr(torch.zeros(3, 5))  # every group's leaves tied: no gradient at all
    assert zero.zero_groups == 3 and zero.noise == 0.0 and zero.signal == 0.0
    assert math.isnan(zero.snr_per_group) and math.isnan(zero.split_half_cos)
    same = gradient_snr(torch.tensor([[3.0, 4.0]]).repeat(4, 1))  # no noise: every group points the same way
    assert same.snr_per_group == math.inf and same.groups_for_cos_half == 0.0 and same.split_half_cos == 1.0


def test_gradient_snr_needs_two_groups():
    with pytest.raises(ValueError, match=r"M=1 prompt group.*more prompts per iteration or more iterations"):
        gradient_snr(torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"\(4,\): expected \(M, D\)"):
        gradient_snr(torch.ones(4))
