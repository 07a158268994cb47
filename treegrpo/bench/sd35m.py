"""SD3.5-Medium's architecture with random weights, for timing and memory on a GPU without downloading anything.

The transformer and the VAE are built from SD3.5-Medium's configurations (speed and memory do not depend on the
weights). The three text encoders are stand-ins of the right output widths (CLIP-L/G pooled 768 + 1280 = 2048,
T5 width 4096), one or two layers each: prompts are encoded once per iteration, so the real encoders' cost is a
small constant beside the transformer's, and what they give (embeddings of shape (B, 77 + 256, 4096) and (B, 2048))
is exactly what the transformer sees. The tokenizers are copied from the tiny pipeline (or built offline).
"""

from __future__ import annotations

from pathlib import Path

import torch

# stabilityai/stable-diffusion-3.5-medium, transformer/config.json
TRANSFORMER_CONFIG = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)), "qk_norm": "rms_norm",
}
# stabilityai/stable-diffusion-3.5-medium, vae/config.json
VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 1.5305,
    "shift_factor": 0.0609, "use_quant_conv": False, "use_post_quant_conv": False,
}
CLIP_PROJECTIONS = (768, 1280)  # CLIP-L and CLIP-G pooled widths: 768 + 1280 = pooled_projection_dim
CLIP_HIDDEN = 64  # the stand-ins' width (zero-padded to 4096 by the pipeline, as the real 768 + 1280 are)


def _tokenizers(tokenizer_dir: Path | None):
    from transformers import CLIPTokenizer, T5TokenizerFast

    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer").is_dir():
        return (CLIPTokenizer.from_pretrained(tokenizer_dir / "tokenizer"),
                T5TokenizerFast.from_pretrained(tokenizer_dir / "tokenizer_3"))
    import tempfile

    from treegrpo.models.tokenizers import write_clip_tokenizer, write_t5_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp) / "clip")
        write_t5_tokenizer(Path(tmp) / "t5")
        return CLIPTokenizer.from_pretrained(Path(tmp) / "clip"), T5TokenizerFast.from_pretrained(Path(tmp) / "t5")


def _text_encoders(clip_tok, t5_tok):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clips = []
    for projection in CLIP_PROJECTIONS:
        cfg = CLIPTextConfig(
            vocab_size=len(clip_tok), hidden_size=CLIP_HIDDEN, intermediate_size=2 * CLIP_HIDDEN,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77, projection_dim=projection,
            bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id, hidden_act="gelu",
        )
        clips.append(CLIPTextModelWithProjection(cfg))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=TRANSFORMER_CONFIG["joint_attention_dim"], d_kv=64, d_ff=256, num_layers=1,
        num_heads=2, relative_attention_num_buckets=8, pad_token_id=t5_tok.pad_token_id,
        eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=t5_tok.pad_token_id,
    ))
    return clips[0], clips[1], t5


def build_sd35m_pipeline(seed: int = 0, tokenizer_dir: str | Path | None = None, device: str | None = None):
    """A random-weight `StableDiffusion3Pipeline` with SD3.5-Medium's transformer and VAE (module docstring).

    Args:
        seed: seeds the random initialisation.
        tokenizer_dir: a pipeline folder whose `tokenizer` and `tokenizer_3` to reuse (e.g. the tiny pipeline's);
            None builds them (needs open_clip for the CLIP merges).
        device: where to initialise the weights (a GPU initialises 2.5B parameters in seconds); default: CUDA if
            present, else the CPU.
    Returns:
        the pipeline, transformer and VAE in bfloat16.
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    clip_tok, t5_tok = _tokenizers(Path(tokenizer_dir) if tokenizer_dir else None)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    with torch.device(device):
        transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG).to(torch.bfloat16)
        vae = AutoencoderKL(**VAE_CONFIG).to(torch.bfloat16)
    clip_l, clip_g, t5 = _text_encoders(clip_tok, t5_tok)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.cpu(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae.cpu(),
        text_encoder=clip_l, tokenizer=clip_tok, text_encoder_2=clip_g, tokenizer_2=clip_tok, text_encoder_3=t5,
        tokenizer_3=t5_tok,
    )
    return pipe


def save_sd35m_pipeline(path: str | Path, seed: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """Build it and save it in diffusers format at `path`, atomically (about 5 GB)."""
    from treegrpo.models.tiny import save_pipeline_atomic

    return save_pipeline_atomic(build_sd35m_pipeline(seed, tokenizer_dir), path)
