"""The `sampler` section: the tree (or trajectory) sampler's shape and the SDE window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from treegrpo.config.base import check


@dataclass(frozen=True)
class WindowParams:
    """Where the SDE window of depth d sits among the N steps (SPEC §3)."""

    strategy: Literal["random", "shifting", "adaptive", "fixed"]
    alpha: float
    start: int
    stride: int
    every: int

    def __post_init__(self) -> None:
        check(0.0 < self.alpha <= 1.0, "sampler.window.alpha", self.alpha,
              "must be in (0, 1]: small puts the window early, 1 is uniform (paper: 0.5)")
        check(self.start >= 0, "sampler.window.start", self.start, "must be >= 0")
        check(self.stride >= 1, "sampler.window.stride", self.stride, "must be >= 1")
        check(self.every >= 1, "sampler.window.every", self.every, "must be >= 1 (iterations between shifts)")


@dataclass(frozen=True)
class SamplerParams:
    num_inference_steps: int
    guidance_scale: float
    noise_level: float
    branching: int
    depth: int
    trees_per_prompt: int
    max_batch: int
    window: WindowParams

    def __post_init__(self) -> None:
        n = self.num_inference_steps
        check(2 <= n <= 1000, "sampler.num_inference_steps", n, "must be in [2, 1000] (paper: 10)")
        check(self.guidance_scale >= 0, "sampler.guidance_scale", self.guidance_scale,
              "must be >= 0 (<= 1 disables CFG; paper: 4.5)")
        check(0.0 <= self.noise_level <= 2.0, "sampler.noise_level", self.noise_level,
              "must be in [0, 2] (Flow-GRPO's a; 0.7 by default)")
        check(self.branching >= 2, "sampler.branching", self.branching,
              "needs >= 2 children per node to form a group")
        check(1 <= self.depth <= n - 1, "sampler.depth", self.depth,
              f"must be in [1, num_inference_steps - 1 = {n - 1}]: the last step is never inside the window")
        check(self.trees_per_prompt >= 1, "sampler.trees_per_prompt", self.trees_per_prompt, "must be >= 1")
        check(self.max_batch >= 1, "sampler.max_batch", self.max_batch,
              "must be >= 1 (frontier nodes per transformer call)")
        if self.window.strategy == "fixed":
            check(self.window.start + self.depth <= n - 1, "sampler.window.start", self.window.start,
                  f"must satisfy start + depth <= num_inference_steps - 1 = {n - 1}")
