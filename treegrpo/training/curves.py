"""The training's reward curves from its history.json, as a PNG: `treegrpo register` writes `reward_curve.png` and
logs it on the MLflow run. matplotlib is imported on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def curve_keys(history: list[dict[str, float]]) -> list[str]:
    """The reward curves to draw: each reward's mean (`reward_<name>_mean`), else the weighted `reward_mean`."""
    keys = sorted({k for r in history for k in r if k.startswith("reward_") and k.endswith("_mean")} - {"reward_mean"})
    return keys or ["reward_mean"]


def plot_history(history: list[dict[str, float]], path: Path) -> Path:
    """A PNG of the reward curves per iteration, readable offline (`dvc plots show` loads vega from a CDN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = curve_keys(history)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        points = [(r["iteration"], r[key]) for r in history if _is_number(r.get(key))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        ax.set_xlabel("iteration")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
