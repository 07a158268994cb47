"""Reward models behind one protocol.

A reward is a picklable callable class: `reward(images, prompts) -> Tensor (N,)` float32 on the CPU, one score per
image. `images` is a float tensor (N, 3, H, W) in [0, 1] on any device (what the VAE decodes) or a list of PIL
images; `prompts` is a list of N strings. Scoring never builds a graph. Models load lazily, once, on the first call;
a pickled reward travels without its model and reloads it where it lands.

- `hpsv2`, `image_reward`, `aesthetic`, `clip_score`: the paper's four (SPEC §9), each loading its weights from a
  local path or `hf://owner/repo/file`. With `reward.stand_in_dir` set they load tiny random-weight stand-ins
  instead, built in that folder through the same loaders (for CPU runs; every report labels them).
- `jpeg_compressibility`, `color_fraction`: weight-free, for the embedded default and the benchmarks.
- `composition`, `composition_accuracy`: weight-free checks of the world's prompts (`treegrpo.world`): the fraction
  of a prompt's constraints an image meets (objects, counts, colours, positions), and the strict all-met 0/1.

The names are the config's (`treegrpo.config.reward`, which checks `reward.weights` at load time), re-exported here;
the classes, the registry `REWARDS` and the factories live in `treegrpo.rewards.registry`.
"""

from treegrpo.config.reward import PAPER_REWARDS, REWARD_NAMES, WEIGHT_FREE_REWARDS

__all__ = ["PAPER_REWARDS", "REWARD_NAMES", "WEIGHT_FREE_REWARDS"]
