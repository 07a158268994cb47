"""The SD3 pipeline seen through the math core's protocols: prompt embeddings, a CFG velocity function, decoding.

Notation: n = nodes in one transformer call, B = prompts, L = text tokens, D = joint attention width,
C, h, w = latent channels and size.

The velocity function is the only place the transformer runs, for sampling and training alike, so both see the
same inputs (same CFG arrangement, same dtype): the on-policy ratio is 1 before the first update (SPEC §6).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)
ATTENTION_BACKENDS = ("default", "math", "flash", "efficient", "cudnn")  # model.attention_backend


@dataclass(frozen=True)
class PromptEmbeds:
    """Text conditioning for B prompts; the negative (empty-prompt) half is used by CFG."""

    prompt_embeds: Tensor  # (B, L, D)
    pooled_prompt_embeds: Tensor  # (B, P)
    negative_prompt_embeds: Tensor  # (B, L, D)
    negative_pooled_prompt_embeds: Tensor  # (B, P)


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], device: torch.device, max_sequence_length: int) -> PromptEmbeds:
    """Encode prompts with the pipeline's three text encoders (CLIP-L, CLIP-G, T5), plus empty negatives.

    The text encoders may live on the CPU (offloading); the embeddings are moved to `device`. A prompt longer than
    `max_sequence_length` T5 tokens is cut there: said once per prompt (diffusers' own warning, which prints the
    wrong part of the prompt -- it slices at CLIP's length, hence its `['', '']` -- is dropped).
    """
    text_device = pipe.text_encoder.device
    _note_truncated(pipe, prompts, max_sequence_length)
    diffusers_log = logging.getLogger(type(pipe).__module__)
    diffusers_log.addFilter(_drop_t5_truncation_warning)
    try:
        pe, npe, pooled, npooled = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=text_device, num_images_per_prompt=1,
            do_classifier_free_guidance=True, negative_prompt=[""] * len(prompts),
            max_sequence_length=max_sequence_length,
        )
    finally:
        diffusers_log.removeFilter(_drop_t5_truncation_warning)
    return PromptEmbeds(pe.to(device), pooled.to(device), npe.to(device), npooled.to(device))


def _drop_t5_truncation_warning(record: logging.LogRecord) -> bool:
    return "`max_sequence_length` is set to" not in record.getMessage()


_TRUNCATED_SEEN: set[str] = set()  # prompts already reported as cut (a prompt is drawn again and again)


def _note_truncated(pipe, prompts: list[str], max_sequence_length: int) -> None:
    """Warn, once per prompt, about prompts T5 sees only the first `max_sequence_length` tokens of."""
    tokenizer = getattr(pipe, "tokenizer_3", None)
    if tokenizer is None:
        return
    lengths = [len(ids) for ids in tokenizer(prompts).input_ids]
    new = [(n, p) for n, p in zip(lengths, prompts, strict=True)
           if n > max_sequence_length and p not in _TRUNCATED_SEEN]
    if not new:
        return
    _TRUNCATED_SEEN.update(p for _, p in new)
    n, prompt = max(new)
    log.warning("%d prompt(s) longer than model.max_sequence_length=%d T5 tokens are cut there (the longest, %d "
                "tokens: %r); raise model.max_sequence_length to keep them whole", len(new), max_sequence_length, n,
                prompt[:80])


def scheduler_sigmas(pipe, num_inference_steps: int) -> Tensor:
    """The N+1 sigmas (1 > ... > 0) of the pipeline's flow-matching scheduler, taken once (SPEC §1).

    Returns:
        (N + 1,) float32 on the CPU; the scheduler's `step()` is never used (its hidden step index breaks trees).
    """
    scheduler = pipe.scheduler
    scheduler.set_timesteps(num_inference_steps, device="cpu")
    return scheduler.sigmas.detach().float().cpu().clone()  # (N + 1,)


class CfgVelocity:
    """`velocity_fn(latents, step_index, prompt_index) -> velocity` over the SD3 transformer with CFG.

    Args (constructor):
        transformer: the SD3 transformer (with LoRA, if training).
        embeds: the prompt embeddings of this iteration's B prompts.
        sigmas: (N + 1,) the scheduler's sigmas; the transformer's timestep is 1000 * sigma, as in diffusers.
        guidance_scale: CFG scale; <= 1 runs the conditional branch alone.
        dtype: the transformer's compute dtype (inputs are cast to it; the output is float32).
    """

    def __init__(self, transformer, embeds: PromptEmbeds, sigmas: Tensor, guidance_scale: float, dtype: torch.dtype):
        self.transformer = transformer
        self.embeds = embeds
        self.timesteps = sigmas.float() * 1000.0  # (N + 1,)
        self.guidance_scale = guidance_scale
        self.dtype = dtype

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def __call__(self, latents: Tensor, step_index: Tensor, prompt_index: Tensor) -> Tensor:
        e = self.embeds
        device = latents.device
        t = self.timesteps.to(device)[step_index.to(device)]  # (n,)
        p = prompt_index.to(e.prompt_embeds.device)
        hidden, text, pooled = latents, e.prompt_embeds[p], e.pooled_prompt_embeds[p]  # (n, C, h, w) (n, L, D) (n, P)
        if self.cfg:
            hidden = torch.cat([latents, latents])  # (2n, C, h, w): uncond then cond
            text = torch.cat([e.negative_prompt_embeds[p], text])
            pooled = torch.cat([e.negative_pooled_prompt_embeds[p], pooled])
            t = torch.cat([t, t])
        out = self.transformer(
            hidden_states=hidden.to(self.dtype), encoder_hidden_states=text.to(self.dtype),
            pooled_projections=pooled.to(self.dtype), timestep=t.to(self.dtype), return_dict=False,
        )[0].float()  # the step's probabilities are computed in float32 (bf16 gives NaN log-probs)
        if not self.cfg:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)  # (n, C, h, w)


def latent_shape(pipe, resolution: int) -> tuple[int, int, int]:
    """(C, h, w) of the latents for a square image of `resolution` pixels."""
    scale = pipe.vae_scale_factor
    if resolution % (scale * pipe.transformer.config.patch_size):
        raise ValueError(f"model.resolution={resolution}: must be a multiple of "
                         f"{scale * pipe.transformer.config.patch_size} for this pipeline")
    return (pipe.transformer.config.in_channels, resolution // scale, resolution // scale)


@torch.no_grad()
def decode(pipe, latents: Tensor, batch_size: int = 32) -> Tensor:
    """Decode final latents to images.

    Args:
        latents: (n, C, h, w) latents at sigma = 0.
    Returns:
        (n, 3, H, W) float32 images in [0, 1] on the latents' device.
    """
    vae = pipe.vae
    out = []
    for chunk in latents.split(batch_size):
        z = chunk.to(vae.device, vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        img = vae.decode(z, return_dict=False)[0].float()  # (b, 3, H, W) in ~[-1, 1]
        out.append((img / 2 + 0.5).clamp(0, 1))
    return torch.cat(out).to(latents.device)


def _sdpa_context(backend: str):
    """A factory of `torch.nn.attention.sdpa_kernel` contexts pinning `backend` (a null context for "default")."""
    if backend == "default":
        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernel = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    return functools.partial(sdpa_kernel, kernel)


def configure_transformer(transformer: torch.nn.Module, attention_backend: str = "default", compile: bool = False,
                          gradient_checkpointing: bool = False, compile_backend: str = "inductor") -> torch.nn.Module:
    """Set how the SD3 transformer runs, in place (its parameters, names and state dict do not change).

    Args:
        transformer: the SD3 transformer (LoRA already added: compiling first would trace the adapter-less graph).
        attention_backend: `model.attention_backend`; every attention of a forward runs under
            `torch.nn.attention.sdpa_kernel` of that kernel, and so does gradient checkpointing's recomputation in
            the backward (through `torch.utils.checkpoint`'s `context_fn`). "default" lets torch choose.
        compile: `model.compile`: `nn.Module.compile()` (torch.compile of the module's call, in place), so the
            trainer's sampling (no gradients) and update (DDP, gradients) both run the compiled graphs.
        gradient_checkpointing: `train.gradient_checkpointing`.
        compile_backend: torch.compile's backend (inductor: what `model.compile` means; the tests use aot_eager,
            which traces the same graphs without generating code).
    Returns:
        `transformer`.
    """
    if attention_backend not in ATTENTION_BACKENDS:
        raise UserError(f"model.attention_backend={attention_backend!r}: must be one of "
                        f"{', '.join(ATTENTION_BACKENDS)}")
    context = _sdpa_context(attention_backend)
    if gradient_checkpointing:
        def checkpointed(module, *args):
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False,
                                                     context_fn=lambda: (context(), context()))

        transformer.enable_gradient_checkpointing(checkpointed if attention_backend != "default" else None)
    if attention_backend != "default":
        forward = transformer.forward

        @functools.wraps(forward)
        def forward_with_backend(*args, **kwargs):
            try:
                with context():
                    return forward(*args, **kwargs)
            except RuntimeError as err:
                if "No viable backend" not in str(err) and "No available kernel" not in str(err):
                    raise
                raise UserError(f"model.attention_backend={attention_backend!r}: torch has no {attention_backend} "
                                f"attention kernel for these inputs on this device ({err}); use 'default' (torch "
                                "chooses) or 'math' (runs everywhere)") from err

        transformer.forward = forward_with_backend
    if compile:
        transformer.compile(backend=compile_backend)
    return transformer
