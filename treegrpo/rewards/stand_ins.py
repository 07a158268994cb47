"""Tiny random-weight stand-ins for the paper's four rewards, written as files the real loaders read.

Each has the real architecture family at a toy size: an open_clip CLIP (2-layer ViT and text tower, 32-d
embeddings, CLIP's real BPE tokenizer) for HPSv2.1, CLIPScore and the aesthetic head's features; the aesthetic MLP
with a 32-d input; ImageReward's BLIP with a 2-layer ViT, a 1-layer BERT (768 wide, as its 768-d MLP needs) and a
small WordPiece vocabulary. They load through exactly the code path of the real weights (open_clip's config
registry, image-reward's classes, `weights_only` / safetensors), so CPU runs and tests exercise it; their scores
mean nothing and every report labels them.

`ensure_stand_in(name, folder)` builds one reward's files once (deterministically, seeded) and returns the keyword
arguments of its reward class.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

VERSION = 1  # bump when a builder changes, so existing folders are rebuilt
SEEDS = {"hpsv2": 1, "clip_score": 2, "aesthetic": 3, "image_reward": 4}
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16}
TINY_MED = {  # BLIP's BERT (med_config.json's keys), one layer; hidden 768 because ImageReward's MLP reads 768-d
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 64,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "encoder_width": 32,
    "add_cross_attention": True,
}
_WORDS = ("a an the of in on with and at by photo painting portrait art style anime concept digital oil red orange "
          "yellow green blue purple pink brown black white gray car cat dog house tree flower sky sea city woman man "
          "girl boy forest mountain river castle dragon robot landscape night light dark").split()


def _tmp(path: Path) -> Path:
    """A private temporary name beside `path` (ranks building the same folder at once never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = _tmp(path)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def tiny_clip_config(folder: Path) -> Path:
    """The tiny open_clip model-config JSON (its file stem is the architecture name)."""
    path = folder / "tiny-clip.json"
    _write_text(path, json.dumps(TINY_CLIP, indent=2))
    return path


def build_tiny_clip(config: Path, path: Path, seed: int) -> None:
    """A random tiny CLIP's state dict at `path` (.safetensors, or .pt as {'state_dict': ...} like HPS files)."""
    import open_clip

    open_clip.add_model_config(config)
    previous = logging.root.manager.disable
    # open_clip narrates at INFO on the root logger and warns "No pretrained weights loaded ... initialized
    # randomly": random weights are what a stand-in is
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(config.stem, pretrained=None)
    finally:
        logging.disable(previous)
    if path.suffix == ".safetensors":
        _save_tensors(model.state_dict(), path)
    else:
        torch.save({"state_dict": model.state_dict()}, path)


def build_aesthetic_head(path: Path, in_features: int, seed: int) -> None:
    from treegrpo.rewards.clip import AestheticMLP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = AestheticMLP(in_features)
    _save_tensors(mlp.state_dict(), path)


def tiny_bert_vocab() -> list[str]:
    """A small WordPiece vocabulary: BERT's specials, characters, their continuations, a few whole words."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    return list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars),
                               *_WORDS]))


def build_tiny_image_reward(folder: Path, seed: int, checkpoint_name: str = "ImageReward.safetensors") -> dict:
    """ImageReward's model with a 2-layer ViT and 1-layer BERT; returns ImageRewardReward's file arguments."""
    from treegrpo.rewards import imagereward_compat as compat

    folder.mkdir(parents=True, exist_ok=True)
    vocab, med, vit = folder / "vocab.txt", folder / "med_config.json", folder / "vit.json"
    words = tiny_bert_vocab()
    _write_text(vocab, "\n".join(words) + "\n")
    _write_text(med, json.dumps({**TINY_MED, "vocab_size": len(words) + 2}, indent=2))  # + [DEC], [ENC]
    _write_text(vit, json.dumps(TINY_VIT, indent=2))
    model_class = compat.image_reward_class()
    with torch.random.fork_rng(devices=[]), compat.blip_builders(vocab, str(vit)):
        torch.manual_seed(seed)
        model = model_class(med_config=str(med), device="cpu")
        for layer in model.mlp.layers:  # its own init (std 1/769) makes every score ~equal: widen it
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
    checkpoint = folder / checkpoint_name
    if checkpoint.suffix == ".safetensors":
        _save_tensors(model.state_dict(), checkpoint)
    else:
        torch.save(model.state_dict(), checkpoint)
    return {"checkpoint": str(checkpoint), "med_config": str(med), "bert_vocab": str(vocab), "vit": str(vit)}


def _build(name: str, folder: Path) -> dict[str, Any]:
    seed = SEEDS[name]
    if name == "image_reward":
        return build_tiny_image_reward(folder / "image_reward", seed)
    config = tiny_clip_config(folder)
    if name == "aesthetic":
        clip = folder / "aesthetic_clip.safetensors"
        build_tiny_clip(config, clip, seed)
        build_aesthetic_head(folder / "aesthetic_head.safetensors", TINY_CLIP["embed_dim"], seed)
        return {"clip_model": str(config), "clip_checkpoint": str(clip),
                "head": str(folder / "aesthetic_head.safetensors")}
    checkpoint = folder / f"{name}.safetensors"
    build_tiny_clip(config, checkpoint, seed)
    return {"model": str(config), "checkpoint": str(checkpoint)}


def ensure_stand_in(name: str, folder: str | Path) -> dict[str, Any]:
    """Build (once) the stand-in weights of paper reward `name` in `folder`.

    Args:
        name: hpsv2, clip_score, aesthetic or image_reward.
        folder: where the files go; a `<name>.json` manifest records what was built.
    Returns:
        the keyword arguments of the reward's class that point at the files (model/checkpoint/... paths).
    """
    if name not in SEEDS:
        raise ValueError(f"no stand-in for reward {name!r}; stand-ins exist for {', '.join(SEEDS)}")
    folder = Path(folder)
    manifest = folder / f"{name}.json"
    if manifest.is_file():
        built = json.loads(manifest.read_text())
        if built.get("version") == VERSION and all(Path(v).exists() for v in built["files"].values()):
            return built["files"]
    folder.mkdir(parents=True, exist_ok=True)
    files = _build(name, folder)
    _write_text(manifest, json.dumps({"version": VERSION, "files": files}, indent=2))
    return files
