"""Device names from params.yaml to torch devices, and which process is which under a launcher.

Under `accelerate launch` / `torchrun` (one process per GPU, on one node or several), two ranks matter:
- the local rank (LOCAL_RANK: 0 .. processes-per-node - 1) picks this process's GPU on its node;
- the global rank (RANK: 0 .. world size - 1) owns the prompts (the trainer's slice of each iteration) and the files
  (checkpoints, the LoRA, metrics, the MLflow run: global rank 0 alone).
On two nodes of one process each, both processes have local rank 0: using it for file ownership would make both
write (tests/integration/test_multinode.py catches that).
"""

from __future__ import annotations

import os

import torch

from treegrpo.utils.errors import UserError


def local_rank() -> int:
    """This process's rank on its node (LOCAL_RANK, set by torchrun and accelerate launch); 0 without a launcher."""
    return int(os.environ.get("LOCAL_RANK") or 0)


def resolve_device(device: str, key: str = "model.device") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an explicit CUDA device without one is an error naming `key`.

    A bare `cuda` (or `auto` on a GPU machine) under a launcher is this process's GPU, `cuda:(LOCAL_RANK mod visible
    GPUs)` (the modulo covers a scheduler that shows each process its own GPU only), so a reward model loads on the
    GPU of its process, not on GPU 0 of the node; an explicit `cuda:N` is kept.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}={device!r}: no CUDA device is visible here; use 'auto' or 'cpu'")
    if device == "cuda" and os.environ.get("LOCAL_RANK"):
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device(device)
