"""PNG plots of the benchmark: held-out reward against training time and against images (one PNG, two panels),
and the Pareto plot of iteration time against final reward (the paper's Figure 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treegrpo.bench.learning import mean_curve, step_value

COLORS = {"treegrpo": "tab:green", "grpo": "tab:blue", "mixgrpo": "tab:orange", "ddpo": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_learning(learning: dict[str, Any], path: str | Path) -> Path:
    """Seed-mean held-out reward (line) and its seed range (band) vs training time and vs images."""
    plt = _pyplot()
    by_algo: dict[str, list[dict[str, Any]]] = {}
    for run in learning["runs"]:
        by_algo.setdefault(run["algorithm"], []).append(run)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, axis, label in ((axes[0], "time", "training time (s)"), (axes[1], "images", "images sampled")):
        horizon = max(r["points"][-1][axis] for r in learning["runs"])
        grid = [horizon * i / 200 for i in range(201)]
        for algo, runs in by_algo.items():
            color = COLORS.get(algo)
            per_seed = [[step_value(r["points"], x, axis) for x in grid] for r in runs]
            low = [min(v) for v in zip(*per_seed, strict=True)]
            high = [max(v) for v in zip(*per_seed, strict=True)]
            ax.plot(grid, mean_curve(runs, grid, axis), color=color, label=f"{algo} ({len(runs)} seeds)",
                    drawstyle="steps-post")
            ax.fill_between(grid, low, high, color=color, alpha=0.15, step="post")
        ax.set_xlabel(label)
        ax.set_ylabel(f"held-out {learning['reward']}")
        ax.grid(alpha=0.3)
    target = learning["summary"].get("grpo", {}).get("final_reward")
    if target is not None:
        for ax in axes:
            ax.axhline(target, color="gray", linestyle=":", linewidth=1, label="GRPO's final")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Learning efficiency, {learning['size']} model, {learning['budget_s']:.0f} s per run "
                 f"({learning['device'].get('gpu', learning['device'].get('cpu'))})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_pareto(results: dict[str, Any], path: str | Path) -> Path:
    """One point per algorithm: median iteration time (the cost part's when it ran on the same model, else the
    learning runs') against the final held-out reward, with the seeds' range as an error bar."""
    plt = _pyplot()
    learning = results["learning"]
    cost = results.get("cost", {})
    same_model = cost.get("size") == learning["size"] and cost.get("device", {}).get("device") == \
        learning["device"].get("device")
    cost_time = {r["algorithm"]: r["median"]["time_iteration"] for r in cost.get("results", [])} if same_model else {}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (algo, r) in enumerate(learning["summary"].items()):
        x = cost_time.get(algo, r["iteration_time_median"])
        y = r["final_reward"]
        ax.errorbar([x], [y], yerr=[[y - r["final_reward_min"]], [r["final_reward_max"] - y]], fmt="o",
                    color=COLORS.get(algo), capsize=3, label=algo)
        ax.annotate(algo, (x, y), textcoords="offset points", xytext=(6, 10 - 12 * (i % 2)), fontsize=8)
    source = "cost benchmark" if cost_time else "learning runs"
    ax.set_xlabel(f"iteration time (s, median of the {source})")
    ax.set_ylabel(f"final held-out {learning['reward']}")
    ax.set_title("Iteration time vs final reward (up and left is better)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
