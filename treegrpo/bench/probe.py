"""What the benchmark counts and times by itself, beside the trainer's own figures.

- `ForwardProbe`: hooks on the transformer that record every call (rows, text tokens, gradients on or off) and
  which recipe phase made it, so transformer evaluations and forwards-with-gradients are counted, not computed
  from a formula.
- `bare_forward_seconds`: the same transformer calls again on random inputs, back to back: the time no sampler
  can beat (the sampler's "limit").
- `device_info`: the machine a figure was measured on.

Notation: rows = batch entries of one transformer call (CFG's doubling included), L = text tokens.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from treegrpo.bench.flops import random_inputs


@dataclass(frozen=True)
class Call:
    """One transformer call as the probe saw it."""

    phase: str  # the recipe phase that made it: "sampling", "training" or "other"
    rows: int  # batch entries (a CFG call has 2 per node)
    text_tokens: int  # L
    grad: bool  # gradients were enabled (a forward that is followed by a backward)


@dataclass
class ForwardProbe:
    """Records the calls of `transformer` while attached; `phase(name)` labels the calls made inside it.

    Args:
        transformer: the SD3 transformer module (the LoRA-wrapped one the trainer calls).
        cfg: whether the velocity function runs CFG (2 rows per node); used to turn rows into nodes.
    """

    transformer: torch.nn.Module
    cfg: bool
    calls: list[Call] = field(default_factory=list)
    current: str = "other"
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU time (all threads) per phase
    _handle: object = None

    def __post_init__(self) -> None:
        self._handle = self.transformer.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        self.calls.append(Call(self.current, int(hidden.shape[0]), int(text.shape[1]) if text is not None else 0,
                               torch.is_grad_enabled()))

    @contextlib.contextmanager
    def phase(self, name: str):
        previous, self.current = self.current, name
        start = time.process_time()
        try:
            yield
        finally:
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - start
            self.current = previous

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def reset(self) -> None:
        self.calls.clear()
        self.cpu_seconds.clear()

    def nodes(self, phase: str, grad: bool | None = None) -> int:
        """Tree nodes evaluated in `phase` (rows / 2 under CFG); `grad` filters on gradients on/off."""
        rows = sum(c.rows for c in self.calls if c.phase == phase and (grad is None or c.grad == grad))
        return rows // 2 if self.cfg else rows

    def shapes(self, phase: str) -> list[tuple[int, int]]:
        """(rows, L) of every no-gradient call in `phase`, in call order: what a bare-forward replay runs."""
        return [(c.rows, c.text_tokens) for c in self.calls if c.phase == phase and not c.grad]

    def batch_histogram(self, phase: str) -> dict[int, int]:
        """Nodes per call -> how many calls had that many, for `phase`'s no-gradient calls."""
        per = 2 if self.cfg else 1
        return dict(sorted(Counter(rows // per for rows, _ in self.shapes(phase)).items()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareTime(NamedTuple):
    """Median seconds of a bare-forward replay: wall clock, and the process's CPU time (all threads)."""

    wall: float
    cpu: float


@torch.no_grad()
def bare_forward_seconds(transformer: torch.nn.Module, shapes: list[tuple[int, int]], latent_shape: tuple[int, ...],
                         dtype: torch.dtype, autocast=contextlib.nullcontext, repeats: int = 3,
                         seed: int = 0) -> BareTime:
    """Median wall time of running `transformer` once per (rows, L) in `shapes`, back to back, on random inputs.

    Inputs are made before the clock starts; nothing else runs between calls: this is the floor for a sampler that
    needs these calls.

    Args:
        transformer: the SD3 transformer (as sampled: LoRA on, eval mode).
        shapes: (rows, L) per call, e.g. `ForwardProbe.shapes("sampling")`.
        latent_shape: (C, h, w).
        dtype: the transformer's compute dtype (inputs are cast to it, as CfgVelocity does).
        autocast: a context-manager factory, e.g. `accelerator.autocast`.
        repeats: timed replays; the median is returned.
        seed: for the random inputs.
    Returns:
        BareTime(wall, cpu): the medians over the replays. CPU time is what to compare on a CPU shared with other
        work (it barely grows when other processes compete for the cores; wall time does).
    """
    if not shapes:
        return BareTime(0.0, 0.0)
    device = next(transformer.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    inputs = [random_inputs(transformer, rows, tokens, latent_shape, dtype, gen) for rows, tokens in shapes]
    was_training = transformer.training
    transformer.eval()
    walls, cpus = [], []
    with autocast():
        transformer(**inputs[0], return_dict=False)  # warm-up
        for _ in range(repeats):
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            for kwargs in inputs:
                transformer(**kwargs, return_dict=False)
            _sync(device)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    transformer.train(was_training)
    return BareTime(statistics.median(walls), statistics.median(cpus))


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_info(device: torch.device | str) -> dict[str, object]:
    """The machine and software a measurement ran on (written into every output)."""
    import diffusers

    device = torch.device(device)
    info: dict[str, object] = {
        "device": str(device), "cpu": _cpu_model(), "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine while measuring
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    return info


def describe(info: dict[str, object]) -> str:
    """One line for tables: the GPU, or the CPU and its cores."""
    if "gpu" in info:
        return f"{info['gpu']} ({info['gpu_memory_gib']} GiB), torch {info['torch']}"
    return (f"CPU {info.get('cpu', '?')}, {info.get('cpu_cores', '?')} cores, {info.get('torch_threads', '?')} torch "
            f"threads, load {info.get('load_average_1min', '?')}, torch {info.get('torch', '?')}")
