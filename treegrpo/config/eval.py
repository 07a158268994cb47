"""The `eval` section: `treegrpo evaluate`, the base model against the trained LoRA on held-out prompts.

Sampling uses the ODE (noise 0) at `sampler.num_inference_steps` and `sampler.guidance_scale`, at
`model.resolution`; sample j of prompt i of the eval set gets seed `seed + i * samples_per_prompt + j`, the same
for both models.

`extra_sets` names more prompt files evaluated the same way and reported beside the eval set (the embedded default:
the world's held-out compositions and RL's own train prompts, beside the RL-unseen eval set).
"""

from __future__ import annotations

from dataclasses import dataclass

from treegrpo.config.base import check
from treegrpo.config.reward import check_reward_names


@dataclass(frozen=True)
class EvalParams:
    rewards: list[str]
    lora: str | None
    num_prompts: int
    samples_per_prompt: int
    seed: int
    batch_size: int
    grid_prompts: int
    output_dir: str
    extra_sets: dict[str, str]

    def __post_init__(self) -> None:
        check(len(self.rewards) > 0, "eval.rewards", list(self.rewards), "must name at least one reward")
        check_reward_names(self.rewards, "eval.rewards")
        check(len(set(self.rewards)) == len(self.rewards), "eval.rewards", list(self.rewards),
              "must not repeat a reward")
        if self.lora is not None:
            check(bool(self.lora.strip()), "eval.lora", self.lora, "must be a LoRA folder, or null for the base only")
        check(self.num_prompts >= 0, "eval.num_prompts", self.num_prompts, "must be >= 0 (0: every eval prompt)")
        check(self.samples_per_prompt >= 1, "eval.samples_per_prompt", self.samples_per_prompt,
              "must be >= 1 (images per prompt; a prompt's score is their mean)")
        check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "must be >= 1 (prompts per pipeline call)")
        check(self.grid_prompts >= 1, "eval.grid_prompts", self.grid_prompts, "must be >= 1 (rows of the image grid)")
        check(bool(self.output_dir.strip()), "eval.output_dir", self.output_dir, "must be a folder path")
        for name, path in self.extra_sets.items():
            check(name.isidentifier() and name != "eval", f"eval.extra_sets.{name}", path,
                  "the set's name must be a word (letters, digits, _) other than 'eval'")
            check(bool(path.strip()), f"eval.extra_sets.{name}", path,
                  "must be a prompt file (.jsonl, .txt, .parquet)")
