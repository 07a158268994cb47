"""PNG image grids (matplotlib, Agg): the evaluation's base-vs-trained grid and the training samples' grids.

Notation: R rows (prompts), C columns, images (3, H, W) float in [0, 1] on the CPU.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor


def save_image_grid(cells: Sequence[Sequence[Tensor | None]], row_labels: Sequence[str], path: str | Path,
                    column_titles: Sequence[str] | None = None,
                    captions: Sequence[Sequence[str]] | None = None) -> Path:
    """Write an R x C grid to `path` (PNG); returns the path.

    Args:
        cells: R rows of C images (3, H, W) in [0, 1]; None leaves a cell blank.
        row_labels: R labels (prompts), wrapped, left of each row.
        column_titles: C titles above the first row.
        captions: R rows of C captions, under each image (e.g. its reward).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(cells), max(len(r) for r in cells)
    if rows == 0 or cols == 0 or len(row_labels) != rows:
        raise ValueError(f"grid: {rows} rows of images but {len(row_labels)} row labels")
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 2.6, 2.2 * rows + 0.3 * bool(captions)),
                             squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            image = cells[r][c] if c < len(cells[r]) else None
            if image is None:
                ax.axis("off")
                continue
            ax.imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            if column_titles is not None and r == 0:
                ax.set_title(column_titles[c], fontsize=11)
            if captions is not None:
                ax.set_xlabel(captions[r][c], fontsize=7)
        axes[r][0].set_ylabel(textwrap.fill(row_labels[r], 28), fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def spread(scores: Tensor, count: int) -> list[int]:
    """Indices of `count` entries of the 1-D `scores` spread over their ranking, best first (all when fewer):
    the best, the worst and evenly spaced ranks between, so a grid shows what the reward prefers and what it does
    not. `spread(tensor([0., 5., 2., 9.]), 3)` -> [3, 2, 0]."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    if count >= len(order):
        return order
    if count == 1:
        return order[:1]
    picks = [round(i * (len(order) - 1) / (count - 1)) for i in range(count)]
    return [order[p] for p in picks]
