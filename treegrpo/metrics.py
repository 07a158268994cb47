"""Per-iteration figures: wall-time splits, peak memory, and the history/metrics files DVC reads."""

from __future__ import annotations

import contextlib
import json
import resource
import time
from collections import defaultdict
from pathlib import Path

import torch


class Timer:
    """Accumulates wall time per named phase; synchronises CUDA so GPU work is counted where it happens."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - start


def peak_memory_mb() -> float:
    """Peak GPU memory allocated (MiB) on CUDA; else the process's peak resident memory (MiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class MetricsWriter:
    """`history.json` (one record per iteration, DVC plots) and `metrics.json` (the latest, DVC metrics).

    Resuming at iteration i keeps the records of iterations < i, so a killed-and-resumed run has one history.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, keep_until: int = 0):
        self.dir = Path(out_dir)
        self.enabled = enabled
        self.history: list[dict[str, float]] = []
        path = self.dir / "history.json"
        if enabled and keep_until > 0 and path.is_file():
            self.history = [r for r in json.loads(path.read_text()) if r["iteration"] < keep_until]

    def append(self, iteration: int, figures: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.history.append({"iteration": iteration, **figures})
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.dir / "history.json", json.dumps(self.history, indent=1))
        _write_atomic(self.dir / "metrics.json", json.dumps({"iterations_done": iteration + 1, **figures}, indent=1))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
