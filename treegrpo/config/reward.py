"""The `reward` section: which reward models train the policy, and their weights (SPEC §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from treegrpo.config.base import check


@dataclass(frozen=True)
class RewardParams:
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        check(len(self.weights) > 0, "reward.weights", dict(self.weights), "must name at least one reward")
        for name, w in self.weights.items():
            check(w > 0, f"reward.weights.{name}", w, "must be > 0 (drop the reward instead of weighting it 0)")
