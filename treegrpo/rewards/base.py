"""What every reward shares: the protocol, image conversion, weight-file resolution, devices and lazy loading.

Notation: N images, H x W pixels. Images come in as a float tensor (N, 3, H, W) in [0, 1] or a list of PIL images.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from torch import Tensor

from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

Images = Tensor | Sequence[Image.Image]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HF_PREFIX = "hf://"


class Reward(Protocol):
    """One score per image: `(images, prompts) -> (N,)` float32 on the CPU, without gradients."""

    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor: ...


def check_batch(images: Images, prompts: Sequence[str]) -> int:
    """The batch size N, after checking that images and prompts agree and the tensor is (N, 3, H, W)."""
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected a float tensor (N, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        n = images.shape[0]
    else:
        n = len(images)
    if isinstance(prompts, str) or len(prompts) != n:
        raise ValueError(f"prompts: expected a list of {n} strings (one per image), got {prompts!r:.80}")
    return n


def to_float_images(images: Images) -> Tensor:
    """(N, 3, H, W) float32 in [0, 1] on the CPU, detached."""
    if isinstance(images, Tensor):
        return images.detach().float().clamp(0, 1).cpu()
    import torchvision.transforms.functional as TF

    return torch.stack([TF.to_tensor(img.convert("RGB")) for img in images])  # (N, 3, H, W)


def to_pil_images(images: Images) -> list[Image.Image]:
    """RGB PIL images; tensors are rounded to 8 bits as diffusers' `numpy_to_pil` does."""
    if not isinstance(images, Tensor):
        return [img.convert("RGB") for img in images]
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # (N, 3, H, W)
    return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]


def autocast(device: torch.device, dtype: str):
    """Mixed precision for the reward model's forward when `dtype` is not float32 (scores are upcast after)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def resolve_file(spec: str, where: str, hint: str) -> Path:
    """A weight or config file named by a local path or `hf://owner/repo/path/in/repo`.

    Args:
        spec: the configured value.
        where: the params key, for messages (`reward.hpsv2.checkpoint`).
        hint: what the file is and where to get it, e.g. "HPS_v2.1_compressed.pt (~1.9 GB) from the hub repo
            xswu/HPSv2".
    Returns:
        the local path (for `hf://`, the file in the Hugging Face cache, downloaded when the hub is reachable).
    Raises:
        UserError: the file is missing, or not cached while the hub is unreachable (HF_HUB_OFFLINE=1 fails at once).
    """
    if spec.startswith(HF_PREFIX):
        parts = spec[len(HF_PREFIX):].split("/")
        if len(parts) < 3 or not all(parts):
            raise UserError(f"{where}={spec!r}: expected hf://owner/repo/file")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo, filename))
        except Exception as err:  # offline, not cached, gated, missing: all need the same fix
            raise UserError(
                f"{where}={spec!r}: {filename} is not in the local Hugging Face cache and could not be downloaded "
                f"({type(err).__name__}). Needed: {hint}. Download it where there is network "
                f"(`hf download {repo} {filename}`) and copy it here, then set {where} to its local path"
            ) from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"{where}={spec!r}: no such file. Needed: {hint}. Put it at {path} or set {where} to where "
                        "it is (a local path, or hf://owner/repo/file)")
    return path


class LazyModelReward:
    """Loads its model on the first call, once; pickles without it (the copy reloads where it is unpickled).

    Subclasses set `self._model = None` in `__init__` and implement `_load() -> model`.
    """

    _model: Any = None
    stand_in: bool = False  # tiny random-weight stand-in weights: every report labels the scores as such

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state
