"""Make image-reward 1.5 (ImageReward-v1.0's package) run on transformers 5, and load it from local files.

image-reward's BLIP text encoder (`ImageReward/models/BLIP/med.py`, a copy of an old transformers BERT) uses
transformers 4 APIs that version 5 removed or moved:
- `transformers.modeling_utils.apply_chunking_to_forward` and `prune_linear_layer`: moved to
  `transformers.pytorch_utils`; `find_pruneable_heads_and_indices`: removed (only head pruning used it).
- `PreTrainedModel.get_head_mask` and `invert_attention_mask`: removed with `ModuleUtilsMixin`.
- `init_weights()` called straight from `__init__`: in version 5 the bookkeeping it relies on
  (`all_tied_weights_keys`) is set up by `post_init()`, which then calls `init_weights()` itself.
`install()` puts back exactly these, written here from their transformers 4 behaviour (nothing else changes).

It also always loads `bert-base-uncased`'s tokenizer from the hub and builds a ViT-L; `blip_builders()` swaps in a
tokenizer read from a local `vocab.txt` and, for the tiny test builds, a small ViT of the package's own class.
Importing the package filters all warnings and silences transformers' logging process-wide; we undo that.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from treegrpo.utils.errors import UserError

VIT_KEYS = {"embed_dim", "depth", "num_heads", "patch_size"}


def find_pruneable_heads_and_indices(heads: list[int], n_heads: int, head_size: int,
                                     already_pruned_heads: set[int]) -> tuple[set[int], Tensor]:
    """The heads still to prune and the (flat) indices of the weights to keep (transformers 4 semantics)."""
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        head -= sum(1 for h in already_pruned_heads if h < head)  # earlier prunes shift the index down
        mask[head] = 0
    index = torch.arange(n_heads * head_size)[mask.view(-1).eq(1)].long()
    return heads, index


def invert_attention_mask(self, encoder_attention_mask: Tensor) -> Tensor:
    """(B, S) or (B, S, S) keep-mask -> additive mask (B, 1, 1 or S, S): 0 where kept, dtype-min where masked."""
    mask = encoder_attention_mask
    mask = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    mask = mask.to(dtype=self.dtype)
    return (1.0 - mask) * torch.finfo(self.dtype).min


def get_head_mask(self, head_mask: Tensor | None, num_hidden_layers: int,
                  is_attention_chunked: bool = False) -> list[Tensor | None] | Tensor:
    """None -> one None per layer; a (heads,) or (layers, heads) mask -> (layers, 1 or B, heads, 1, 1)."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(dtype=self.dtype)
    return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask


def init_weights(self) -> None:
    """transformers 4's `init_weights()` from `__init__`: run version 5's `post_init()` (which initialises)."""
    from transformers.modeling_utils import PreTrainedModel

    if not hasattr(self, "all_tied_weights_keys"):
        self.post_init()  # sets the bookkeeping up, then calls init_weights() again -> the branch below
    else:
        PreTrainedModel.init_weights(self)


def _import_quietly(name: str):
    """Import an image-reward module, undoing its global warning filter and transformers log level."""
    import transformers

    level = transformers.logging.get_verbosity()
    with warnings.catch_warnings():
        # image-reward imports OpenAI's `clip`, whose version check imports the deprecated pkg_resources: harmless
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        module = importlib.import_module(name)
    transformers.logging.set_verbosity(level)
    return module


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def install() -> None:
    """Patch transformers and image-reward's BERT as the module docstring says; idempotent."""
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    for name, fn in [("apply_chunking_to_forward", pytorch_utils.apply_chunking_to_forward),
                     ("prune_linear_layer", pytorch_utils.prune_linear_layer),
                     ("find_pruneable_heads_and_indices", find_pruneable_heads_and_indices)]:
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, fn)
    med = _import_quietly("ImageReward.models.BLIP.med")
    base = med.BertPreTrainedModel
    for name, fn in [("get_head_mask", get_head_mask), ("invert_attention_mask", invert_attention_mask)]:
        if not hasattr(base, name):
            setattr(base, name, fn)
    if _transformers_major() >= 5:
        base.init_weights = init_weights


def load_bert_tokenizer(vocab_file: Path):
    """BLIP's tokenizer (`init_tokenizer` in image-reward) from a local BERT `vocab.txt`: lower-cased WordPiece,
    plus `[DEC]` as bos and `[ENC]` as an extra special token (vocabulary 30,522 + 2 for bert-base-uncased)."""
    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert import load_vocab

    tokenizer = BertTokenizer(vocab=dict(load_vocab(str(vocab_file))), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def read_vit_config(vit: str) -> dict[str, int] | None:
    """None for the package's ViT-L ('large'); else the small ViT a JSON file describes (tests' tiny builds)."""
    if vit == "large":
        return None
    path = Path(vit)
    if not path.is_file():
        raise UserError(f"reward.image_reward.vit={vit!r}: 'large' (ImageReward-v1.0) or a JSON file with "
                        f"{sorted(VIT_KEYS)}")
    cfg = json.loads(path.read_text())
    if set(cfg) != VIT_KEYS:
        raise UserError(f"reward.image_reward.vit={vit!r}: needs exactly the keys {sorted(VIT_KEYS)}, "
                        f"has {sorted(cfg)}")
    return cfg


@contextlib.contextmanager
def blip_builders(vocab_file: Path, vit: str) -> Iterator[None]:
    """While open, image-reward's `BLIP_Pretrain` takes its tokenizer from `vocab_file` and, unless `vit` is
    'large', a small `VisionTransformer` (the package's class) described by the JSON file `vit`."""
    blip_pretrain = _import_quietly("ImageReward.models.BLIP.blip_pretrain")
    vit_module = _import_quietly("ImageReward.models.BLIP.vit")
    cfg = read_vit_config(vit)
    original = blip_pretrain.init_tokenizer, blip_pretrain.create_vit

    def create_small_vit(name, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        return vit_module.VisionTransformer(img_size=image_size, **cfg), cfg["embed_dim"]

    blip_pretrain.init_tokenizer = lambda: load_bert_tokenizer(vocab_file)
    if cfg is not None:
        blip_pretrain.create_vit = create_small_vit
    try:
        yield
    finally:
        blip_pretrain.init_tokenizer, blip_pretrain.create_vit = original


def image_reward_class():
    """`ImageReward.ImageReward.ImageReward` (the model class), with `install()` done first."""
    install()
    return _import_quietly("ImageReward.ImageReward").ImageReward
