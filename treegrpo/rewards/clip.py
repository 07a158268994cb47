"""The CLIP-based rewards, through open_clip: HPSv2.1, CLIPScore and the LAION aesthetic predictor (SPEC §9).

- HPSv2.1: open_clip ViT-H-14 with the HPS_v2.1 checkpoint; the score is the cosine of the L2-normalised image and
  text features, no logit scale (~0.27-0.38 on SD3.5 images). hpsv2's own `img_score.score` is the reference (a test
  checks equality on the same weights); we do not call it because it reloads the checkpoint on every call and
  builds the model with a pretrained tag that it downloads. Its image transform (`img_score` builds it with
  `light_augmentation=True`) converts to a tensor, scales the *longer* side to the model's size (torch's antialiased
  bicubic on floats) and pads the shorter one with black; open_clip 3's nearest transform ('longest' resize mode)
  resizes in PIL instead, and hpsv2's own cannot be imported without tkinter (its factory imports `turtle`), so
  `LongestSidePad` restates it (a test checks equality with the package on square and non-square images).
- CLIPScore: the same cosine (x 1, no clamp) with open_clip ViT-H-14-378 DFN5B by default.
- Aesthetic: the LAION "improved aesthetic predictor" MLP (768-1024-128-64-16-1, no activations) on the
  L2-normalised CLIP ViT-L/14 image features (~5.9-6.5).

Images are rounded to 8 bits (as a saved PNG) and go through the reference package's validation transform (HPSv2:
resize the longer side and pad; CLIPScore, aesthetic: open_clip's resize and centre crop; then normalise), so a score
equals what the packages give for the same saved image.
Notation: N images, D CLIP embedding width.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from treegrpo.rewards.base import (
    Images,
    LazyModelReward,
    autocast,
    check_batch,
    resolve_file,
    to_pil_images,
)
from treegrpo.utils.devices import resolve_device
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)


class OpenClip(NamedTuple):
    model: Any  # open_clip.CLIP in eval mode
    preprocess: Any  # PIL image -> (3, S, S) tensor
    tokenizer: Any  # list[str] -> (n, context_length) token ids
    device: torch.device


def open_clip_arch(model: str, where: str) -> str:
    """An open_clip architecture name; a path to a model-config JSON is registered first (named by its stem)."""
    import open_clip

    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise UserError(f"{where}={model!r}: no such model-config file (open_clip's JSON format)")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise UserError(f"{where}={model!r}: not an open_clip architecture (e.g. ViT-H-14, ViT-L-14-quickgelu) "
                        "and not a path to a model-config .json")
    return model


def load_open_clip(model: str, checkpoint: str, device: str, where: str, hint: str) -> OpenClip:
    """Build an open_clip model and load a full CLIP checkpoint into it (strictly, `weights_only` for .pt files).

    Args:
        model: architecture name, or path to a model-config JSON.
        checkpoint: local path or hf://owner/repo/file; .safetensors, or a .pt/.bin (a state dict, or a dict with
            `state_dict`, as HPS checkpoints are).
        device: 'auto', 'cpu' or 'cuda[:N]'.
        where: the params section, for messages (reward.hpsv2).
        hint: the checkpoint's name, size and source, for the missing-file message.
    """
    import open_clip

    arch = open_clip_arch(model, f"{where}.model")
    path = resolve_file(checkpoint, f"{where}.checkpoint", hint)
    dev = resolve_device(device, "reward.device")
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # open_clip narrates every step at INFO on the root logger
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(path), device=dev)
        tokenizer = open_clip.get_tokenizer(arch)
    except (RuntimeError, AssertionError, KeyError, ValueError) as err:  # weights that do not fit the architecture
        raise UserError(f"{where}.checkpoint={checkpoint!r}: does not fit open_clip {arch!r} "
                        f"({str(err).splitlines()[0]}); is {where}.model the checkpoint's architecture?") from None
    finally:
        logging.disable(previous)
    net.eval().requires_grad_(False)
    log.info("%s: loaded open_clip %s from %s on %s", where, arch, path, dev)
    return OpenClip(net, preprocess, tokenizer, dev)


def image_features(clip: OpenClip, images: Images, dtype: str) -> Tensor:
    """(N, D) float32 L2-normalised image features."""
    pixels = torch.stack([clip.preprocess(img) for img in to_pil_images(images)]).to(clip.device)  # (N, 3, S, S)
    with autocast(clip.device, dtype):
        feats = clip.model.encode_image(pixels)
    return nn.functional.normalize(feats.float(), dim=-1)


def text_features(clip: OpenClip, prompts: Sequence[str], dtype: str) -> Tensor:
    """(N, D) float32 L2-normalised text features."""
    tokens = clip.tokenizer(list(prompts)).to(clip.device)  # (N, context_length)
    with autocast(clip.device, dtype):
        feats = clip.model.encode_text(tokens)
    return nn.functional.normalize(feats.float(), dim=-1)


class LongestSidePad:
    """hpsv2's `ResizeMaxSize`: scale a (3, h, w) image so its longer side is `size` (bicubic, antialiased, the other
    side rounded as hpsv2 rounds it), then pad with 0 (black, before normalising) to (3, size, size), centred, the odd
    pixel right and bottom. (hpsv2 skips the pad when the longer side is already `size`, which then fails in the
    model for a non-square image; here it pads.)"""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Tensor) -> Tensor:
        import torchvision.transforms.functional as TF

        height, width = image.shape[-2:]
        scale = self.size / float(max(height, width))
        if scale != 1.0:
            shape = [round(height * scale), round(width * scale)]
            image = TF.resize(image, shape, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        pad_h, pad_w = self.size - image.shape[-2], self.size - image.shape[-1]
        return TF.pad(image, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)


def hpsv2_transform(preprocess_cfg: dict[str, Any]):
    """hpsv2's validation transform (`light_augmentation=True`, as `hpsv2.img_score` builds it): PIL -> tensor, the
    longer side resized to the model's size and the shorter padded (`LongestSidePad`), normalise. Size, mean and std
    from the open_clip model's `visual.preprocess_cfg`."""
    from torchvision import transforms as T

    size = preprocess_cfg["size"]
    size = size[0] if isinstance(size, tuple | list) else size
    return T.Compose([T.ToTensor(), LongestSidePad(size), T.Normalize(preprocess_cfg["mean"], preprocess_cfg["std"])])


class ClipCosineReward(LazyModelReward):
    """Cosine of the normalised CLIP image and text features, no logit scale, no clamp."""

    section = "reward.clip_score"
    hint = "an open_clip checkpoint for the configured model"

    def __init__(self, model: str, checkpoint: str, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 16, stand_in: bool = False):
        self.model_name, self.checkpoint = model, checkpoint
        self.device, self.dtype, self.batch_size, self.stand_in = device, dtype, batch_size, stand_in
        self._model = None

    def _load(self) -> OpenClip:
        return load_open_clip(self.model_name, self.checkpoint, self.device, self.section, self.hint)

    @torch.no_grad()
    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor:
        n = check_batch(images, prompts)
        scores = []
        for lo in range(0, n, self.batch_size):
            img = image_features(self.model, images[lo : lo + self.batch_size], self.dtype)  # (b, D)
            txt = text_features(self.model, prompts[lo : lo + self.batch_size], self.dtype)  # (b, D)
            scores.append((img * txt).sum(-1).cpu())  # (b,)
        return torch.cat(scores) if scores else torch.zeros(0)


class HPSv2Reward(ClipCosineReward):
    """HPSv2.1: the cosine under open_clip ViT-H-14 with the HPS_v2.1 checkpoint, hpsv2's image transform."""

    section = "reward.hpsv2"
    hint = "HPS_v2.1_compressed.pt (~1.9 GB, open_clip ViT-H-14) from the hub repo xswu/HPSv2"

    def _load(self) -> OpenClip:
        clip = super()._load()
        return clip._replace(preprocess=hpsv2_transform(clip.model.visual.preprocess_cfg))


class ClipScoreReward(ClipCosineReward):
    """CLIPScore: the cosine x 1 under open_clip ViT-H-14-378 (DFN5B) by default."""

    section = "reward.clip_score"
    hint = ("an open_clip checkpoint for reward.clip_score.model, by default DFN5B-CLIP-ViT-H-14-378 "
            "(open_clip_pytorch_model.bin, ~3.9 GB) from the hub repo apple/DFN5B-CLIP-ViT-H-14-378")


class AestheticMLP(nn.Module):
    """The LAION improved-aesthetic-predictor head: D-1024-128-64-16-1, dropout between, no activations.

    Layer indices match the released state dict (`layers.0`, `layers.2`, `layers.4`, `layers.6`, `layers.7`).
    """

    def __init__(self, in_features: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)  # (N, D) -> (N, 1)


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict from .safetensors, or from a .pt/.pth/.bin with `weights_only=True` (no pickled code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class AestheticReward(LazyModelReward):
    """LAION aesthetic score: the MLP on normalised CLIP ViT-L/14 image features (the prompt is not used)."""

    section = "reward.aesthetic"
    clip_hint = ("the OpenAI CLIP ViT-L/14 weights in open_clip format (open_clip_model.safetensors, ~1.7 GB) "
                 "from the hub repo timm/vit_large_patch14_clip_224.openai")
    head_hint = ("sac+logos+ava1-l14-linearMSE.pth (~3.7 MB) from GitHub "
                 "christophschuhmann/improved-aesthetic-predictor")

    def __init__(self, clip_model: str, clip_checkpoint: str, head: str, device: str = "auto",
                 dtype: str = "float32", batch_size: int = 16, stand_in: bool = False):
        self.clip_model, self.clip_checkpoint, self.head = clip_model, clip_checkpoint, head
        self.device, self.dtype, self.batch_size, self.stand_in = device, dtype, batch_size, stand_in
        self._model = None

    def _load(self) -> tuple[OpenClip, AestheticMLP]:
        clip = load_open_clip(self.clip_model, self.clip_checkpoint, self.device, f"{self.section}.clip",
                              self.clip_hint)
        state = load_state_dict_file(resolve_file(self.head, f"{self.section}.head", self.head_hint))
        first = state.get("layers.0.weight")
        if first is None:
            raise UserError(f"{self.section}.head={self.head!r}: not an aesthetic-predictor state dict "
                            f"(no layers.0.weight; keys: {sorted(state)[:4]})")
        width = getattr(clip.model.visual, "output_dim", None)
        if width is not None and first.shape[1] != width:
            raise UserError(f"{self.section}.head={self.head!r}: takes {first.shape[1]}-d features but the CLIP "
                            f"model gives {width}-d ones (the LAION head wants ViT-L/14, 768-d)")
        mlp = AestheticMLP(first.shape[1])
        mlp.load_state_dict(state)
        return clip, mlp.to(clip.device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor:
        n = check_batch(images, prompts)
        clip, mlp = self.model
        scores = []
        for lo in range(0, n, self.batch_size):
            feats = image_features(clip, images[lo : lo + self.batch_size], self.dtype)  # (b, D)
            scores.append(mlp(feats).squeeze(-1).float().cpu())  # (b,)
        return torch.cat(scores) if scores else torch.zeros(0)
