"""The `pretrain` section: `treegrpo pretrain`, the tiny pipeline trained on the world's rendered TRAIN prompts.

Two phases, one after the other: the VAE as an autoencoder (`vae_steps`), then the transformer with SD3's
rectified-flow loss (`steps`) on the latents of the trained VAE. The images are `model.resolution` pixels square;
the starting pipeline is the one `tiny_model.path` holds, the result goes to `output`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from treegrpo.config.base import check


@dataclass(frozen=True)
class PretrainParams:
    seed: int
    output: str
    report: str  # pretraining's summary (losses, latent statistics, times): outside `output`, so the model
    #   folder holds only what a re-run with the same seed reproduces byte for byte (its DVC hash stays)
    images_per_prompt: int  # renders of each train prompt (seeded variation), encoded once into the latent cache
    vae_steps: int
    vae_batch_size: int
    vae_crop: int  # pixels: the VAE trains on random crops (convolutions do not care), 0 = whole images
    vae_learning_rate: float
    vae_kl_weight: float
    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    caption_dropout: float
    logit_mean: float
    logit_std: float
    ema_decay: float  # the saved transformer is the exponential moving average of its weights (0: the last step's)
    scheduler_shift: float  # the flow-matching sigma shift, set on the scheduler before training, saved with it

    def __post_init__(self) -> None:
        check(bool(self.output.strip()), "pretrain.output", self.output,
              "must be a folder path, e.g. models/world-sd3")
        inside = PurePath(self.report).is_relative_to(PurePath(self.output))
        check(self.report.endswith(".json") and not inside, "pretrain.report", self.report,
              "must be a .json file path outside pretrain.output, e.g. outputs/pretrain/pretrain.json")
        check(self.images_per_prompt >= 1, "pretrain.images_per_prompt", self.images_per_prompt, "must be >= 1")
        for key in ("vae_steps", "steps"):
            value = getattr(self, key)
            check(value >= 0, f"pretrain.{key}", value, "must be >= 0 (0 skips that phase)")
        for key in ("vae_batch_size", "batch_size"):
            value = getattr(self, key)
            check(value >= 1, f"pretrain.{key}", value, "must be >= 1")
        for key in ("vae_learning_rate", "learning_rate"):
            value = getattr(self, key)
            check(0.0 < value < 1.0, f"pretrain.{key}", value, "must be in (0, 1), e.g. 1e-3 for AdamW")
        check(self.vae_crop == 0 or (self.vae_crop >= 8 and self.vae_crop % 8 == 0), "pretrain.vae_crop",
              self.vae_crop, "must be 0 (whole images) or a multiple of 8 (the VAE's downsampling), e.g. 32")
        check(self.vae_kl_weight >= 0.0, "pretrain.vae_kl_weight", self.vae_kl_weight, "must be >= 0")
        check(self.weight_decay >= 0.0, "pretrain.weight_decay", self.weight_decay, "must be >= 0")
        check(0.0 <= self.caption_dropout < 1.0, "pretrain.caption_dropout", self.caption_dropout,
              "must be in [0, 1): the fraction of captions replaced by \"\" (about 0.1 for guidance)")
        check(0.0 <= self.ema_decay < 1.0, "pretrain.ema_decay", self.ema_decay,
              "must be in [0, 1): 0 keeps the last step's weights, 0.999 averages over ~1,000 steps")
        check(self.scheduler_shift > 0.0, "pretrain.scheduler_shift", self.scheduler_shift,
              "must be > 0 (SD3.5 uses 3.0 at 1024 px; 1.0 leaves the sigmas unshifted)")
        check(self.logit_std > 0.0, "pretrain.logit_std", self.logit_std,
              "must be > 0 (SD3's logit-normal sigma sampling uses 1.0)")
