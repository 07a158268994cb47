"""The `tiny_model`, `model` and `lora` sections of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from treegrpo.config.base import check

Dtype = Literal["float32", "bfloat16", "float16"]
AttentionBackend = Literal["default", "math", "flash", "efficient", "cudnn"]


@dataclass(frozen=True)
class TinyModelParams:
    """What `treegrpo build-tiny-model` builds: an SD3.5-architecture pipeline with random weights."""

    size: Literal["tiny", "small", "world"]
    seed: int
    path: str

    def __post_init__(self) -> None:
        check(bool(self.path.strip()), "tiny_model.path", self.path, "must be a folder path, e.g. models/tiny-sd3")


@dataclass(frozen=True)
class ModelParams:
    """The base pipeline: a hub id or a local diffusers folder, and how to run it."""

    pretrained: str
    revision: str | None
    dtype: Dtype
    device: str
    resolution: int
    max_sequence_length: int
    offload_text_encoders: bool
    compile: bool  # torch.compile of the transformer, for sampling and for the update
    attention_backend: AttentionBackend  # torch's scaled-dot-product-attention kernel; default: torch chooses

    def __post_init__(self) -> None:
        check(bool(self.pretrained.strip()), "model.pretrained", self.pretrained,
              "must be a hub id (stabilityai/stable-diffusion-3.5-medium) or a local diffusers folder")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "model.device",
              self.device, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        check(16 <= self.resolution <= 4096 and self.resolution % 16 == 0, "model.resolution", self.resolution,
              "must be a multiple of 16 in [16, 4096] (512 for SD3.5-Medium in the paper)")
        check(1 <= self.max_sequence_length <= 512, "model.max_sequence_length", self.max_sequence_length,
              "must be in [1, 512] (T5 tokens; 256 for SD3.5)")


@dataclass(frozen=True)
class LoraParams:
    """LoRA adapters (peft) on the transformer's attention projections."""

    rank: int
    alpha: float
    dropout: float
    target_modules: list[str]

    def __post_init__(self) -> None:
        check(1 <= self.rank <= 1024, "lora.rank", self.rank, "must be in [1, 1024]")
        check(self.alpha > 0, "lora.alpha", self.alpha, "must be > 0")
        check(0.0 <= self.dropout < 1.0, "lora.dropout", self.dropout, "must be in [0, 1)")
        check(len(self.target_modules) > 0, "lora.target_modules", list(self.target_modules),
              "must name at least one module, e.g. attn.to_q")
