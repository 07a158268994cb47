"""Window start distribution and strategies (SPEC §3)."""

from __future__ import annotations

import json

import pytest
import torch

from treegrpo.core.window import (
    WindowSchedule,
    choose_window_start,
    derive_seed,
    initial_window_state,
    iteration_generator,
    observe_reward,
    sample_window_start,
    window_start_probs,
)


def test_probs_are_truncated_geometric():
    # N = 10, d = 3: starts {0..6}; alpha = 0.5: weights 1, 1/2, ..., 1/64, total 127/64.
    probs = window_start_probs(10, 3, 0.5)
    assert probs.shape == (7,)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert probs[0].item() == pytest.approx(64 / 127, abs=1e-12)
    assert probs[6].item() == pytest.approx(1 / 127, abs=1e-12)
    torch.testing.assert_close(probs[1:] / probs[:-1], torch.full((6,), 0.5, dtype=torch.float64))
    uniform = window_start_probs(10, 3, 1.0)
    torch.testing.assert_close(uniform, torch.full((7,), 1 / 7, dtype=torch.float64))


@pytest.mark.parametrize("depth", [1, 3, 9])
def test_window_never_reaches_last_step(depth):
    n = 10
    probs = window_start_probs(n, depth, 0.7)
    assert probs.numel() == n - depth  # the largest start s = N - 1 - d ends the window at step N - 2
    for iteration in range(30):
        s = sample_window_start(n, depth, 0.9, seed=3, iteration=iteration)
        assert 0 <= s and s + depth <= n - 1


def test_depth_outside_range_is_rejected():
    with pytest.raises(ValueError, match="depth=10"):
        window_start_probs(10, 10, 0.5)


def test_random_draws_repeat_for_same_seed_and_iteration_and_cover_support():
    schedule = WindowSchedule("random", num_inference_steps=10, depth=3, alpha=0.9, seed=7)
    first = [choose_window_start(schedule, iteration)[0] for iteration in range(300)]
    again = [choose_window_start(schedule, iteration)[0] for iteration in range(300)]
    assert first == again
    assert set(first) == set(range(7))
    other_seed = WindowSchedule("random", num_inference_steps=10, depth=3, alpha=0.9, seed=8)
    assert [choose_window_start(other_seed, e)[0] for e in range(300)] != first
    # alpha = 0.9: P(0) = 0.1 / (1 - 0.9^7) = 0.1917; over 300 draws expect ~57.5 (binomial sd ~6.8).
    assert 30 < first.count(0) < 85


def test_iteration_generator_is_deterministic_and_keyed():
    a = torch.rand(3, generator=iteration_generator(1, 2))
    assert torch.equal(a, torch.rand(3, generator=iteration_generator(1, 2)))
    assert not torch.equal(a, torch.rand(3, generator=iteration_generator(1, 3)))
    assert derive_seed("window", 1, 2) == derive_seed("window", 1, 2) != derive_seed("root", 1, 2)
    assert 0 <= derive_seed(1) < 2**63


def test_shifting_moves_by_stride_every_tau_and_wraps():
    # N = 10, d = 3: starts {0..6}; start 5, stride 2, every 3 iterations: 5 + 2 * (iteration // 3) mod 7, i.e.
    # 5,5,5, 0,0,0 (7 mod 7), 2,2,2, 4,4,4, 6,6,6, 1 (15 mod 7).
    schedule = WindowSchedule("shifting", num_inference_steps=10, depth=3, start=5, stride=2, every=3)
    starts = [choose_window_start(schedule, iteration)[0] for iteration in range(16)]
    assert starts == [5, 5, 5, 0, 0, 0, 2, 2, 2, 4, 4, 4, 6, 6, 6, 1]


def test_fixed_and_bad_start():
    schedule = WindowSchedule("fixed", num_inference_steps=10, depth=3, start=6)
    assert {choose_window_start(schedule, e)[0] for e in range(5)} == {6}
    with pytest.raises(ValueError, match="start=7"):
        WindowSchedule("fixed", num_inference_steps=10, depth=3, start=7)
    with pytest.raises(ValueError, match="strategy='geometric'"):
        WindowSchedule("geometric", num_inference_steps=10, depth=3)


def test_adaptive_rule_on_hand_made_rewards():
    schedule = WindowSchedule(
        "adaptive", num_inference_steps=10, depth=3, alpha=0.5, alpha_min=0.2, alpha_max=0.8, alpha_step=0.1,
        reward_decay=0.5,
    )
    state = initial_window_state(schedule)
    # r = 1.0: first reward, E = 1.0, alpha stays 0.5.
    # r = 2.0: progress 1.0 > 0 -> alpha 0.4; E = 1.5.
    # r = 1.5: progress 0.0 <= 0 -> alpha 0.5; E = 1.5.
    # r = 1.0: progress -0.5 -> alpha 0.6; E = 1.25.
    # r = 1.0: progress -0.25 -> alpha 0.7; E = 1.125.
    # r = 1.0: progress -0.125 -> alpha 0.8; E = 1.0625.
    # r = 1.0: progress -0.0625 -> alpha stays 0.8 (alpha_max); E = 1.03125.
    # r = 5.0, 6.0, 7.0, 8.0: rising -> 0.7, 0.6, 0.5, 0.4.
    expected_alpha = [0.5, 0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4]
    expected_ema = [1.0, 1.5, 1.5, 1.25, 1.125, 1.0625, 1.03125]
    rewards = [1.0, 2.0, 1.5, 1.0, 1.0, 1.0, 1.0, 5.0, 6.0, 7.0, 8.0]
    for i, reward in enumerate(rewards):
        state = observe_reward(schedule, state, reward)
        assert state["alpha"] == pytest.approx(expected_alpha[i]), i
        if i < len(expected_ema):
            assert state["reward_ema"] == pytest.approx(expected_ema[i]), i
    # The state round-trips through JSON and drives the draw like `random` with that alpha.
    restored = json.loads(json.dumps(state))
    start, same_state = choose_window_start(schedule, 12, restored)
    assert same_state == restored
    assert start == sample_window_start(10, 3, restored["alpha"], seed=0, iteration=12)


def test_adaptive_alpha_stays_within_bounds():
    schedule = WindowSchedule("adaptive", num_inference_steps=10, depth=3, alpha=0.5, alpha_min=0.2)
    state = None
    for reward in range(20):  # always improving: alpha walks down to alpha_min and stops
        state = observe_reward(schedule, state, float(reward))
    assert state["alpha"] == pytest.approx(0.2)


def test_non_adaptive_ignores_rewards():
    schedule = WindowSchedule("random", num_inference_steps=10, depth=3, alpha=0.5)
    state = initial_window_state(schedule)
    assert observe_reward(schedule, state, 3.0) == state
