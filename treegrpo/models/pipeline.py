"""Load a `StableDiffusion3Pipeline` from a hub id or a local diffusers folder, placed as params say.

Nothing here assumes a model size: SD3.5-Medium from the hub and the tiny offline pipeline go through the same code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from treegrpo.config import ModelParams
from treegrpo.utils.devices import resolve_device
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _looks_like_path(source: str) -> bool:
    # hub ids are exactly "owner/name"; anything else with a separator, or starting like a path, is a folder
    return source.startswith((".", "/", "~")) or source.count("/") != 1


def local_folder(source: str) -> Path | None:
    """The diffusers folder `model.pretrained` names, or None when it is a hub id.

    Raises:
        UserError: a path that does not exist, or a folder that is not a diffusers pipeline.
    """
    folder = Path(source).expanduser()
    if folder.exists():
        if not (folder / "model_index.json").is_file():
            raise UserError(f"model.pretrained={source!r}: {folder} has no model_index.json, so it is not a diffusers "
                            "pipeline folder; point it at one (e.g. the output of `treegrpo build-tiny-model`)")
        return folder
    if _looks_like_path(source):
        raise UserError(f"model.pretrained={source!r}: no such folder; build the tiny pipeline with "
                        "`treegrpo build-tiny-model` (or `dvc repro build_model`), or give a hub id such as "
                        "stabilityai/stable-diffusion-3.5-medium")
    return None


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (the hub is then never asked: only the local cache is read)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _root_cause(err: BaseException) -> str:
    """The innermost error's type and first sentence: the hub libraries wrap it, pointing at "the stacktrace above",
    which the user is not shown."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    sentence = text.split(". ")[0].rstrip(".")
    return f"{type(err).__name__}: {sentence[:160]}" if sentence else type(err).__name__


def hub_error(source: str, err: Exception) -> UserError:
    """What happened when hub id `source` could not be fetched (offline, gated, missing), and the two ways out:
    several short lines; HF_HUB_OFFLINE is named only when it is set."""
    folder = "models/" + source.split("/")[-1]
    if hub_offline():
        what = "It is not in the Hugging Face cache, and HF_HUB_OFFLINE is set (the hub is not asked)"
        fetch = "on a machine with network access, unset HF_HUB_OFFLINE and run `treegrpo fetch`"
    else:
        what = f"Cause: {_root_cause(err)}"
        fetch = "check the id and your network, then run `treegrpo fetch`"
    return UserError(
        f"model.pretrained={source!r}: could not load it from the hub.\n"
        f"{what}.\n"
        "Two ways out:\n"
        f"  1. download it into the cache: {fetch}\n"
        "     (log in first, `hf auth login`; SD3.5 is gated: accept its licence on its hub page)\n"
        f"  2. use a local copy: `hf download {source} --local-dir {folder}`,\n"
        f"     then set model.pretrained: {folder}")


def load_pipeline(params: ModelParams, device: torch.device | str | None = None):
    """Load the base pipeline described by the `model` section.

    Args:
        params: the `model` section (pretrained, revision, dtype, device, offload_text_encoders).
        device: overrides `params.device` (the trainer passes accelerate's device).
    Returns:
        a `StableDiffusion3Pipeline` in eval mode with gradients off everywhere; the transformer and VAE on
        `device`, the text encoders there too unless `offload_text_encoders` keeps them on the CPU.
    Raises:
        UserError: a missing folder, a folder that is not a diffusers pipeline, or a hub id that can't be fetched.
    """
    from diffusers import StableDiffusion3Pipeline

    folder = local_folder(params.pretrained)
    source = str(folder) if folder is not None else params.pretrained
    dtype = DTYPES[params.dtype]
    try:
        pipe = StableDiffusion3Pipeline.from_pretrained(source, revision=params.revision, dtype=dtype)
    except OSError as err:
        raise hub_error(source, err) from None
    device = resolve_device(params.device) if device is None else torch.device(device)
    text_device = torch.device("cpu") if params.offload_text_encoders else device
    for name in ("transformer", "vae"):
        getattr(pipe, name).to(device)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(text_device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    log.info("loaded %s (%s) on %s", source, params.dtype, device)
    return pipe
