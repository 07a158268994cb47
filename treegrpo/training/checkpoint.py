"""Atomic training checkpoints: write to `ckpt-NNNNNN.partial/`, then rename. A partial folder is never loaded.

A checkpoint holds what a resumed run needs to continue exactly as if never stopped: the LoRA weights
(safetensors), the optimizer state, every RNG state, the iteration counter, and the trainer's small JSON state
(window state, counters). Non-tensor state is JSON; tensors are safetensors or `torch.save` read back with
`weights_only=True`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{6})$")


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Every global RNG's state, as (JSON-able python/numpy states, torch tensors).

    The trainer's own randomness is derived from seeds per iteration; these cover libraries (dropout, shuffles).
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    plain = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def set_rng_state(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(root: str | Path, iteration: int, lora: dict[str, torch.Tensor], optimizer_state: dict,
                    trainer_state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `iteration` under `root` atomically and delete all but the newest `keep` of those at or below
    it. Checkpoints past `iteration` (a longer run of the same trajectory, resumed below its end) are left alone.

    Args:
        root: the checkpoints folder.
        iteration: iterations completed.
        lora: the adapter's state dict (CPU tensors).
        optimizer_state: `optimizer.state_dict()`.
        trainer_state: JSON-serialisable trainer state.
        keep: how many complete checkpoints to keep.
    Returns:
        the checkpoint folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{iteration:06d}"
    tmp = root / f"ckpt-{iteration:06d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(lora, tmp / "lora.safetensors")
    plain_rng, tensor_rng = rng_state()
    torch.save({"optimizer": optimizer_state, "rng": tensor_rng}, tmp / "optimizer_rng.pt")
    (tmp / "state.json").write_text(json.dumps({"iteration": iteration, "rng": plain_rng, **trainer_state}))
    for f in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in [p for p in complete_checkpoints(root) if checkpoint_iteration(p) <= iteration][:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_iteration(path: str | Path) -> int:
    """The iteration a checkpoint folder `ckpt-NNNNNN` was written after."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint folder (expected ckpt-NNNNNN)")
    return int(match.group(1))


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (`.partial` folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=checkpoint_iteration)


def read_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON state (iteration, fingerprint, history, ...) without loading tensors or touching RNGs."""
    state = json.loads((Path(path) / "state.json").read_text())
    state.pop("rng", None)
    return state


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict[str, Any]]:
    """Read a checkpoint folder and restore the global RNGs: returns (lora, optimizer_state, trainer_state)."""
    path = Path(path)
    lora = load_file(path / "lora.safetensors")
    blob = torch.load(path / "optimizer_rng.pt", weights_only=True)
    state = json.loads((path / "state.json").read_text())
    set_rng_state(state.pop("rng"), blob["rng"])
    return lora, blob["optimizer"], state


def clean_partials(root: str | Path) -> None:
    """Remove half-written checkpoints left by a killed run."""
    root = Path(root)
    if root.is_dir():
        for p in root.glob("*.partial"):
            log.warning("removing half-written checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)
