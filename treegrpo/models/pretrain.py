"""Pretraining the tiny SD3.5-architecture pipeline on rendered (prompt, image) pairs.

Two phases, as Stable Diffusion is built: the VAE as an autoencoder, then the transformer with SD3's rectified-flow
loss on the trained VAE's latents.

- VAE: L1 reconstruction of images in [-1, 1] plus a small KL term on the posterior (SD's VAE adds LPIPS and a GAN
  loss, which flat-coloured shapes do not need). Afterwards `scaling_factor` and `shift_factor` are set from the
  latents' statistics, as SD3 did (`z = (latent - shift_factor) * scaling_factor` has mean 0 and std 1).
- Transformer (adapted from diffusers' `train_dreambooth_sd3.py`, continuous instead of indexing the scheduler's
  1000-entry table): u ~ logit-normal(logit_mean, logit_std), sigma = shift * u / (1 + (shift - 1) * u) with the
  scheduler's shift, x_t = (1 - sigma) * x0 + sigma * noise, target = noise - x0, timestep = 1000 * sigma, plain
  MSE. The shift is `scheduler_shift`: the pipeline gets a scheduler with that shift before training, so training
  and every sampler that reads the saved pipeline see the same sigmas. SD3 chose 3.0 for 1024 px, where noise must
  be strong to hide an image; the SD3 paper's resolution rule (shift grows with the square root of the pixel count)
  puts a 64 px image below 1, and at 3.0 most training and sampling steps sit where a 64 px image is already noise.
- The saved transformer is the exponential moving average of its weights (`ema_decay`, torch's `AveragedModel`
  with `get_ema_multi_avg_fn`), as DiT and SD do: a short schedule's last weights carry the last batches' noise.
- A fraction `caption_dropout` of captions is replaced by the empty prompt, so classifier-free guidance has an
  unconditional model to push against.
- Prompts go through the pipeline's own `encode_prompt` (the path sampling uses). The text encoders stay frozen at
  their random weights, so each distinct prompt is encoded once: the random CLIP and T5 features still tell the
  world's prompts apart, and the colour a prompt names shows in the samples (the transformer reads them).

Every random draw comes from one `torch.Generator` seeded by `pretrain.seed`: on the CPU two runs with the same
seed give identical weights. Notation: N = images, P = distinct prompts, b = batch, L = text tokens, D = joint
attention width, C, h, w = latent channels and size.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from treegrpo.config.pretrain import PretrainParams

log = logging.getLogger(__name__)

RenderFn = Callable[[str, int, int], object]  # (prompt, size, seed) -> PIL RGB image
LogFn = Callable[[str, int, float], None]  # (name, step, value)


@dataclass(frozen=True)
class Dataset:
    """Rendered training images and which prompt each shows."""

    prompts: list[str]  # (P,) distinct prompts
    images: Tensor  # (N, 3, H, W) uint8
    prompt_index: Tensor  # (N,) int64 into prompts


@dataclass(frozen=True)
class PromptCache:
    """Text conditioning of every distinct prompt and of the empty prompt, from the pipeline's `encode_prompt`."""

    prompt_embeds: Tensor  # (P, L, D)
    pooled_prompt_embeds: Tensor  # (P, Pd)
    null_prompt_embeds: Tensor  # (L, D)
    null_pooled_prompt_embeds: Tensor  # (Pd,)


@dataclass
class PretrainResult:
    vae_losses: list[float] = field(default_factory=list)  # per VAE step
    losses: list[float] = field(default_factory=list)  # per transformer step
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    images: int = 0
    prompts: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # per phase, time.process_time
    wall_s: dict[str, float] = field(default_factory=dict)


def render_dataset(prompts: list[str], render: RenderFn, size: int, images_per_prompt: int, seed: int) -> Dataset:
    """Render `images_per_prompt` images of every prompt; image j of prompt i uses seed `seed * 1_000_003 + i * n + j`.

    Returns:
        the `Dataset`; images (P * images_per_prompt, 3, size, size) uint8.
    """
    import numpy as np

    if not prompts:
        raise ValueError("pretrain: no training prompts to render; the world's train split is empty")
    arrays, index = [], []
    for i, prompt in enumerate(prompts):
        for j in range(images_per_prompt):
            image = render(prompt, size, seed * 1_000_003 + i * images_per_prompt + j).convert("RGB")
            if image.size != (size, size):
                raise ValueError(f"render({prompt!r}, size={size}) gave a {image.size} image; it must be square")
            arrays.append(np.asarray(image, dtype=np.uint8))
            index.append(i)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return Dataset(list(prompts), images, torch.tensor(index, dtype=torch.long))


def to_unit(images: Tensor) -> Tensor:
    """uint8 (b, 3, H, W) -> float32 in [-1, 1], the VAE's input range."""
    return images.float() / 127.5 - 1.0


def lr_lambda(total: int) -> Callable[[int], float]:
    """Linear warm-up over the first 5% of steps (at least 1), then cosine decay to 10% of the base rate."""
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def random_crop(images: Tensor, crop: int, generator: torch.Generator, align: int = 8) -> Tensor:
    """One random `crop` x `crop` window of the batch, its corner on a multiple of `align` pixels (the VAE's
    downsampling, so a crop's latents sit on the same grid as the whole image's); crop 0 keeps the whole image."""
    size = images.shape[-1]
    if crop == 0 or crop >= size:
        return images
    top, left = (torch.randint((size - crop) // align + 1, (2,), generator=generator) * align).tolist()
    return images[..., top : top + crop, left : left + crop]


def train_vae(vae, data: Dataset, params: PretrainParams, generator: torch.Generator,
              log_fn: LogFn | None = None) -> list[float]:
    """Train `vae` as an autoencoder for `params.vae_steps` steps; returns the per-step loss."""
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=params.vae_learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(params.vae_steps))
    losses = []
    for step in range(params.vae_steps):
        idx = torch.randint(len(data.images), (params.vae_batch_size,), generator=generator)
        x = random_crop(to_unit(data.images[idx]), params.vae_crop, generator)  # (b, 3, crop, crop)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample  # (b, 3, H, W)
        kl = posterior.kl().mean() / x[0].numel()  # per pixel, so the weight does not depend on the resolution
        loss = (recon - x).pow(2).mean() + params.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_fn is not None and step % 50 == 0:
            log_fn("pretrain/vae_loss", step, losses[-1])
    vae.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def encode_latents(vae, images: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Posterior mean and std of every image.

    Returns:
        mean, std: (N, C, h, w) each, raw (before shift and scaling).
    """
    means, stds = [], []
    for chunk in images.split(batch_size):
        dist = vae.encode(to_unit(chunk)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def set_latent_statistics(vae, mean: Tensor, std: Tensor) -> tuple[float, float]:
    """Set the VAE's shift and scaling factors from the latents' moments, as SD3 did.

    The variance of a posterior sample is Var(mean) + E[std^2]; the factors make `(z - shift) * scale` unit-variance.
    """
    shift = mean.mean().item()
    var = mean.var().item() + std.pow(2).mean().item()
    scale = 1.0 / math.sqrt(var)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return scale, shift


@torch.no_grad()
def encode_prompt_cache(pipe, prompts: list[str], max_sequence_length: int, batch_size: int = 256) -> PromptCache:
    """Encode each distinct prompt once, and the empty prompt, with the pipeline's `encode_prompt`."""
    from treegrpo.models.sd3 import encode_prompts

    device = pipe.text_encoder.device
    embeds, pooled, null = [], [], None
    for start in range(0, len(prompts), batch_size):
        e = encode_prompts(pipe, prompts[start : start + batch_size], device, max_sequence_length)
        embeds.append(e.prompt_embeds)
        pooled.append(e.pooled_prompt_embeds)
        null = e
    return PromptCache(torch.cat(embeds), torch.cat(pooled), null.negative_prompt_embeds[0],
                       null.negative_pooled_prompt_embeds[0])


def sample_sigmas(n: int, generator: torch.Generator, logit_mean: float, logit_std: float, shift: float) -> Tensor:
    """SD3's logit-normal sigmas, shifted like the scheduler's: (n,) in (0, 1)."""
    u = torch.sigmoid(logit_mean + logit_std * torch.randn(n, generator=generator))
    return shift * u / (1.0 + (shift - 1.0) * u)


def flow_matching_loss(transformer, x0: Tensor, prompt_embeds: Tensor, pooled_prompt_embeds: Tensor,
                       sigmas: Tensor, noise: Tensor) -> Tensor:
    """SD3's rectified-flow loss.

    Args:
        x0: (b, C, h, w) scaled, shifted clean latents.
        prompt_embeds: (b, L, D); pooled_prompt_embeds: (b, Pd).
        sigmas: (b,) noise levels in (0, 1); noise: (b, C, h, w).
    Returns:
        the scalar mean squared error between the predicted velocity and noise - x0.
    """
    s = sigmas.view(-1, 1, 1, 1)
    x_t = (1.0 - s) * x0 + s * noise  # (b, C, h, w)
    pred = transformer(hidden_states=x_t, encoder_hidden_states=prompt_embeds,
                       pooled_projections=pooled_prompt_embeds, timestep=sigmas * 1000.0, return_dict=False)[0]
    return (pred.float() - (noise - x0)).pow(2).mean()


def conditioning(cache: PromptCache, prompt_index: Tensor, drop: Tensor) -> tuple[Tensor, Tensor]:
    """The batch's text conditioning; rows where `drop` is true get the empty prompt's.

    Returns:
        prompt_embeds (b, L, D), pooled_prompt_embeds (b, Pd).
    """
    embeds = cache.prompt_embeds[prompt_index].clone()  # (b, L, D)
    pooled = cache.pooled_prompt_embeds[prompt_index].clone()  # (b, Pd)
    embeds[drop] = cache.null_prompt_embeds
    pooled[drop] = cache.null_pooled_prompt_embeds
    return embeds, pooled


def train_transformer(transformer, latents: tuple[Tensor, Tensor], prompt_index: Tensor, cache: PromptCache,
                      params: PretrainParams, shift: float, generator: torch.Generator,
                      log_fn: LogFn | None = None) -> list[float]:
    """Train the transformer with the flow-matching loss for `params.steps` steps; returns the per-step loss.

    Args:
        latents: (mean, std) of the scaled, shifted latent posterior, (N, C, h, w) each.
        prompt_index: (N,) prompt of each latent, into `cache`.
        shift: the scheduler's sigma shift.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    transformer.train().requires_grad_(True)
    opt = torch.optim.AdamW(transformer.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(params.steps))
    ema = (AveragedModel(transformer, multi_avg_fn=get_ema_multi_avg_fn(params.ema_decay))
           if params.ema_decay > 0 else None)
    mean, std = latents
    b, losses = params.batch_size, []
    for step in range(params.steps):
        idx = torch.randint(len(mean), (b,), generator=generator)
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)  # (b, C, h, w)
        drop = torch.rand(b, generator=generator) < params.caption_dropout
        embeds, pooled = conditioning(cache, prompt_index[idx], drop)
        sigmas = sample_sigmas(b, generator, params.logit_mean, params.logit_std, shift)
        noise = torch.randn(x0.shape, generator=generator)
        loss = flow_matching_loss(transformer, x0, embeds, pooled, sigmas, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(transformer)
        losses.append(loss.item())
        if log_fn is not None and step % 50 == 0:
            log_fn("pretrain/loss", step, losses[-1])
    if ema is not None:
        with torch.no_grad():
            for mine, averaged in zip(transformer.parameters(), ema.module.parameters(), strict=True):
                mine.copy_(averaged)
    transformer.eval().requires_grad_(False)
    return losses


def pretrain(pipe, prompts: list[str], render: RenderFn, params: PretrainParams, resolution: int,
             max_sequence_length: int, log_fn: LogFn | None = None) -> PretrainResult:
    """Pretrain `pipe` in place: render the data, train the VAE, set its latent statistics, train the transformer.

    Args:
        pipe: a float32 `StableDiffusion3Pipeline` on the CPU (e.g. from `treegrpo build-tiny-model`).
        prompts: the distinct training prompts (the world's TRAIN split only).
        render: draws a prompt's image, `render(prompt, size, seed) -> PIL image`.
        resolution: the image size in pixels (`model.resolution`).
        max_sequence_length: T5 tokens, as sampling uses (`model.max_sequence_length`).
    Returns:
        the losses, the latent statistics and the CPU and wall time of each phase.
    """
    result = PretrainResult()
    generator = torch.Generator().manual_seed(params.seed)

    def timed(name: str, fn):
        cpu, wall = time.process_time(), time.perf_counter()
        out = fn()
        result.cpu_s[name] = time.process_time() - cpu
        result.wall_s[name] = time.perf_counter() - wall
        log.info("pretrain %s: %.1f s CPU, %.1f s wall", name, result.cpu_s[name], result.wall_s[name])
        return out

    data = timed("render", lambda: render_dataset(prompts, render, resolution, params.images_per_prompt, params.seed))
    result.images, result.prompts = len(data.images), len(data.prompts)
    result.vae_losses = timed("vae", lambda: train_vae(pipe.vae, data, params, generator, log_fn))
    mean, std = timed("encode", lambda: encode_latents(pipe.vae, data.images))
    result.scaling_factor, result.shift_factor = set_latent_statistics(pipe.vae, mean, std)
    scaled = ((mean - result.shift_factor) * result.scaling_factor, std * result.scaling_factor)
    cache = timed("text", lambda: encode_prompt_cache(pipe, data.prompts, max_sequence_length))
    # a new scheduler, not register_to_config: the shift also sets the sigma table the scheduler builds at init
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=params.scheduler_shift)
    shift = params.scheduler_shift
    result.losses = timed("transformer", lambda: train_transformer(
        pipe.transformer, scaled, data.prompt_index, cache, params, shift, generator, log_fn))
    return result
