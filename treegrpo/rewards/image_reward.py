"""ImageReward-v1.0 through the image-reward package (BLIP ViT-L + BERT cross-attention + MLP), ~0.9-1.4 on SD3.5.

Scored one image at a time with the package's `ImageReward.score(prompt, pil_image)`: its batched
`inference_rank` ranks one prompt against many images and is what peers misuse to score mismatched pairs.
The package runs on transformers 5 through `imagereward_compat`; every file comes from a local path (or the hub
cache via hf://): the checkpoint, `med_config.json` and BERT's `vocab.txt`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from treegrpo.rewards import imagereward_compat as compat
from treegrpo.rewards.base import (
    Images,
    LazyModelReward,
    check_batch,
    resolve_file,
    to_pil_images,
)
from treegrpo.rewards.clip import load_state_dict_file
from treegrpo.utils.devices import resolve_device
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)
SECTION = "reward.image_reward"
HINTS = {
    "checkpoint": "ImageReward.pt (~1.8 GB) from the hub repo THUDM/ImageReward",
    "med_config": "med_config.json (1 kB) from the hub repo THUDM/ImageReward",
    "bert_vocab": "vocab.txt (~230 kB) of bert-base-uncased, from the hub repo google-bert/bert-base-uncased",
}


def load_image_reward(checkpoint: Path, med_config: Path, bert_vocab: Path, vit: str, device: torch.device):
    """Build image-reward's `ImageReward` model and load a checkpoint into it.

    Like the package's `ImageReward.load`, but from local files, with `weights_only` loading, and strict about
    missing weights (only `position_ids` buffers may be absent, as in checkpoints from older transformers).
    """
    model_class = compat.image_reward_class()
    with compat.blip_builders(bert_vocab, vit):
        model = model_class(med_config=str(med_config), device=device)
    state = load_state_dict_file(checkpoint)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that do not fit
        raise UserError(f"{SECTION}.checkpoint={str(checkpoint)!r}: does not fit this model "
                        f"({str(err).splitlines()[-1].strip()}); do checkpoint, med_config and vit belong together?"
                        ) from None
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise UserError(f"{SECTION}.checkpoint={str(checkpoint)!r}: lacks {len(missing)} weights of this model "
                        f"(first: {missing[0]}); do checkpoint, med_config and vit belong together?")
    if result.unexpected_keys:
        log.warning("%s: %d checkpoint keys unused (first: %s)", SECTION, len(result.unexpected_keys),
                    result.unexpected_keys[0])
    return model.to(device).eval().requires_grad_(False)


class ImageRewardReward(LazyModelReward):
    """ImageReward-v1.0's score, one image at a time."""

    def __init__(self, checkpoint: str, med_config: str, bert_vocab: str, vit: str = "large",
                 device: str = "auto", dtype: str = "float32", batch_size: int = 1, stand_in: bool = False):
        self.checkpoint, self.med_config, self.bert_vocab, self.vit = checkpoint, med_config, bert_vocab, vit
        self.device, self.dtype, self.stand_in = device, dtype, stand_in
        self.batch_size = batch_size  # unused: ImageReward scores one image per forward
        self._model = None

    def _load(self):
        files = {key: resolve_file(getattr(self, key), f"{SECTION}.{key}", hint) for key, hint in HINTS.items()}
        dev = resolve_device(self.device, "reward.device")
        model = load_image_reward(files["checkpoint"], files["med_config"], files["bert_vocab"], self.vit, dev)
        log.info("%s: loaded ImageReward from %s on %s", SECTION, files["checkpoint"], dev)
        return model

    @torch.no_grad()
    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor:
        # Always float32, whatever reward.dtype says: the package's score() hands the MLP's output to numpy, which
        # has no bfloat16 (found on a GPU), and at one image per forward the BLIP model is cheap anyway.
        check_batch(images, prompts)
        model = self.model
        scores = [float(model.score(prompt, img)) for img, prompt in zip(to_pil_images(images), prompts, strict=True)]
        return torch.tensor(scores, dtype=torch.float32)  # (N,)
