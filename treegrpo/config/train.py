"""The `train` section: the RL recipe, optimiser, precision and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from treegrpo.config.base import check

# the recipes `train.algorithm` names, the one list: TreeGRPO and its three baselines (docs/training.md)
ALGORITHMS = ("treegrpo", "grpo", "mixgrpo", "ddpo")


@dataclass(frozen=True)
class TrainParams:
    algorithm: Literal[ALGORITHMS]  # one of ALGORITHMS
    seed: int
    iterations: int
    prompts_per_iteration: int
    inner_epochs: int
    micro_batch: int
    learning_rate: float
    warmup_iterations: int
    weight_decay: float
    max_grad_norm: float
    clip_range: float
    adv_clip_max: float
    backup: Literal["softmax", "mean"]
    temperature: float
    kl_beta: float
    loss_reduction: Literal["mean", "sum"]
    recompute_old_log_prob: bool
    mixed_precision: Literal["no", "bf16", "fp16"]
    gradient_checkpointing: bool
    checkpoint_every: int
    keep_checkpoints: int
    max_bad_steps: int
    sample_every: int
    output_dir: str

    def __post_init__(self) -> None:
        check(self.iterations >= 1, "train.iterations", self.iterations, "must be >= 1")
        check(self.prompts_per_iteration >= 1, "train.prompts_per_iteration", self.prompts_per_iteration,
              "must be >= 1")
        check(self.inner_epochs >= 1, "train.inner_epochs", self.inner_epochs, "must be >= 1")
        check(self.micro_batch >= 1, "train.micro_batch", self.micro_batch, "must be >= 1 (parents per micro-batch)")
        check(0 < self.learning_rate <= 1.0, "train.learning_rate", self.learning_rate,
              "must be in (0, 1] (paper: 1e-5)")
        check(self.warmup_iterations >= 0, "train.warmup_iterations", self.warmup_iterations,
              "must be >= 0 (iterations of linear learning-rate warm-up; 0: none)")
        check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0 (paper: 0.01)")
        check(self.max_grad_norm > 0, "train.max_grad_norm", self.max_grad_norm, "must be > 0")
        check(0 < self.clip_range < 1, "train.clip_range", self.clip_range, "must be in (0, 1) (peers: 1e-4)")
        check(self.adv_clip_max > 0, "train.adv_clip_max", self.adv_clip_max, "must be > 0 (peers: 5)")
        check(self.temperature > 0, "train.temperature", self.temperature, "must be > 0 (paper: 1)")
        check(self.kl_beta >= 0, "train.kl_beta", self.kl_beta, "must be >= 0 (0 disables the KL term)")
        check(self.checkpoint_every >= 1, "train.checkpoint_every", self.checkpoint_every, "must be >= 1")
        check(self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, "must be >= 1")
        check(self.max_bad_steps >= 1, "train.max_bad_steps", self.max_bad_steps, "must be >= 1")
        check(self.sample_every >= 0, "train.sample_every", self.sample_every,
              "must be >= 0 (iterations between sample grids; 0: none)")
        check(bool(self.output_dir.strip()), "train.output_dir", self.output_dir, "must be a folder path")
