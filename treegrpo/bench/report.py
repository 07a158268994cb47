"""The benchmark's outputs: `results.json` (everything, with the device and command), `metrics.json` (flat figures,
DVC metrics), `curves.json` (held-out reward points, DVC plots), `report.md` (tables and targets) and the PNGs.

Results of separate invocations for the same folder are merged part by part (cost, learning, ablations, gradient),
so a folder can hold a cost run and a learning run made at different times; each part keeps its own device and
command.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from treegrpo.bench.gradient import gradient_section
from treegrpo.bench.probe import describe

TARGETS = {"speedup": 2.4, "sampler_ratio": 1.2, "time_fraction": 0.5, "mfu": 0.5}


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _g(value: Any) -> str:
    """Three significant digits (TFLOP/s on a CPU are small, on a GPU large)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g}"


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
             f"{s['model']['resolution']} px, {s['model']['dtype']}, micro_batch {s['train']['micro_batch']}, "
             f"torch.compile {'on' if s['model'].get('compile') else 'off'}, attention "
             f"{s['model'].get('attention_backend', 'default')}. "
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


def mfu(part: dict[str, Any], tflops: float | None) -> float | None:
    """Achieved TFLOP/s as a fraction of the part's dense bf16 peak (None: no peak known, e.g. a CPU)."""
    peak = part.get("peak_bf16_tflops")
    if not peak or tflops is None or math.isnan(tflops):
        return None
    return tflops / peak


def hardware_section(part: dict[str, Any]) -> list[str]:
    """FLOPs, TFLOP/s and (with a known peak) MFU of each algorithm's sampling and update."""
    results = part["results"]
    if "tflops_total" not in results[0]["median"]:
        return []  # results written before FLOPs were counted
    gpu = "gpu" in part["device"]
    peak = part.get("peak_bf16_tflops")
    if peak:
        where = (f"MFU = achieved TFLOP/s ÷ the device's dense bf16 peak, {peak:g} TFLOP/s ({part['peak_source']}; "
                 f"the run's dtype is {results[0]['settings']['model']['dtype']}).")
    elif gpu:
        where = (f"No dense bf16 peak is known for {part['device']['gpu']}: add it to PEAK_BF16_TFLOPS in "
                 "treegrpo/bench/flops.py or pass --peak-tflops for the MFU columns.")
    else:
        where = ("On a CPU the rates are on the wall clock / on the process's CPU time, and there is no MFU column "
                 "(the peak table is of GPUs' dense bf16 tensor-core peaks).")
    lines = ["## How close to the hardware", "",
             "FLOPs of the measured iterations' transformer calls, counted by `torch.utils.flop_counter."
             "FlopCounterMode` on a replay of each distinct call shape (matmuls, convolutions and attention; a call "
             "with gradients counts its backward too, activation gradients and the LoRA weights' gradients, and the "
             "recomputed forward under gradient checkpointing); TFLOP/s = those FLOPs ÷ the trainer's phase time "
             "(sampling, update), medians over the measured iterations. The bare-forward column runs the sampling "
             f"calls alone (the limit above). {where}", ""]
    head = ["algorithm", "sampling TFLOP", "update TFLOP", "sampling TFLOP/s", "update TFLOP/s",
            "sampling + update TFLOP/s", "bare forwards TFLOP/s"]
    if peak:
        head += ["MFU sampling", "MFU update", "MFU sampling + update"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r["median"]
        keys = ("tflops_sampling", "tflops_training", "tflops_total", "tflops_limit")
        rates = [_g(m.get(key)) for key in keys]
        if not gpu and "tflops_total_cpu" in m:  # wall / CPU time, as the cost table
            rates = [f"{rate} / {_g(m.get(key + '_cpu'))}" for rate, key in zip(rates, keys, strict=True)]
        row = [r["algorithm"], _g(m["flops_sampling"] / 1e12), _g(m["flops_training"] / 1e12), *rates]
        if peak:
            row += [_f(mfu(part, m[key]), 3) for key in ("tflops_sampling", "tflops_training", "tflops_total")]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


SIGNAL_COLUMNS = ("tree/reward_std_mean", "tree/reward_std_min", "tree/tie_fraction")


def _signal_rows(label: str, rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        levels = sorted((k for k in row if k.startswith("tree/adv_std_level_")),
                        key=lambda k: int(k.rsplit("_", 1)[1]))
        out.append(f"| {label} | {row['window_start']} | {row['iterations']} | "
                   + " | ".join(_f(row.get(k), 3) for k in SIGNAL_COLUMNS)
                   + f" | {' / '.join(_f(row[k], 3) for k in levels) or '–'} | "
                   f"{_f(row.get('tree/backup_ess_mean'))} | {_f(row.get('tree/backup_ess_min'))} |")
    return out


def pooled_signal(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several runs' `signal` rows pooled by window start (means weighted by iterations)."""
    by_start: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        for row in run.get("signal", []):
            by_start.setdefault(row["window_start"], []).append(row)
    pooled = []
    for start, rows in sorted(by_start.items()):
        n = sum(r["iterations"] for r in rows)
        keys = sorted({k for r in rows for k in r if k.startswith("tree/")})
        pooled.append({"window_start": start, "iterations": n, **{
            k: sum(r[k] * r["iterations"] for r in rows if k in r) / sum(r["iterations"] for r in rows if k in r)
            for k in keys}})
    return pooled


def signal_section(results: dict[str, Any]) -> list[str]:
    """Is the tree carrying signal, for each window strategy and start the benchmark ran (`tree/...` figures)."""
    blocks: list[tuple[str, list[dict[str, Any]]]] = []
    for r in results.get("cost", {}).get("results", []):
        if r.get("signal"):
            window = "window fixed" if r["algorithm"] == "treegrpo" else "its own steps"
            blocks.append((f"cost: {r['algorithm']}, {window}", r["signal"]))
    learning = results.get("learning", {})
    for algo in learning.get("summary", {}):
        runs = [r for r in learning.get("runs", []) if r["algorithm"] == algo]
        if any(r.get("signal") for r in runs):
            blocks.append((f"learning: {algo}, params.yaml's window, {len(runs)} seeds", pooled_signal(runs)))
    for table, rows in results.get("ablations", {}).get("tables", {}).items():
        for r in rows:
            if r.get("signal"):
                blocks.append((f"ablation ({table}): {r['label']}", r["signal"]))
    if not blocks:
        return []
    lines = ["## Is the tree carrying signal?", "",
             "Per window start, the mean over its iterations of the trainer's `tree/...` figures: the per-prompt "
             "std of the leaf rewards (mean and min over prompts), the fraction of prompts whose leaves all tie (all "
             "their advantages 0: compute that trained nothing), the std of the edge advantages at each window level "
             "(level 0 first), and the effective sample size 1 / sum(w²) of the softmax backup weights (1 = one "
             "child takes all, k = uniform). A baseline's trajectories are one-child trees: ESS 1, a level per SDE "
             "step.", "",
             "| run | window start | iterations | reward std mean | reward std min | tie fraction | "
             "adv std per level | backup ESS mean | backup ESS min |", "|---|---|---|---|---|---|---|---|---|"]
    for label, rows in blocks:
        lines += _signal_rows(label, rows)
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
    first = next(iter(summary.values()), {})
    if "common_images" in first:
        accuracy = "start_accuracy" in first
        lines += ["", f"At equal images sampled ({first['common_images']:.0f}, where the algorithm that sampled the "
                  "fewest in the budget stopped; the paper's \"same training samples\"):", "",
                  "| algorithm | held-out reward at equal images | images to GRPO's final |"
                  + (" held-out accuracy: start | final | at equal images |" if accuracy else ""),
                  "|---|---|---|" + ("---|---|---|" if accuracy else "")]
        for algo, r in summary.items():
            reach = r.get("images_to_baseline_final")
            row = (f"| {algo} | {_f(r['reward_at_common_images'], 3)} | "
                   f"{_f(reach, 0) if reach is not None else 'not reached'} |")
            if accuracy:
                row += (f" {_f(r.get('start_accuracy'), 3)} | {_f(r.get('final_accuracy'), 3)} | "
                        f"{_f(r.get('accuracy_at_common_images'), 3)} |")
            lines.append(row)
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
        accuracy = all("heldout_accuracy_final" in r for r in rows)
        lines += [f"### {titles.get(table, table)}", "",
                  "| configuration | EffGrp | EffSteps | NFE/prompt | iteration s | train reward | "
                  "held-out start → final |" + (" held-out accuracy start → final |" if accuracy else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if accuracy else "")]
        for r in rows:
            lines.append(f"| {r['label']} | {r['eff_group']:.0f} | {r['eff_steps']:.0f} | "
                         f"{r['nfe_per_prompt_mean']:.0f} | {_f(r['iteration_time_median'])} | "
                         f"{_f(r['train_reward_mean'], 3)} | {_f(r['heldout_start'], 3)} → "
                         f"{_f(r['heldout_final'], 3)} |"
                         + (f" {_f(r['heldout_accuracy_start'], 3)} → {_f(r['heldout_accuracy_final'], 3)} |"
                            if accuracy else ""))
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
    share = mfu(results["cost"], tree["median"].get("tflops_total")) if tree else None
    rows.append({"key": "mfu", "target": f"TreeGRPO sampling + update at >= {TARGETS['mfu']:.0%} of the GPU's dense "
                 "bf16 peak (MFU)", "value": share, "met": None if share is None else share >= TARGETS["mfu"]})
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
        lines += hardware_section(results["cost"])
    if "learning" in results:
        lines += learning_section(results["learning"])
    if "ablations" in results:
        lines += ablation_section(results["ablations"])
    if "gradient" in results:
        lines += gradient_section(results["gradient"])
    lines += signal_section(results)
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
        out.update({f"cost.{a}.{key}": m[key] for key in ("tflops_sampling", "tflops_training", "tflops_total")
                    if key in m})
    for a, r in results.get("learning", {}).get("summary", {}).items():
        out[f"learning.{a}.final_reward"] = r["final_reward"]
        if "final_accuracy" in r:
            out[f"learning.{a}.final_accuracy"] = r["final_accuracy"]
        if r.get("time_to_baseline_final") is not None:
            out[f"learning.{a}.time_to_grpo_final"] = r["time_to_baseline_final"]
    for r in results.get("gradient", {}).get("rows", []):
        name = re.sub(r"[^\w=]+", "_", r["config"]).strip("_")  # "k=3 d=3 (params)" -> "k=3_d=3_params"
        if math.isfinite(r["snr_per_group"]):
            out[f"gradient.{name}.snr_per_group"] = r["snr_per_group"]
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
