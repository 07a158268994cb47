"""LoRA adapters (peft) on the SD3 transformer, saved and loaded in the diffusers LoRA format (safetensors)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open

from treegrpo.config import LoraParams
from treegrpo.utils.errors import UserError

ADAPTER = "default"
LORA_FILE = "pytorch_lora_weights.safetensors"  # the diffusers LoRA format's file in a LoRA folder


def add_lora(transformer: torch.nn.Module, params: LoraParams) -> list[str]:
    """Add a trainable LoRA adapter to `transformer` and return the names of the wrapped modules.

    Every entry of `params.target_modules` must match at least one module (a name ending in it, as peft matches),
    so a typo fails here instead of silently training less.
    """
    from peft import LoraConfig

    names = [n for n, _ in transformer.named_modules()]
    for target in params.target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise UserError(f"lora.target_modules: {target!r} matches no module of the transformer; "
                            "SD3 names look like attn.to_q, attn.add_k_proj, attn2.to_v, attn.to_out.0")
    config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                        target_modules=list(params.target_modules), init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=ADAPTER)
    return sorted({n.rsplit(".lora_", 1)[0] for n, _ in transformer.named_parameters() if ".lora_" in n})


def lora_parameters(transformer: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in transformer.named_parameters() if ".lora_" in n]


def lora_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's naming (what `set_lora_state_dict` takes back)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def set_lora_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise UserError(f"LoRA state has keys this transformer lacks (first: {unexpected[0]}); "
                        "was it trained with other lora.target_modules?")


def save_lora(transformer: torch.nn.Module, path: str | Path) -> Path:
    """Write the adapter in the diffusers LoRA format (`LORA_FILE`) to folder `path`.

    The adapter's peft config (rank, alpha, targets) goes into the file's `lora_adapter_metadata`, as diffusers'
    training scripts save it: without it `load_lora_weights` infers the rank from the weights and takes alpha = rank,
    so a LoRA trained with alpha != rank would come back at rank / alpha of its strength.
    """
    from diffusers import StableDiffusion3Pipeline

    path = Path(path)
    StableDiffusion3Pipeline.save_lora_weights(path, transformer_lora_layers=lora_state_dict(transformer),
                                               transformer_lora_adapter_metadata=lora_config(transformer),
                                               safe_serialization=True)
    sort_safetensors_metadata(path / LORA_FILE)
    return path


def sort_safetensors_metadata(file: str | Path) -> None:
    """Rewrite a safetensors file's header with its `__metadata__` keys sorted, in place.

    safetensors writes the metadata map in the order of a Rust HashMap, which is seeded anew in each process: the
    same weights came out as one of two files (`format` before or after `lora_adapter_metadata`), so the file's
    sha256 (the registry's identity of a version, DVC's hash of the LoRA) changed with nothing changed. Sorting
    reorders the header's JSON only; its length and every tensor byte stay as they were.
    """
    import json
    import struct

    with open(file, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        raw = f.read(length)
        header = json.loads(raw)
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # never here (the same keys, reordered); refuse rather than shift the tensors
            raise ValueError(f"{file}: the sorted header ({len(text)} bytes) does not fit the old one ({length})")
        f.seek(8)
        f.write(text + b" " * (length - len(text)))  # safetensors pads its header with spaces


def lora_config(transformer: torch.nn.Module) -> dict:
    """The adapter's peft `LoraConfig` as a dict (what diffusers' `_collate_lora_metadata` takes for a module).

    Sets (peft keeps `target_modules` as one) come sorted: a set's order follows the process's string-hash seed, and
    the saved file's bytes must not (DVC hashes the LoRA; a resumed run must write the same file)."""
    config = transformer.peft_config[ADAPTER].to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def load_lora(pipe, path: str | Path) -> None:
    """Load a LoRA folder written by `save_lora` (or any diffusers SD3 LoRA) into `pipe`."""
    path = Path(path)
    if not (path / LORA_FILE).is_file():
        raise UserError(f"{path}: no {LORA_FILE} here; train one with `treegrpo train` "
                        "or point at a folder written by it")
    with safe_open(str(path / LORA_FILE), "pt") as f:
        text_keys = any(k.startswith(("text_encoder.", "text_encoder_2.")) for k in f.keys())
    loader_log = logging.getLogger("diffusers.loaders.lora_base")
    if not text_keys:  # a transformer-only LoRA (ours): diffusers' 'No LoRA keys associated to CLIP...' says nothing
        loader_log.addFilter(_drop_no_text_keys_warning)
    try:
        pipe.load_lora_weights(str(path))
    finally:
        loader_log.removeFilter(_drop_no_text_keys_warning)


def _drop_no_text_keys_warning(record: logging.LogRecord) -> bool:
    return "No LoRA keys associated to" not in record.getMessage()
