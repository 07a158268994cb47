"""The SD3 pipeline as the policy a recipe trains: prompts -> embeddings -> velocity -> images.

`SD3Policy` owns what a recipe needs of the pipeline: the pipe, its transformer (the module the LoRA is added to),
the sampler's sigmas, the latent shape and the compute dtype. It offers the three things a recipe does with them:
`encode` an iteration's prompts once, a `velocity` function over those embeddings (the math core's protocol,
`treegrpo.core.tree.VelocityFn`), and `decode` final latents to images. Sampling and the update both take their
velocity function from `velocity`, so both see the same inputs (CFG arrangement, dtype): the on-policy ratio is 1
before the first update (SPEC §6).

Notation: B = prompts, N = num_inference_steps, C, h, w = latent channels and size, n = latents decoded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from treegrpo.config import ModelParams, SamplerParams
from treegrpo.models.pipeline import DTYPES, load_pipeline
from treegrpo.models.sd3 import CfgVelocity, PromptEmbeds, decode, encode_prompts, latent_shape, scheduler_sigmas


class SD3Policy:
    """An SD3 pipeline with the sampler's settings, seen as a policy.

    Args (constructor):
        pipe: a loaded SD3 pipeline (`treegrpo.models.pipeline.load_pipeline`).
        model: `params.model` (resolution, dtype, max_sequence_length).
        sampler: `params.sampler` (num_inference_steps, guidance_scale).
        device: where the transformer runs; the sigmas and the prompt embeddings are put there.
    """

    def __init__(self, pipe, model: ModelParams, sampler: SamplerParams, device: torch.device):
        self.pipe = pipe
        self.transformer: torch.nn.Module = pipe.transformer  # the LoRA is added to this module, in place
        self.device = device
        self.sigmas = scheduler_sigmas(pipe, sampler.num_inference_steps).to(device)  # (N + 1,)
        self.latent_shape = latent_shape(pipe, model.resolution)  # (C, h, w)
        self.dtype = DTYPES[model.dtype]
        self.guidance_scale = sampler.guidance_scale
        self.max_sequence_length = model.max_sequence_length

    @classmethod
    def load(cls, model: ModelParams, sampler: SamplerParams, device: torch.device) -> SD3Policy:
        """Load `model.pretrained` onto `device` and wrap it."""
        return cls(load_pipeline(model, device=device), model, sampler, device)

    def encode(self, prompts: list[str]) -> PromptEmbeds:
        """The B prompts' embeddings with their empty-prompt negatives, on `device` (no gradients)."""
        return encode_prompts(self.pipe, prompts, self.device, self.max_sequence_length)

    def velocity(self, embeds: PromptEmbeds, transformer: torch.nn.Module | None = None) -> CfgVelocity:
        """`velocity_fn(latents, step_index, prompt_index) -> velocity` with CFG over the prompts of `embeds`.

        Args:
            embeds: from `encode`; `prompt_index` indexes its B prompts.
            transformer: the module to run; None: `self.transformer`. A trainer passes its accelerate-prepared
                wrapper of `self.transformer` (DDP) for the forwards that take gradients, so they are all-reduced.
        Returns:
            the velocity function: (n, C, h, w) latents, (n,) step indices, (n,) prompt indices -> (n, C, h, w)
            float32.
        """
        module = self.transformer if transformer is None else transformer
        return CfgVelocity(module, embeds, self.sigmas, self.guidance_scale, self.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """(n, C, h, w) latents at sigma = 0 -> (n, 3, H, W) float32 images in [0, 1] (no gradients)."""
        return decode(self.pipe, latents)
