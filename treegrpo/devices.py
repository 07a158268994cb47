"""Device names from params.yaml to torch devices."""

from __future__ import annotations

import torch

from treegrpo.errors import UserError


def resolve_device(device: str, key: str = "model.device") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an explicit CUDA device without one is an error naming `key`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}={device!r}: no CUDA device is visible here; use 'auto' or 'cpu'")
    return torch.device(device)
