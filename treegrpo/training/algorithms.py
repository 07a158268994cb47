"""TreeGRPO and the baselines as shapes of one sampler (SPEC §7): which steps are SDE, how many children a node
gets, which steps are trained, and how rewards are normalised.

Every recipe is `sample_trees` with some (window start s, depth d, branching k, trees per prompt): a GRPO trajectory
is a tree with k = 1 whose window covers every step but the last, so each of its edges carries the trajectory's
advantage through the same backup code (a softmax over one child is that child). This keeps the four recipes in one
trainer: the differences are the data here, not copies of the loop.

| algorithm | window (SDE steps)                | k | groups        | trained steps            | normalisation |
|-----------|-----------------------------------|---|---------------|--------------------------|---------------|
| treegrpo  | d steps from s (sampler.window)   | k | T trees       | every window parent      | per prompt    |
| grpo      | 0 .. N-2                          | 1 | G trajectories| timestep_fraction of them| per prompt    |
| mixgrpo   | mix_window steps, sliding         | 1 | G trajectories| every window step        | per prompt    |
| ddpo      | 0 .. N-2                          | 1 | G trajectories| timestep_fraction of them| batch/prompt  |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from treegrpo.config.train import ALGORITHMS
from treegrpo.core.window import WindowSchedule, choose_window_start, derive_seed


@dataclass(frozen=True)
class Shape:
    """One iteration's sampler shape and training rules."""

    window_start: int
    depth: int
    branching: int
    trees_per_prompt: int
    shared_noise: bool  # every trajectory of a prompt starts from the same noise
    normalization: str  # "prompt": z-scores within each prompt's group; "batch": over the whole batch
    trained_levels: tuple[int, ...]  # window levels whose parents are trained


class IterationShape(NamedTuple):
    """`iteration_shape`'s answer: this iteration's shape, and the window state to carry to the next."""

    shape: Shape
    window_state: dict[str, Any] | None  # TreeGRPO's window state (`core.window`); passed through by the baselines


def iteration_shape(params, iteration: int, schedule: WindowSchedule,
                    window_state: dict[str, Any] | None) -> IterationShape:
    """The shape of iteration `iteration` for `params.train.algorithm`, and the window state to carry on.

    Args:
        params: all params (reads train, sampler, baselines).
        iteration: the training iteration index.
        schedule: TreeGRPO's window schedule (from sampler.window).
        window_state: the adaptive window's state.
    Returns:
        IterationShape(shape, window_state).
    """
    algo, s, b = params.train.algorithm, params.sampler, params.baselines
    last = s.num_inference_steps - 1  # the SDE never covers the last step (SPEC §2)
    if algo == "treegrpo":
        start, window_state = choose_window_start(schedule, iteration, window_state)
        return IterationShape(Shape(start, s.depth, s.branching, s.trees_per_prompt, False, "prompt",
                                    tuple(range(s.depth))), window_state)
    if algo == "mixgrpo":
        depth = min(b.mix_window, last)
        num_starts = last - depth + 1
        start = (b.mix_stride * (iteration // b.mix_every)) % num_starts  # progressive: slides from the start
        return IterationShape(Shape(start, depth, 1, b.group_size, b.shared_noise, "prompt", tuple(range(depth))),
                              window_state)
    # grpo and ddpo: SDE on every step but the last; train a random timestep_fraction of them each iteration
    trained = max(1, math.ceil(b.timestep_fraction * last))
    gen = torch.Generator().manual_seed(derive_seed("timesteps", params.train.seed, iteration))
    levels = tuple(sorted(torch.randperm(last, generator=gen)[:trained].tolist()))
    if algo == "grpo":
        return IterationShape(Shape(0, last, 1, b.group_size, b.shared_noise, "prompt", levels), window_state)
    if algo == "ddpo":  # DDPO: independent noise per trajectory, batch-level (or per-prompt) normalisation
        return IterationShape(Shape(0, last, 1, b.group_size, False, b.ddpo_normalization, levels), window_state)
    raise ValueError(f"train.algorithm={algo!r}: must be one of {', '.join(ALGORITHMS)}")
