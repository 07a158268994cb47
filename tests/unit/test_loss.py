"""grpo_loss (SPEC §6): hand numbers, clipping, gradients, and the direction of one update."""

from __future__ import annotations

import math

import pytest
import torch

from treegrpo.core.loss import grpo_loss, kl_to_reference, warmup_learning_rate
from treegrpo.core.sde import child_log_probs


def test_hand_numbers():
    # log-ratio (0.1, 0, -0.1, 1e-5): ratio (e^0.1 = 1.105171, 1, e^-0.1 = 0.904837, 1.00001), clip 0.2.
    # A = (1, 2, -1, 3): min(rA, clip(r) A) = (1.105171, 2, -0.904837, 3.00003)
    # mean loss = -(1.105171 + 2 - 0.904837 + 3.00003) / 4 = -1.300091
    old = torch.tensor([0.5, -1.0, 2.0, 0.0])
    new = old + torch.tensor([0.1, 0.0, -0.1, 1e-5])
    adv = torch.tensor([1.0, 2.0, -1.0, 3.0])
    out = grpo_loss(new, old, adv, clip_range=0.2)
    torch.testing.assert_close(out.ratio, torch.tensor([math.exp(0.1), 1.0, math.exp(-0.1), 1.00001]))
    assert out.loss.item() == pytest.approx(-1.300091, abs=1e-5)
    assert out.clip_fraction.item() == 0.0
    # approx_kl = 0.5 * mean(0.01, 0, 0.01, 1e-10) = 0.0025
    assert out.approx_kl.item() == pytest.approx(0.0025, rel=1e-4)
    summed = grpo_loss(new, old, adv, clip_range=0.2, reduction="sum")
    assert summed.loss.item() == pytest.approx(4 * -1.300091, abs=4e-5)


def test_clipping_and_clip_fraction():
    # clip 0.05: ratio e^0.1 with A = 1 is clipped to 1.05 (loss -1.05, no gradient);
    # ratio e^-0.1 with A = 1 takes the unclipped, smaller r A = 0.904837 (pessimistic bound keeps the gradient).
    old = torch.zeros(2)
    new = torch.tensor([0.1, -0.1], requires_grad=True)
    out = grpo_loss(new, old, torch.ones(2), clip_range=0.05)
    assert out.clip_fraction.item() == 1.0
    assert out.loss.item() == pytest.approx(-(1.05 + math.exp(-0.1)) / 2, abs=1e-6)
    out.loss.backward()
    # d/dlogp of -r A / 2 = -r / 2 on the second edge; zero on the clipped first edge.
    torch.testing.assert_close(new.grad, torch.tensor([0.0, -math.exp(-0.1) / 2]))


def test_zero_advantage_gives_zero_gradient():
    new = torch.tensor([0.3, -0.2, 0.0], requires_grad=True)
    out = grpo_loss(new, torch.zeros(3), torch.zeros(3), clip_range=1e-4)
    out.loss.backward()
    assert torch.equal(new.grad, torch.zeros(3))


def test_on_policy_ratio_is_one_and_gradient_is_minus_advantage():
    # At ratio 1 the gradient of the mean loss w.r.t. each log-prob is -A_e / E.
    logp = torch.tensor([[0.2, 0.4], [-0.1, 0.3]], requires_grad=True)
    adv = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    out = grpo_loss(logp, logp.detach(), adv, clip_range=1e-4)
    assert torch.equal(out.ratio, torch.ones(2, 2))
    out.loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 4)


def test_positive_advantage_raises_that_edge_log_prob():
    # A tiny linear "model": the step mean is mu = w * x for one parent x (1, 1, 2, 2); std 0.5; k = 2 children.
    # logp(child) = mean over 4 elements of -(c - w x)^2 / (2 * 0.25) - log 0.5 - log sqrt(2 pi).
    # One SGD step on the loss with A = (+1, 0) moves w along d logp_0 / dw / 2 (mean over 2 edges):
    #   d logp_0 / dw = mean_j (c_0j - w x_j) x_j / 0.25.
    x = torch.tensor([1.0, 2.0, -1.0, 0.5]).view(1, 1, 2, 2)
    children = torch.stack([x * 1.5, x * 0.2], dim=1)  # (1, 2, 1, 2, 2): child 0 wants w = 1.5, child 1 w = 0.2
    std = torch.full((1, 1, 1, 1), 0.5)
    w = torch.tensor(1.0, requires_grad=True)
    old = child_log_probs(w.detach() * x, std, children)  # (1, 2)
    out = grpo_loss(child_log_probs(w * x, std, children), old, torch.tensor([[1.0, 0.0]]), clip_range=0.2)
    out.loss.backward()
    # sum_j x_j^2 = 1 + 4 + 1 + 0.25 = 6.25; d logp_0 / dw = 0.5 * 6.25 / 4 / 0.25 = 3.125; grad of loss = -3.125 / 2.
    assert w.grad.item() == pytest.approx(-1.5625, rel=1e-5)
    lr = 0.01
    with torch.no_grad():
        w -= lr * w.grad
    new = child_log_probs(w.detach() * x, std, children)
    # logp_0 is quadratic in w: change = 3.125 * dw - (6.25 / 4 / 0.25 / 2) * dw^2 with dw = 0.015625.
    dw = 0.015625
    assert (new - old)[0, 0].item() == pytest.approx(3.125 * dw - 3.125 * dw**2, rel=1e-3)
    assert (new - old)[0, 1].item() < 0  # the other edge, which pulls w towards 0.2, loses probability


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="reduction='max'"):
        grpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1, reduction="max")
    with pytest.raises(ValueError, match="clip_range=0"):
        grpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), 0)


def test_kl_to_reference_by_hand():
    # Means differ by 0.2 everywhere, std 0.5: KL per element 0.04 / (2 * 0.25) = 0.08.
    mean = torch.zeros(2, 1, 2, 2)
    out = kl_to_reference(mean, mean + 0.2, torch.full((2, 1, 1, 1), 0.5))
    torch.testing.assert_close(out, torch.full((2,), 0.08))


def test_warmup_rises_linearly_to_the_peak_then_holds():
    # W = 4, peak 1e-3: steps 0..3 get 1/4, 2/4, 3/4, 4/4 of it, every later step the peak
    rates = [warmup_learning_rate(1e-3, i, 4) for i in range(6)]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rel=1e-12)
    assert warmup_learning_rate(1e-3, 0, 0) == 1e-3  # W = 0: no warm-up
