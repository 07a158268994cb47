"""Per-iteration figures: the peak-memory meter resets between stretches, the history survives a resume."""

import json

import pytest
import torch

from treegrpo.training.metrics import MetricsWriter, PeakMemory

MIB = 2**20


def test_cpu_peak_memory_is_per_stretch_not_process_lifetime():
    memory = PeakMemory(torch.device("cpu"))
    start = memory.start()
    big = torch.ones(300 * MIB // 4)  # 300 MiB of float32, every page touched
    del big
    first = memory.read()
    if memory.kind == "rss-lifetime":
        pytest.skip("/proc/self/clear_refs is not writable here: only the lifetime peak is available")
    assert first - start > 280, (start, first)
    # a second stretch that allocates nothing: the 300 MiB peak of the first must not show
    start2 = memory.start()
    small = torch.ones(MIB // 4)  # 1 MiB
    second = memory.read()
    del small
    assert second - start2 < 50, (start2, second)
    assert second < first - 200


def test_metrics_writer_rewrites_the_files_from_a_resumed_history(tmp_path):
    writer = MetricsWriter(tmp_path)
    for it in range(3):
        writer.append(it, {"reward_mean": float(it)})
    kept = [r for r in writer.history if r["iteration"] < 2]  # what the checkpoint after iteration 1 holds
    (tmp_path / "history.json").unlink()  # DVC deletes the stage's outputs before it re-runs it
    (tmp_path / "metrics.json").unlink()
    resumed = MetricsWriter(tmp_path, history=kept)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"iterations_done": 2, "reward_mean": 1.0}
    resumed.append(2, {"reward_mean": 20.0})
    history = json.loads((tmp_path / "history.json").read_text())
    assert [(r["iteration"], r["reward_mean"]) for r in history] == [(0, 0.0), (1, 1.0), (2, 20.0)]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"iterations_done": 3, "reward_mean": 20.0}
    MetricsWriter(tmp_path / "off", enabled=False, history=kept)  # other ranks write nothing
    assert not (tmp_path / "off").exists()
