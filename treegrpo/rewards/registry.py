"""The reward registry and the factories that build rewards from the `reward` section of params.yaml."""

from __future__ import annotations

import logging
from typing import Any

from treegrpo.config.base import to_dict
from treegrpo.config.reward import RewardParams
from treegrpo.rewards import PAPER_REWARDS, REWARD_NAMES
from treegrpo.rewards.base import Reward
from treegrpo.rewards.clip import AestheticReward, ClipScoreReward, HPSv2Reward
from treegrpo.rewards.composition import Composition, CompositionAccuracy
from treegrpo.rewards.image_reward import ImageRewardReward
from treegrpo.rewards.weight_free import ColorFraction, JpegCompressibility
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

REWARDS: dict[str, type] = {
    "hpsv2": HPSv2Reward,
    "image_reward": ImageRewardReward,
    "aesthetic": AestheticReward,
    "clip_score": ClipScoreReward,
    "jpeg_compressibility": JpegCompressibility,
    "color_fraction": ColorFraction,
    "composition": Composition,
    "composition_accuracy": CompositionAccuracy,
}
assert tuple(REWARDS) == REWARD_NAMES, "treegrpo.rewards.REWARD_NAMES must list the registry, in order"


def reward_kwargs(name: str, params: RewardParams) -> dict[str, Any]:
    """The constructor arguments of reward `name` under `params` (stand-in files when `stand_in_dir` is set)."""
    if name not in PAPER_REWARDS:
        return {}
    common = {"device": params.device, "dtype": params.dtype, "batch_size": params.batch_size}
    if params.stand_in_dir is not None:
        from treegrpo.rewards.stand_ins import ensure_stand_in

        return {**ensure_stand_in(name, params.stand_in_dir), **common, "stand_in": True}
    return {**to_dict(getattr(params, name)), **common}


def build_reward(name: str, params: RewardParams) -> Reward:
    """One reward, not yet loaded (its model loads on the first call).

    Raises:
        UserError: `name` is not in the registry (the message lists it).
    """
    if name not in REWARDS:
        raise UserError(f"reward {name!r}: unknown; the registry has {', '.join(REWARDS)}")
    reward = REWARDS[name](**reward_kwargs(name, params))
    if getattr(reward, "stand_in", False):
        log.warning("reward %s: tiny random-weight STAND-IN from %s (reward.stand_in_dir); its scores mean nothing",
                    name, params.stand_in_dir)
    return reward


def build_rewards(params: RewardParams, names: list[str] | tuple[str, ...] | None = None) -> dict[str, Reward]:
    """name -> reward for `names` (default: the rewards `params.weights` trains with), in that order."""
    return {name: build_reward(name, params) for name in (names if names is not None else params.weights)}
