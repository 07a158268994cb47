"""Where the SDE window sits among the sampling steps (SPEC §3), and the seeded generators the run derives.

The window is the d contiguous steps {s, ..., s + d - 1} where the tree branches. The last step (sigma' = 0) is
never in it, so s + d <= N - 1 and s takes one of M = N - d values {0, ..., M - 1}.

Strategies (`WindowSchedule.strategy`):
    fixed     s = start every iteration.
    shifting  s = (start + stride * (iteration // every)) mod M: moves by `stride` every `every` iterations and
              wraps.
    random    s ~ P(s) ∝ alpha^s on {0, ..., M - 1} (paper default), drawn from a generator seeded by
              (seed, iteration) alone, so every rank draws the same window.
    adaptive  as `random`, with alpha adapted to reward progress by `observe_reward` (rule in its docstring).

Notation:
    N      num_inference_steps
    d      window depth
    s      window start
    M      number of allowed starts, N - d
    alpha  truncated-geometric parameter: small puts the window early, 1 is uniform

Words: an iteration is one round of training (sample trees, score, update), the index every draw here is keyed by;
the trainer's passes over one iteration's samples are its epochs (`train.inner_epochs`), which this module never sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

STRATEGIES = ("fixed", "shifting", "random", "adaptive")


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of keys: the same in every process and on every rank (unlike `hash`).

    Args:
        keys: ints or strings, e.g. ("window", seed, iteration) or ("root", seed, iteration, prompt, tree).

    Returns:
        An int in [0, 2^63).
    """
    text = "\x1f".join(str(key) for key in keys)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def iteration_generator(seed: int, iteration: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The window's generator for one training iteration, seeded from (seed, iteration) only: identical on every rank.

    Args:
        seed: the run's seed.
        iteration: the training iteration index.
        device: the generator's device.

    Returns:
        A freshly seeded torch.Generator.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed("window", seed, iteration))
    return generator


def _num_starts(num_inference_steps: int, depth: int) -> int:
    """M = N - d, the number of allowed window starts; raises if the window cannot fit before the last step."""
    if not 1 <= depth <= num_inference_steps - 1:
        raise ValueError(
            f"depth={depth}: must be in [1, num_inference_steps - 1 = {num_inference_steps - 1}]; "
            "the last step is never inside the window"
        )
    return num_inference_steps - depth


def window_start_probs(num_inference_steps: int, depth: int, alpha: float) -> Tensor:
    """The truncated geometric P(s) ∝ alpha^s over the allowed starts.

    Args:
        num_inference_steps: N.
        depth: d, in [1, N - 1].
        alpha: > 0; < 1 favours early starts, 1 is uniform.

    Returns:
        (M,) float64 probabilities summing to 1, M = N - d.
    """
    num_starts = _num_starts(num_inference_steps, depth)
    if not alpha > 0:
        raise ValueError(f"alpha={alpha}: must be > 0 (small puts the window early, 1 is uniform)")
    powers = torch.arange(num_starts, dtype=torch.float64)  # (M,)
    weights = torch.tensor(float(alpha), dtype=torch.float64) ** powers  # (M,) alpha^s
    return weights / weights.sum()  # (M,)


def sample_window_start(num_inference_steps: int, depth: int, alpha: float, seed: int, iteration: int) -> int:
    """Draw s ~ `window_start_probs` from the (seed, iteration) generator.

    Args:
        num_inference_steps: N.
        depth: d.
        alpha: the geometric parameter.
        seed: the run's seed.
        iteration: the training iteration index.

    Returns:
        s in {0, ..., N - d - 1}, the same for the same (seed, iteration, alpha) everywhere.
    """
    probs = window_start_probs(num_inference_steps, depth, alpha)  # (M,)
    draw = torch.multinomial(probs, 1, generator=iteration_generator(seed, iteration))  # (1,)
    return int(draw.item())


@dataclass(frozen=True)
class WindowSchedule:
    """How the window start is chosen each iteration (module docstring); `alpha_*`, `reward_decay` and
    `tolerance` only matter for `adaptive`."""

    strategy: str
    num_inference_steps: int
    depth: int
    alpha: float = 0.5
    start: int = 0
    stride: int = 1
    every: int = 1
    seed: int = 0
    alpha_min: float = 0.1
    alpha_max: float = 1.0
    alpha_step: float = 0.1
    reward_decay: float = 0.9
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"window strategy={self.strategy!r}: must be one of {', '.join(STRATEGIES)}")
        num_starts = _num_starts(self.num_inference_steps, self.depth)
        if self.strategy in ("fixed", "shifting") and not 0 <= self.start < num_starts:
            raise ValueError(
                f"window start={self.start}: must satisfy start + depth <= num_inference_steps - 1, "
                f"i.e. start in [0, {num_starts - 1}]"
            )
        if self.stride < 1 or self.every < 1:
            raise ValueError(f"window stride={self.stride}, every={self.every}: both must be >= 1")
        if not self.alpha > 0:
            raise ValueError(f"window alpha={self.alpha}: must be > 0 (small puts the window early, 1 is uniform)")
        if self.strategy == "adaptive" and not 0 < self.alpha_min <= self.alpha <= self.alpha_max:
            raise ValueError(
                f"window alpha={self.alpha}: adaptive needs 0 < alpha_min <= alpha <= alpha_max, "
                f"here [{self.alpha_min}, {self.alpha_max}]"
            )
        if self.alpha_step < 0 or not 0 <= self.reward_decay < 1:
            raise ValueError(
                f"alpha_step={self.alpha_step}, reward_decay={self.reward_decay}: need alpha_step >= 0 and "
                "reward_decay in [0, 1)"
            )


def initial_window_state(schedule: WindowSchedule) -> dict[str, Any]:
    """The strategy's state before the first iteration: a small JSON-serialisable dict to checkpoint with the run.

    Args:
        schedule: the window schedule.

    Returns:
        {"alpha": float, "reward_ema": float | None}; only `adaptive` ever changes it.
    """
    return {"alpha": float(schedule.alpha), "reward_ema": None}


def choose_window_start(
    schedule: WindowSchedule, iteration: int, state: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """The window start for `iteration` (module docstring), identical on every rank.

    Args:
        schedule: the window schedule.
        iteration: the training iteration index, >= 0.
        state: the state returned by the previous call or `observe_reward` (None: `initial_window_state`).

    Returns:
        (s, state): s in {0, ..., N - d - 1} and the state to pass next time (unchanged by this call).
    """
    state = dict(state) if state is not None else initial_window_state(schedule)
    num_starts = _num_starts(schedule.num_inference_steps, schedule.depth)
    if schedule.strategy == "fixed":
        start = schedule.start
    elif schedule.strategy == "shifting":
        start = (schedule.start + schedule.stride * (iteration // schedule.every)) % num_starts
    else:
        alpha = state["alpha"] if schedule.strategy == "adaptive" else schedule.alpha
        start = sample_window_start(schedule.num_inference_steps, schedule.depth, alpha, schedule.seed, iteration)
    return start, state


def observe_reward(schedule: WindowSchedule, state: dict[str, Any] | None, reward: float) -> dict[str, Any]:
    """Update the `adaptive` strategy's alpha from the iteration's mean reward (a no-op for the other strategies).

    Rule (ours: the paper reports adapting alpha but gives no rule). Keep an exponential moving average E of the
    iteration's mean reward. On each new reward r after the first:
        progress = r - E, then E <- decay * E + (1 - decay) * r;
        progress >  tolerance: alpha <- max(alpha_min, alpha - alpha_step)   (learning: keep the window on the
                                early, high-noise steps where most of the reward gain comes from);
        progress <= tolerance: alpha <- min(alpha_max, alpha + alpha_step)   (stalled: spread windows towards the
                                later, detail-forming steps).
    The first reward only initialises E. Pass the mean over all ranks so every rank holds the same state.

    Args:
        schedule: the window schedule.
        state: the current state (None: `initial_window_state`).
        reward: the iteration's mean (weighted) reward over all ranks.

    Returns:
        The new state {"alpha": float, "reward_ema": float | None}.
    """
    state = dict(state) if state is not None else initial_window_state(schedule)
    if schedule.strategy != "adaptive":
        return state
    reward = float(reward)
    ema = state["reward_ema"]
    if ema is None:
        return {"alpha": state["alpha"], "reward_ema": reward}
    progress = reward - ema
    new_ema = schedule.reward_decay * ema + (1.0 - schedule.reward_decay) * reward
    if progress > schedule.tolerance:
        alpha = max(schedule.alpha_min, state["alpha"] - schedule.alpha_step)
    else:
        alpha = min(schedule.alpha_max, state["alpha"] + schedule.alpha_step)
    return {"alpha": alpha, "reward_ema": new_ema}
