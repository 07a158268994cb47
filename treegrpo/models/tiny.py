"""Tiny SD3.5-architecture pipelines with random weights, built fully offline.

Same classes and wiring as stabilityai/stable-diffusion-3.5-medium, scaled down: an `SD3Transformer2DModel` with
dual-attention layers and qk rms-norm, an `AutoencoderKL` with 16 latent channels (the world's: 4), two
`CLIPTextModelWithProjection` and a `T5EncoderModel`, `FlowMatchEulerDiscreteScheduler(shift=3.0)`, and tokenizers
built by `treegrpo.models.tokenizers`. `tiny` is for tests and the embedded default; `small`
(~20M transformer parameters) for benchmarks where the transformer must dominate the cost.

Width constraints of the SD3 pipeline: the two CLIP hidden states are concatenated and zero-padded to the T5 width,
so `t5.d_model >= clip_1.hidden + clip_2.hidden` and `joint_attention_dim = t5.d_model`;
`pooled_projection_dim = clip_1.projection + clip_2.projection`.

The VAE uses one GroupNorm group (SD3.5's uses 32). With random weights, per-channel groups normalise away the
latents' colour balance, so a decoded image's colours barely depend on the latents (measured: the red-minus-rest
score of 64 random latents varies by 0.002 with 8 groups, 0.026 with 1 group); one group keeps that dependence,
which is what makes a colour reward a learnable problem on the embedded default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TinySpec:
    layers: int  # transformer blocks
    dual_layers: int  # how many of the first blocks have SD3.5's second (attn2) attention
    heads: int
    head_dim: int
    clip_hidden: int
    clip_layers: int
    t5_layers: int
    vae_channels: tuple[int, ...]  # one entry per VAE level: downsampling = 2 ** (levels - 1)
    clip_max_length: int = 77  # CLIP tokens the pipeline pads every prompt to (its tokenizers' model_max_length)
    patch_size: int = 2  # latent pixels per side of one transformer token
    latent_channels: int = 16  # the VAE's latent channels, the transformer's in and out channels (SD3.5: 16)


SPECS = {
    "tiny": TinySpec(layers=2, dual_layers=1, heads=2, head_dim=16, clip_hidden=32, clip_layers=2, t5_layers=2,
                     vae_channels=(16, 16, 16, 16)),
    "small": TinySpec(layers=4, dual_layers=2, heads=6, head_dim=64, clip_hidden=64, clip_layers=2, t5_layers=2,
                      vae_channels=(16, 16, 32, 32)),
    # pretrained on the world (`treegrpo pretrain`): its prompts are at most 10 CLIP tokens, so CLIP pads to 16,
    # not 77. The VAE downsamples 4x (three levels), not 8x: a 64 px image has 16x16 latents, and patch size 2 makes
    # 64 tokens of 8x8 px each. With the 8x VAE (8x8 latents), 800 training steps left reconstructions the detector
    # read right for 20% of held-out renders; the 4x VAE, 100% (a 16x16x16 latent is a third of the pixels, not a
    # twelfth). One token per 16x16 px (8x VAE, patch 2) drew merged, colour-mixed blobs: about one object a token.
    # Four latent channels, not SD3.5's 16: after 800 x 32 steps, 16 channels drew scattered specks smaller than any
    # object of the world, 4 drew object-sized (merged) blobs; 4 channels after 2,400 x 64 steps drew shapes, counts
    # and layouts like the renders (held-out constraints met 0.34 against 0.25). 16 channels at 2,400 x 64 was not
    # measured
    "world": TinySpec(layers=4, dual_layers=1, heads=4, head_dim=16, clip_hidden=32, clip_layers=2, t5_layers=2,
                      vae_channels=(16, 16, 16), clip_max_length=16, patch_size=2, latent_channels=4),
}


def build_tiny_pipeline(size: str = "tiny", seed: int = 0):
    """Build a random-weight SD3.5-architecture `StableDiffusion3Pipeline` in memory.

    Args:
        size: "tiny", "small" or "world" (see SPECS).
        seed: seeds every module's random initialisation, so the same call gives the same weights anywhere.
    Returns:
        a float32 `StableDiffusion3Pipeline` on the CPU.
    """
    import tempfile

    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    from treegrpo.models.tokenizers import CLIP_VOCAB_SIZE, write_clip_tokenizer, write_t5_tokenizer

    if size not in SPECS:
        raise ValueError(f"tiny_model.size={size!r}: must be one of {sorted(SPECS)}")
    spec = SPECS[size]
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp) / "clip", model_max_length=spec.clip_max_length)
        write_t5_tokenizer(Path(tmp) / "t5")
        clip_tok = CLIPTokenizer.from_pretrained(Path(tmp) / "clip")
        t5_tok = T5TokenizerFast.from_pretrained(Path(tmp) / "t5")

    inner = spec.heads * spec.head_dim
    t5_width = 2 * spec.clip_hidden  # the smallest width that holds both CLIP hidden states side by side
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=spec.patch_size, in_channels=spec.latent_channels,
        out_channels=spec.latent_channels, num_layers=spec.layers,
        attention_head_dim=spec.head_dim, num_attention_heads=spec.heads, joint_attention_dim=t5_width,
        caption_projection_dim=inner, pooled_projection_dim=2 * spec.clip_hidden, pos_embed_max_size=96,
        dual_attention_layers=tuple(range(spec.dual_layers)), qk_norm="rms_norm",
    )
    levels = len(spec.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=spec.latent_channels, block_out_channels=spec.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1, norm_num_groups=1, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,  # SD3.5's latent statistics, so the pipeline code path is real
    )

    def clip_encoder():
        cfg = CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE, hidden_size=spec.clip_hidden, intermediate_size=2 * spec.clip_hidden,
            num_hidden_layers=spec.clip_layers, num_attention_heads=2, max_position_embeddings=77,
            projection_dim=spec.clip_hidden, bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id, hidden_act="gelu",
        )
        return CLIPTextModelWithProjection(cfg)

    text_encoder, text_encoder_2 = clip_encoder(), clip_encoder()
    t5_cfg = T5Config(
        vocab_size=len(t5_tok), d_model=t5_width, d_kv=16, d_ff=2 * t5_width, num_layers=spec.t5_layers,
        num_heads=2, relative_attention_num_buckets=8, pad_token_id=t5_tok.pad_token_id,
        eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=t5_tok.pad_token_id,
    )
    text_encoder_3 = T5EncoderModel(t5_cfg)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=clip_tok,
        text_encoder_2=text_encoder_2, tokenizer_2=clip_tok, text_encoder_3=text_encoder_3, tokenizer_3=t5_tok,
    )
    for module in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        module.eval()
    return pipe


def save_tiny_pipeline(path: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build a tiny pipeline and save it in diffusers format (safetensors) at `path`, atomically."""
    return save_pipeline_atomic(build_tiny_pipeline(size, seed), path)


def save_pipeline_atomic(pipe, path: str | Path) -> Path:
    """Save `pipe` in diffusers format (safetensors) to `path.partial`, then rename: never a half-written folder."""
    import shutil

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
