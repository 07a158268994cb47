"""Per-iteration figures: wall-time splits, peak memory, and the history/metrics files DVC reads.

`PeakMemory` measures one stretch of code (an iteration): CUDA's allocator peak, or on the CPU the process's peak
resident set (Linux: VmHWM, reset through /proc/self/clear_refs).
"""

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


def _proc_status_mb(key: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


class PeakMemory:
    """Peak memory (MiB) between `start()` and `read()`.

    CUDA: `torch.cuda.max_memory_allocated` after a reset (tensors alive, the allocator's cache not counted).
    CPU: the process's peak resident set (VmHWM) after resetting it through /proc/self/clear_refs; where that file
    is missing or refused, the peak since the process started (`kind` says "rss-lifetime").
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.kind = "cuda-allocated" if self.device.type == "cuda" else "rss"

    def start(self) -> float:
        """Reset the peak; returns the memory in use now (MiB): what the iteration's peak is measured above."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device) / 2**20
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        except OSError:
            self.kind = "rss-lifetime"
        return _proc_status_mb("VmRSS") or 0.0

    def read(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _proc_status_mb("VmHWM")
        if peak is None:
            self.kind = "rss-lifetime"
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak


class MetricsWriter:
    """`history.json` (one record per iteration, DVC plots) and `metrics.json` (the latest, DVC metrics).

    `history`: the records of the iterations before a resume point (the trainer keeps them in its checkpoints);
    both files are rewritten from them at once, so a resumed run has one history even where the files were deleted.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, history: list[dict[str, float]] | None = None):
        self.dir = Path(out_dir)
        self.enabled = enabled
        self.history: list[dict[str, float]] = list(history or [])
        if enabled and self.history:
            self._write()

    def append(self, iteration: int, figures: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.history.append({"iteration": iteration, **figures})
        self._write()

    def _write(self) -> None:
        last = self.history[-1]
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.dir / "history.json", json.dumps(self.history, indent=1))
        _write_atomic(self.dir / "metrics.json", json.dumps({"iterations_done": last["iteration"] + 1,
                                                              **{k: v for k, v in last.items() if k != "iteration"}},
                                                             indent=1))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
