"""RL on the shapes world at GPU batch sizes: does `composition` train when a step sees 512 prompt groups?

    python benchmarks/world_gpu.py run --name tree_s0 --out RUNS --seconds 400 --set train.seed=0 ...
    python benchmarks/world_gpu.py report RUNS benchmarks/results/world-gpu

`run` trains one LoRA on the world's RL prompts (`data/world/rl.jsonl`) from the pretrained `models/world-sd3` for a
wall-clock budget, with params.yaml's recipe plus `--set` overrides, and every `--eval-every` iterations scores the
RL-unseen prompts (x `--noises` fixed noises), the held-out compositions (x 2) and 40 RL prompts (x 4) by ODE:
constraints met and strict accuracy, one JSON line each in RUNS/NAME/curve.jsonl. `report` gathers the runs' curves
into one curves.jsonl, a table (report.md) and learning.png. `benchmarks/world_gpu.sh` is the set of runs behind
`benchmarks/results/world-gpu` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup(a: argparse.Namespace, out: Path):
    """A set-up trainer on the RL prompts (the bench harness's params: params.yaml + `a.set`, its output under `out`)
    and the evaluation sets."""
    import torch
    import yaml

    from treegrpo.bench.harness import BenchSetup, bench_params, make_trainer
    from treegrpo.recipes.evaluation import read_prompt_file

    overrides = {key: yaml.safe_load(value) for key, value in (kv.split("=", 1) for kv in a.set)}
    bench = BenchSetup("world", ROOT / "models/world-sd3", yaml.safe_load((ROOT / "params.yaml").read_text()),
                       reward="composition", threads=a.threads)
    bench.apply_threads()
    params = bench_params(bench, overrides.get("train.algorithm", "treegrpo"), out / "train", overrides)
    rl = read_prompt_file(ROOT / "data/world/rl.jsonl")
    sets = [("unseen", read_prompt_file(ROOT / "data/world/unseen.jsonl"), a.noises),
            ("held", read_prompt_file(ROOT / "data/world/heldout.jsonl"), 2)]
    order = torch.randperm(len(rl), generator=torch.Generator().manual_seed(7))[:40].tolist()
    sets.append(("train", [rl[i] for i in order], 4))
    return make_trainer(params, rl), sets


def scores(trainer, sets, row: dict) -> dict:
    """`row` plus constraints met and strict accuracy on each evaluation set (ODE, fixed noises)."""
    from treegrpo.bench.learning import heldout_scores

    for name, prompts, noises in sets:
        f = heldout_scores(trainer, prompts, noises=noises, seed=123)
        row[name + "_met"], row[name + "_acc"] = round(f["reward"], 4), round(f["accuracy"], 4)
    return row


def run(a: argparse.Namespace) -> None:
    t_start = time.time()
    out = Path(a.out) / a.name
    out.mkdir(parents=True, exist_ok=True)
    trainer, sets = setup(a, out)
    real_score, gen = trainer.score, None
    if a.random_reward:  # the null control: training rewards that carry no information, so the update is noise
        import torch

        gen = torch.Generator().manual_seed(12345)

    def iteration(it: int) -> dict:
        if gen is not None:  # the iteration's rewards only; evaluations score with the real reward
            trainer.score = lambda images, prompts: torch.rand(1, len(prompts), generator=gen).to(images.device)
        try:
            return trainer.iteration(it)
        finally:
            trainer.score = real_score

    print(a.name, "device", trainer.accelerator.device, "setup", round(time.time() - t_start, 1), "s", flush=True)
    log = (out / "curve.jsonl").open("w")
    log.write(json.dumps({"name": a.name, "set": a.set}) + "\n")

    def evaluate(it: int, train_s: float, images: int, hist: list[dict]) -> None:
        t0 = time.time()
        row = {"it": it, "train_s": round(train_s, 2), "images": images}
        if hist:
            last = hist[-min(len(hist), a.eval_every):]
            row["reward_train"] = statistics.fmean(h["reward_mean"] for h in last)
        scores(trainer, sets, row)
        row["eval_s"] = round(time.time() - t0, 2)
        print(a.name, json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()

    train_s, images, hist, it = 0.0, 0, [], 0
    evaluate(0, 0.0, 0, hist)
    while time.time() - t_start < a.seconds and it < a.iterations:
        t0 = time.time()
        hist.append(iteration(it))
        train_s += time.time() - t0
        images += int(hist[-1]["images"])
        it += 1
        if it % a.eval_every == 0:
            evaluate(it, train_s, images, hist)
    if it % a.eval_every:
        evaluate(it, train_s, images, hist)
    (out / "history.json").write_text(json.dumps(hist))
    trainer.export_lora()  # out/train/lora, for `perturb`
    print(a.name, "done", it, "iterations", round(time.time() - t_start), "s", flush=True)


def perturb(a: argparse.Namespace) -> None:
    """Is a trained LoRA's change of the weights better than a random change of the same size? Each LoRA layer
    changes its weight by dW = B A (times alpha / rank). The evaluation sets are scored at the base model (B = 0), at
    s * dW_trained (B = s B_trained, A = A_trained) and at s * dW_random for each scale s in `a.scales`: dW_random =
    B_r A_init with B_r Gaussian, scaled layer by layer so that ||B_r A_init|| = ||B_trained A_trained|| (Frobenius).
    One JSON line each, with the mean relative size ||dW|| / ||W|| over the layers."""
    import torch
    from safetensors.torch import load_file

    from treegrpo.models.lora import lora_state_dict, set_lora_state_dict

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer, sets = setup(a, out / "perturb")
    model = trainer.policy.transformer
    init = lora_state_dict(model)  # lora_A at peft's initialisation, lora_B zero: the base model
    trained = {k.removeprefix("transformer."): v.float() for k, v in load_file(a.lora).items()}
    if set(trained) != set(init):
        raise SystemExit(f"{a.lora}: its LoRA keys are not this params.yaml's (lora.target_modules, lora.rank)")
    layers = sorted(k.removesuffix(".lora_A.weight") for k in init if k.endswith(".lora_A.weight"))
    base_weights = dict(model.named_parameters())
    weight_norm = {m: base_weights[f"{m}.base_layer.weight"].detach().norm() for m in layers}
    size = {m: (trained[f"{m}.lora_B.weight"] @ trained[f"{m}.lora_A.weight"]).norm() for m in layers}  # ||dW||/scale
    variants = [("base", 0.0, init)]
    for scale in a.scales:
        variants.append(("trained", scale, {**trained, **{f"{m}.lora_B.weight": scale * trained[f"{m}.lora_B.weight"]
                                                          for m in layers}}))
        for draw in range(a.draws):
            gen = torch.Generator().manual_seed(1000 + draw)
            state = dict(init)
            for m in layers:
                b = torch.randn(init[f"{m}.lora_B.weight"].shape, generator=gen)  # (out, r)
                b *= size[m] / (b @ init[f"{m}.lora_A.weight"].float()).norm()
                state[f"{m}.lora_B.weight"] = scale * b
            variants.append((f"random{draw}", scale, state))
    relative = sum(float(size[m] / weight_norm[m]) for m in layers) / len(layers)
    with (out / "perturb.jsonl").open("w") as log:
        for name, scale, state in variants:
            set_lora_state_dict(model, state)
            row = scores(trainer, sets, {"variant": name, "scale": scale, "dw_relative": round(scale * relative, 4)})
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")


def _short(override: str) -> str:
    """An override for the table: a LoRA target list that extends params.yaml's as "params.yaml's + the rest"."""
    import yaml

    key, value = override.split("=", 1)
    if key != "lora.target_modules":
        return override
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())["lora"]["target_modules"]
    targets = yaml.safe_load(value)
    if targets[: len(shipped)] != shipped:
        return override
    return f"{key}=params.yaml's + [{', '.join(targets[len(shipped):])}]"


def report(a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    runs = {}
    for f in sorted(Path(a.runs).glob("*/curve.jsonl")):
        head, *rows = [json.loads(line) for line in f.read_text().splitlines()]
        runs[head["name"]] = {"set": head["set"], "rows": rows}
    (dest / "curves.jsonl").write_text("".join(json.dumps({"name": n, **r}) + "\n" for n, r in runs.items()))
    lines = ["| run | overrides | iterations | images | RL-unseen met | RL-unseen strict | held-out met / strict |"
             " RL prompts met / strict | training reward (since the last evaluation) |", "|---" * 9 + "|"]
    for n, r in runs.items():
        s, e = r["rows"][0], r["rows"][-1]
        sets = ", ".join(_short(x) for x in r["set"] if not x.startswith(("sampler.max_batch", "train.micro_batch")))
        lines.append(f"| {n} | {sets} | {e['it']} | {e['images']} | {s['unseen_met']:.3f} -> {e['unseen_met']:.3f} |"
                     f" {s['unseen_acc']:.3f} -> {e['unseen_acc']:.3f} | {e['held_met']:.3f} / {e['held_acc']:.3f} |"
                     f" {e['train_met']:.3f} / {e['train_acc']:.3f} | {e.get('reward_train', float('nan')):.3f} |")
    (dest / "report.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in zip(axes, ["unseen_acc", "unseen_met", "reward_train"],
                              ["RL-unseen strict accuracy", "RL-unseen constraints met", "training reward (SDE)"],
                              strict=True):
        for n, r in runs.items():
            rows = [x for x in r["rows"] if key in x]
            style = "-" if n.startswith("tree_s") else "--" if n.startswith("grpo") else ":"
            ax.plot([x["images"] for x in rows], [x[key] for x in rows], style, marker=".", label=n)
        ax.set_title(title)
        ax.set_xlabel("images sampled")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest / "learning.png", dpi=80)
    print((dest / "report.md").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one RL run for a wall-clock budget")
    r.add_argument("--name", required=True)
    r.add_argument("--out", required=True, help="folder of the runs")
    r.add_argument("--seconds", type=float, default=400, help="wall-clock budget, setup and evaluation included")
    r.add_argument("--iterations", type=int, default=10**9, help="stop after this many iterations")
    r.add_argument("--random-reward", action="store_true", help="train on uniform random rewards (a null control)")
    r.add_argument("--eval-every", type=int, default=10)
    r.add_argument("--noises", type=int, default=8, help="fixed noises per RL-unseen prompt")
    r.add_argument("--set", action="append", default=[], help="a params.yaml override, key=value (repeatable)")
    r.add_argument("--threads", type=int, default=2)
    g = sub.add_parser("report", help="curves.jsonl, report.md and learning.png from the runs")
    g.add_argument("runs")
    g.add_argument("dest")
    q = sub.add_parser("perturb", help="a trained LoRA's move against random moves of the same size")
    q.add_argument("lora", help="a trained LoRA file (pytorch_lora_weights.safetensors) of params.yaml's shape")
    q.add_argument("--out", required=True)
    q.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0])
    q.add_argument("--draws", type=int, default=3, help="random moves per scale")
    q.add_argument("--noises", type=int, default=4)
    q.add_argument("--set", action="append", default=[])
    q.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    {"run": run, "report": report, "perturb": perturb}[a.cmd](a)


if __name__ == "__main__":
    main()
