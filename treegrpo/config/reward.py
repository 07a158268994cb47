"""The `reward` section: which reward models train the policy, their weights (SPEC §5), and where each model's
weights come from (SPEC §9).

Weight files are named by a local path or `hf://owner/repo/file` (the Hugging Face cache; downloaded when the hub is
reachable). `stand_in_dir` swaps the paper's four for tiny random-weight stand-ins built in that folder (CPU runs
and tests); reports label their scores as stand-ins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from treegrpo.config.base import check

# The reward names params.yaml may use. Config is the ground floor, so the names live here; the reward adapters
# (`treegrpo.rewards.registry.REWARDS`) map each to its class, and a check there keeps the two lists equal.
PAPER_REWARDS = ("hpsv2", "image_reward", "aesthetic", "clip_score")  # the paper's four, its Table 1's column order
WEIGHT_FREE_REWARDS = ("jpeg_compressibility", "color_fraction", "composition", "composition_accuracy")
REWARD_NAMES = PAPER_REWARDS + WEIGHT_FREE_REWARDS


def check_reward_names(names, where: str) -> None:
    """Every name must be in the reward registry; the message lists it."""
    for name in names:
        check(name in REWARD_NAMES, where, name, f"unknown reward; the registry has {', '.join(REWARD_NAMES)}")


def _check_source(value: str, where: str) -> None:
    check(bool(value.strip()), where, value, "must be a local path or hf://owner/repo/file")


@dataclass(frozen=True)
class ClipModelParams:
    """An open_clip model: its architecture and a full CLIP checkpoint."""

    model: str  # open_clip architecture name (ViT-H-14), or a path to a model-config .json
    checkpoint: str

    def __post_init__(self) -> None:
        check(bool(self.model.strip()), "reward.*.model", self.model, "must name an open_clip architecture")
        _check_source(self.checkpoint, "reward.*.checkpoint")


@dataclass(frozen=True)
class AestheticParams:
    clip_model: str  # the CLIP whose image features the head reads: ViT-L/14 (OpenAI) for the LAION head
    clip_checkpoint: str
    head: str  # the MLP's state dict

    def __post_init__(self) -> None:
        _check_source(self.clip_checkpoint, "reward.aesthetic.clip_checkpoint")
        _check_source(self.head, "reward.aesthetic.head")


@dataclass(frozen=True)
class ImageRewardParams:
    checkpoint: str
    med_config: str  # BLIP's BERT config (med_config.json)
    bert_vocab: str  # bert-base-uncased's vocab.txt
    vit: str  # 'large' (ImageReward-v1.0), or a JSON file describing a small ViT (tests)

    def __post_init__(self) -> None:
        for key in ("checkpoint", "med_config", "bert_vocab"):
            _check_source(getattr(self, key), f"reward.image_reward.{key}")


@dataclass(frozen=True)
class RewardParams:
    weights: Mapping[str, float]
    device: str
    dtype: Literal["float32", "bfloat16", "float16"]
    batch_size: int
    stand_in_dir: str | None
    hpsv2: ClipModelParams
    clip_score: ClipModelParams
    aesthetic: AestheticParams
    image_reward: ImageRewardParams

    def __post_init__(self) -> None:
        check(len(self.weights) > 0, "reward.weights", dict(self.weights), "must name at least one reward")
        check_reward_names(self.weights, "reward.weights")
        for name, w in self.weights.items():
            check(w > 0, f"reward.weights.{name}", w, "must be > 0 (drop the reward instead of weighting it 0)")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "reward.device",
              self.device, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        check(self.batch_size >= 1, "reward.batch_size", self.batch_size, "must be >= 1 (images per forward)")
        if self.stand_in_dir is not None:
            check(bool(self.stand_in_dir.strip()), "reward.stand_in_dir", self.stand_in_dir,
                  "must be a folder path, or null to use the real weights")
