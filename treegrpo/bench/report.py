"""The benchmark's outputs: `results.json` (everything, with the device and command), `metrics.json` (flat figures,
DVC metrics), `curves.json` (held-out reward points, DVC plots), `report.md` (tables and targets) and the PNGs.

Results of separate invocations for the same folder are merged part by part (cost, learning, ablations), so a
folder can hold a cost run and a learning run made at different times; each part keeps its own device and command.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from treegrpo.bench.probe import describe

TARGETS = {"speedup": 2.4, "sampler_ratio": 1.2, "time_fraction": 0.5}


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _delta(median: dict[str, float]) -> str:
    return f"{median['working_memory_mb']:.0f}" if "working_memory_mb" in median else "–"


def _header(part: dict[str, Any]) -> list[str]:
    count = f" ({part['transformer_params']:,} transformer parameters)" if "transformer_params" in part else ""
    return [f"Device: {describe(part['device'])}. Model: `{part['size']}`{count}.", "",
            f"Command: `{part['command']}`", ""]


def cost_section(part: dict[str, Any]) -> list[str]:
    results = part["results"]
    cpu = "gpu" not in part["device"]
    grpo = next((r for r in results if r["algorithm"] == "grpo"), None)
    s = results[0]["settings"]
    b = s.get("baselines", {})
    lines = ["## Iteration cost", "", *_header(part),
             f"Median of {part['iterations']} iterations after {part['warmup']} warm-up; B = "
             f"{s['train']['prompts_per_iteration']} prompts per iteration, "
             f"N = {s['sampler']['num_inference_steps']}, "
             f"TreeGRPO k = {s['sampler']['branching']}, d = {s['sampler']['depth']}, T = "
             f"{s['sampler']['trees_per_prompt']}, window fixed at s = {s['sampler']['window']['start']} (its most "
             f"expensive place); baselines G = {b.get('group_size', '–')}, timestep_fraction = "
             f"{b.get('timestep_fraction', '–')}, mix_window = {b.get('mix_window', '–')}; "
             f"{s['model']['resolution']} px, {s['model']['dtype']}, micro_batch {s['train']['micro_batch']}. "
             "NFE and grad forwards are counted by hooks on the transformer (nodes, CFG not doubled); "
             f"peak memory: {results[0]['memory_kind']}; the bare-forward limit is replayed right after each "
             "measured iteration.",
             *(["On a CPU each time is also given as the process's CPU time (all threads), which other work on the "
                "machine inflates far less than the wall clock: wall / CPU."] if cpu else []), "",
             "| algorithm | images/prompt | NFE counted (formula) | grad fwd | sampling s | decoding s | reward s | "
             "training s | iteration s | speed-up vs GRPO | peak MiB (Δ over start) | sampling ÷ bare forwards |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["median"]
        speedup = _f(grpo["median"]["time_iteration"] / m["time_iteration"]) + "×" if grpo else "–"
        iteration, sampling, training = _f(m["time_iteration"]), _f(m["time_sampling"]), _f(m["time_training"])
        ratio = _f(r["sampler_ratio"])
        if cpu:
            speedup += f" / {_f(grpo['median']['cpu_iteration'] / m['cpu_iteration'])}×" if grpo else ""
            iteration += f" / {_f(m['cpu_iteration'])}"
            sampling += f" / {_f(m['cpu_sampling'])}"
            training += f" / {_f(m['cpu_training'])}"
            ratio += f" / {_f(r['sampler_ratio_cpu'])}"
        lines.append(
            f"| {r['algorithm']} | {m['eff_group']:.0f} | {m['nfe_counted']:.0f} ({m['nfe_expected']:.0f}) | "
            f"{m['grad_forwards']:.0f} | {sampling} | {_f(m['time_decoding'])} | {_f(m['time_reward'])} | "
            f"{training} | {iteration} | {speedup} | {m['peak_memory_mb']:.0f} ({_delta(m)}) | {ratio} |")
    tree = next((r for r in results if r["algorithm"] == "treegrpo"), None)
    if tree:
        lines += ["", f"TreeGRPO's sampler made {tree['median']['transformer_calls']:.0f} transformer calls; "
                  f"nodes per call → calls: {tree['batch_histogram']}."]
    return lines + [""]


def learning_section(part: dict[str, Any]) -> list[str]:
    summary = part["summary"]
    lines = ["## Learning efficiency", "", *_header(part),
             f"Each algorithm trained for {part['budget_s']:.0f} s of iterations (evaluations not counted) from seeds "
             f"{part['seeds']}, reward `{part['reward']}`; held-out reward = mean over {part['eval_prompts']} "
             f"held-out prompts x {part['noises']} fixed noises of ODE samples; the window as in params.yaml.", "",
             "| algorithm | iterations | images | iteration s | held-out start | held-out final (min – max) | "
             "time to GRPO's final | ÷ GRPO's time |", "|---|---|---|---|---|---|---|---|"]
    grpo_time = summary.get("grpo", {}).get("train_time_mean")
    for algo, r in summary.items():
        reach = r.get("time_to_baseline_final")
        frac = reach / grpo_time if reach is not None and grpo_time else None
        lines.append(
            f"| {algo} | {r['iterations_mean']:.1f} | {r['images_mean']:.0f} | {_f(r['iteration_time_median'])} | "
            f"{_f(r['start_reward'], 3)} | {_f(r['final_reward'], 3)} ({_f(r['final_reward_min'], 3)} – "
            f"{_f(r['final_reward_max'], 3)}) | {_f(reach, 1) + ' s' if reach is not None else 'not reached'} | "
            f"{_f(frac)} |")
    grpo = summary.get("grpo")
    if grpo and grpo["final_reward"] <= grpo["start_reward"]:
        lines += ["", f"GRPO ended at or below where it started ({grpo['final_reward']:.3f} vs "
                  f"{grpo['start_reward']:.3f}): reaching its final reward takes no training, so the time-to-GRPO "
                  "column is trivial here; compare the final rewards and the curves instead."]
    return lines + ["", "![learning curves](learning.png) ![Pareto](pareto.png)", ""]


def ablation_section(part: dict[str, Any]) -> list[str]:
    lines = ["## Ablations", "", *_header(part),
             f"TreeGRPO, {part['iterations']} iterations from seed {part['seed']} per configuration, reward "
             f"`{part['reward']}`; held-out reward as in the learning benchmark.", ""]
    titles = {"shape": "Tree shape (the paper's Table 3)", "window": "Window placement (the paper's Table 4)"}
    for table, rows in part["tables"].items():
        lines += [f"### {titles.get(table, table)}", "",
                  "| configuration | EffGrp | EffSteps | NFE/prompt | iteration s | train reward | "
                  "held-out start → final |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['label']} | {r['eff_group']:.0f} | {r['eff_steps']:.0f} | "
                         f"{r['nfe_per_prompt_mean']:.0f} | {_f(r['iteration_time_median'])} | "
                         f"{_f(r['train_reward_mean'], 3)} | {_f(r['heldout_start'], 3)} → "
                         f"{_f(r['heldout_final'], 3)} |")
        lines.append("")
    return lines


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's four targets, each with the measured figure and met / missed (None: not measured)."""
    rows = []
    cost = {r["algorithm"]: r for r in results.get("cost", {}).get("results", [])}
    tree, grpo = cost.get("treegrpo"), cost.get("grpo")
    speedup = grpo["median"]["time_iteration"] / tree["median"]["time_iteration"] if tree and grpo else None
    cpu_speedup = grpo["median"]["cpu_iteration"] / tree["median"]["cpu_iteration"] if tree and grpo else None
    rows.append({"key": "speedup", "target": f"TreeGRPO iteration >= {TARGETS['speedup']}x faster than GRPO",
                 "value": speedup, "cpu_value": cpu_speedup,
                 "met": None if speedup is None else speedup >= TARGETS["speedup"]})
    ratio = tree["sampler_ratio"] if tree else None
    rows.append({"key": "sampler_ratio",
                 "target": f"tree sampler within {TARGETS['sampler_ratio']}x of its bare-forward limit",
                 "value": ratio, "cpu_value": tree["sampler_ratio_cpu"] if tree else None,
                 "met": None if ratio is None else ratio <= TARGETS["sampler_ratio"]})
    # compared on what the iteration adds above the memory in use at its start (weights, optimizer and the
    # process itself are the same for every algorithm; on a CPU the RSS they set varies by a few MiB run to run)
    key = "working_memory_mb" if tree and "working_memory_mb" in tree["median"] else "peak_memory_mb"
    mem = (tree["median"][key], grpo["median"][key]) if tree and grpo else None
    what = "above the memory in use at the iteration's start" if key == "working_memory_mb" else "absolute peak"
    rows.append({"key": "peak_memory", "target": f"TreeGRPO peak memory <= GRPO's (MiB, {what})", "value": mem,
                 "met": None if mem is None else mem[0] <= mem[1]})
    summary = results.get("learning", {}).get("summary", {})
    frac, met = None, None
    if "treegrpo" in summary and "grpo" in summary:
        reach = summary["treegrpo"].get("time_to_baseline_final")
        frac = None if reach is None else reach / summary["grpo"]["train_time_mean"]
        met = frac is not None and frac <= TARGETS["time_fraction"]
    row = {"key": "time_fraction",
           "target": f"TreeGRPO reaches GRPO's final reward in <= {TARGETS['time_fraction']} of GRPO's time",
           "value": frac, "met": met}
    if met is not None and summary["grpo"]["final_reward"] <= summary["grpo"]["start_reward"]:
        row.update(met=None, note="trivial: GRPO did not improve on its start")
    rows.append(row)
    return rows


def targets_section(rows: list[dict[str, Any]], cpu: bool) -> list[str]:
    lines = ["## Targets", "", "Verdicts use the wall clock; on a CPU the CPU-time figure follows in brackets.", "",
             "| target | measured | |", "|---|---|---|"]
    for row in rows:
        value = row["value"]
        if value is None:
            shown = "not reached" if row["met"] is False else "–"
        else:
            shown = f"{value[0]:.0f} vs {value[1]:.0f}" if isinstance(value, tuple) else _f(value)
        if row.get("cpu_value") is not None and cpu:
            shown += f" ({_f(row['cpu_value'])} CPU time)"
        verdict = row.get("note") or {None: "not measured", True: "met", False: "**missed**"}[row["met"]]
        lines.append(f"| {row['target']} | {shown} | {verdict} |")
    return lines + [""]


def render(results: dict[str, Any]) -> str:
    lines = [f"# TreeGRPO benchmark: {results.get('title', '')}".rstrip(": "), ""]
    cpu = "gpu" not in results.get("cost", {}).get("device", {"gpu": None})
    lines += targets_section(targets(results), cpu)
    if "cost" in results:
        lines += cost_section(results["cost"])
    if "learning" in results:
        lines += learning_section(results["learning"])
    if "ablations" in results:
        lines += ablation_section(results["ablations"])
    return "\n".join(lines)


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """One level of `name: number` for `dvc metrics show`."""
    out: dict[str, float] = {}
    for r in results.get("cost", {}).get("results", []):
        a, m = r["algorithm"], r["median"]
        out.update({f"cost.{a}.time_iteration": m["time_iteration"], f"cost.{a}.time_sampling": m["time_sampling"],
                    f"cost.{a}.time_training": m["time_training"], f"cost.{a}.nfe": m["nfe_counted"],
                    f"cost.{a}.grad_forwards": m["grad_forwards"], f"cost.{a}.peak_memory_mb": m["peak_memory_mb"],
                    f"cost.{a}.sampler_ratio": r["sampler_ratio"]})
    for a, r in results.get("learning", {}).get("summary", {}).items():
        out[f"learning.{a}.final_reward"] = r["final_reward"]
        if r.get("time_to_baseline_final") is not None:
            out[f"learning.{a}.time_to_grpo_final"] = r["time_to_baseline_final"]
    for row in targets(results):
        if isinstance(row["value"], float) and math.isfinite(row["value"]):
            out[f"target.{row['key']}"] = row["value"]
    return out


def write_outputs(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write results.json, metrics.json, curves.json, report.md and the PNGs; returns the paths written."""
    from treegrpo.bench.plots import plot_learning, plot_pareto

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, text: str) -> None:
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)

    put("results.json", json.dumps(results, indent=1, default=str))
    put("metrics.json", json.dumps(flat_metrics(results), indent=1))
    if "learning" in results:
        points = [{"algorithm": r["algorithm"], "seed": r["seed"], **p} for r in results["learning"]["runs"]
                  for p in r["points"]]
        put("curves.json", json.dumps(points, indent=1))
        written += [plot_learning(results["learning"], out / "learning.png"),
                    plot_pareto(results, out / "pareto.png")]
    put("report.md", render(results))
    return written


def merge(out_dir: str | Path, parts: dict[str, Any]) -> dict[str, Any]:
    """The folder's previous results.json (if any) with `parts` replacing the parts of the same name."""
    path = Path(out_dir) / "results.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    return {**previous, **parts}
