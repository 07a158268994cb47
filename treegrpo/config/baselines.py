"""The `baselines` section: how the GRPO, MixGRPO and DDPO recipes differ from TreeGRPO (SPEC §7).

Model, schedule, rewards, prompts and NFE are shared with TreeGRPO; only the sampler shape, the trained steps and the
advantage normalisation change, selected by `train.algorithm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from treegrpo.config.base import check


@dataclass(frozen=True)
class BaselineParams:
    group_size: int
    shared_noise: bool
    timestep_fraction: float
    mix_window: int
    mix_stride: int
    mix_every: int
    ddpo_normalization: Literal["batch", "prompt"]

    def __post_init__(self) -> None:
        check(self.group_size >= 2, "baselines.group_size", self.group_size,
              "needs >= 2 trajectories per prompt to form a group")
        check(0 < self.timestep_fraction <= 1, "baselines.timestep_fraction", self.timestep_fraction,
              "must be in (0, 1]: the fraction of SDE steps trained per trajectory")
        check(self.mix_window >= 1, "baselines.mix_window", self.mix_window, "must be >= 1 (MixGRPO's SDE steps)")
        check(self.mix_stride >= 1, "baselines.mix_stride", self.mix_stride, "must be >= 1")
        check(self.mix_every >= 1, "baselines.mix_every", self.mix_every, "must be >= 1 (iterations per shift)")
