"""`treegrpo bench`: iteration cost, sampler efficiency, learning efficiency and ablations of TreeGRPO and the
baselines, on a random-weight model built offline (docs/benchmarks.md), and the policy gradient's signal-to-noise
ratio per prompt group."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)
PARTS = ("cost", "learning", "ablations", "gradient")
DEFAULT_PARTS = ("cost", "learning", "ablations")  # gradient: when named (a diagnosis, not a comparison)
DEFAULT_OUT = "outputs/bench"  # gitignored; the work folder (outputs/bench/work) sits beside the results


def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark TreeGRPO against GRPO, MixGRPO and DDPO: iteration cost, sampler limit, learning, ablations",
        description="Measure, on one machine and one random-weight model: (cost) each algorithm's iteration time "
        "split into sampling/decoding/reward/training, transformer evaluations and forwards with gradients counted by "
        "hooks, peak memory, the tree sampler against the same transformer calls on random inputs, the FLOPs of those "
        "calls (torch.utils.flop_counter) as TFLOP/s and, on a known GPU, as a fraction of its dense bf16 peak, and "
        "the tree's signal figures per window start; (learning) "
        "held-out reward vs time and images for the same wall-clock budget and seeds; (ablations) tree shapes and "
        "window placements; (gradient, when named) the signal-to-noise ratio of the policy gradient per prompt group "
        "at the initial weights, for params.yaml's tree shape and k,d = 2,2 / 2,1 / 3,3 at the same reward: how many "
        "prompt groups an optimizer step must average for a gradient with cosine ~0.5 to the true one, and the "
        "seconds per group. Writes results.json, metrics.json, report.md and PNGs to --out.",
    )
    p.add_argument("--parts", type=_csv(str), default=list(DEFAULT_PARTS), help="comma-separated subset of "
                   f"{','.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})")
    p.add_argument("--size", choices=["tiny", "small", "sd35m", "world"], default="tiny",
                   help="tiny (quick), small (~22M transformer, CPU), sd35m (SD3.5-Medium architecture, random "
                   "weights, 512 px bf16: needs a GPU), world (the pretrained world model of `treegrpo pretrain`, "
                   "on the composition reward and the world's held-out prompts: where learning is real) "
                   "(default: tiny)")
    p.add_argument("--algorithms", type=_csv(str), default=["treegrpo", "grpo", "mixgrpo", "ddpo"],
                   help="comma-separated (default: treegrpo,grpo,mixgrpo,ddpo)")
    p.add_argument("--iterations", type=int, default=3, help="cost: measured iterations per algorithm (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="cost: warm-up iterations, not measured (default 1)")
    p.add_argument("--seeds", type=_csv(int), default=[0, 1],
                   help="learning: seeds (default 0,1); ablations, gradient: the first")
    p.add_argument("--budget", type=float, default=60.0,
                   help="learning: seconds of training per algorithm and seed (default 60)")
    p.add_argument("--eval-points", type=int, default=6, help="learning: held-out evaluations per run (default 6)")
    p.add_argument("--ablation-iterations", type=int, default=6,
                   help="ablations: iterations per configuration (default 6)")
    p.add_argument("--gradient-groups", type=int, default=32,
                   help="gradient: at least this many prompt groups per configuration, in iterations of B prompts "
                   "(default 32; the SNR's error shrinks as 1/sqrt(groups): a small SNR needs hundreds)")
    p.add_argument("--prompts-per-iteration", type=int, help="B (default: params.yaml's train.prompts_per_iteration)")
    p.add_argument("--reward", help="the reward trained and evaluated (default: composition for --size world, "
                   "else jpeg_compressibility: weight-free, learns on the random-weight models)")
    p.add_argument("--eval-prompts", type=int, help="learning, ablations: held-out prompts scored (default: every "
                   "one for --size world, else 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--out", help=f"results folder (default {DEFAULT_OUT}/<size>, untracked; the tracked results "
                   "under benchmarks/results/ are written only when named here)")
    p.add_argument("--model-dir", help="the benchmark's pipeline (default models/bench-<size>; built if missing)")
    p.add_argument("--params", default="params.yaml", help="base params file (default params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key for every run, e.g. --set sampler.max_batch=32 (YAML value)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's). On a CPU shared with other "
                   "work 1 can be much faster than 2; the number used is recorded with the device")
    p.add_argument("--peak-tflops", type=float, help="cost: the GPU's dense bf16 peak in TFLOP/s for the MFU column "
                   "(default: from the table in treegrpo/bench/flops.py by device name; none on a CPU)")
    p.add_argument("--limit-repeats", type=int, default=2, help="cost: timed replays of the bare forwards (default 2)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="cost: run every algorithm in this process (default: a fresh process each, so peak memory "
                   "is its own)")
    p.set_defaults(func=run)


def output_dir(args: argparse.Namespace) -> Path:
    """`--out`, or `outputs/bench/<size>`: outside git (outputs/ is ignored), so a plain `treegrpo bench` never
    overwrites the committed results in benchmarks/results/."""
    return Path(args.out) if args.out else Path(DEFAULT_OUT) / args.size


def _overrides(pairs: list[str]) -> dict:
    import yaml

    from treegrpo.utils.errors import UserError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. sampler.max_batch=32")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _check(args: argparse.Namespace) -> None:
    from treegrpo.config.train import ALGORITHMS
    from treegrpo.utils.errors import UserError

    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        raise UserError(f"--parts {','.join(bad)}: unknown; choose from {','.join(PARTS)}")
    bad = [a for a in args.algorithms if a not in ALGORITHMS]
    if bad:
        raise UserError(f"--algorithms {','.join(bad)}: unknown; choose from {','.join(ALGORITHMS)}")
    if args.iterations < 1 or args.warmup < 0 or args.budget <= 0 or args.ablation_iterations < 1:
        raise UserError("--iterations and --ablation-iterations must be >= 1, --warmup >= 0, --budget > 0")
    if args.gradient_groups < 2:
        raise UserError(f"--gradient-groups {args.gradient_groups}: must be >= 2 (the noise is a variance)")
    if args.eval_prompts is not None and args.eval_prompts < 1:
        raise UserError(f"--eval-prompts {args.eval_prompts}: must be >= 1 (omit it for the default)")
    if args.size == "sd35m" and args.device == "cpu":
        raise UserError("--size sd35m runs SD3.5-Medium's 2.2B-parameter transformer at 512 px: it needs a GPU "
                        "(--device cuda); use --size small on the CPU")


def run(args: argparse.Namespace) -> int:
    import yaml

    from treegrpo.bench import suite
    from treegrpo.bench.harness import BenchSetup, ensure_model
    from treegrpo.bench.report import merge, write_outputs
    from treegrpo.config import load_params

    _check(args)
    load_params(args.params)  # fails early, with the key named, on a bad params file
    base = yaml.safe_load(Path(args.params).read_text())
    world = args.size == "world"
    model_dir = Path(args.model_dir or (base["pretrain"]["output"] if world else f"models/bench-{args.size}"))
    reward = args.reward or ("composition" if world else "jpeg_compressibility")
    tiny = Path(base["tiny_model"]["path"])
    ensure_model(args.size, model_dir, tokenizer_dir=tiny if (tiny / "tokenizer").is_dir() else None)
    setup = BenchSetup(args.size, model_dir, base, args.device, reward, args.prompts_per_iteration,
                       _overrides(args.set), args.threads)
    setup.apply_threads()
    out = output_dir(args)
    work = Path("outputs/bench/work")
    eval_count = args.eval_prompts if args.eval_prompts is not None else (None if world else 8)
    train_prompts, eval_prompts = suite.load_prompt_sets(base, eval_count)
    parts = {}
    if "cost" in args.parts:
        parts["cost"] = suite.run_cost(setup, args.algorithms, train_prompts, args.iterations, args.warmup,
                                       args.limit_repeats, args.isolate, work, peak_tflops=args.peak_tflops)
    if "learning" in args.parts:
        parts["learning"] = suite.run_learning(setup, args.algorithms, args.seeds, train_prompts, eval_prompts,
                                               args.budget, args.eval_points, work_dir=work)
    if "ablations" in args.parts:
        parts["ablations"] = suite.run_ablations(setup, train_prompts, eval_prompts, args.ablation_iterations,
                                                 seed=args.seeds[0], work_dir=work)
    if "gradient" in args.parts:
        parts["gradient"] = suite.run_gradient(setup, train_prompts, args.gradient_groups, seed=args.seeds[0],
                                               work_dir=work)
    results = merge(out, {**parts, "title": f"{args.size} model"})
    written = write_outputs(results, out)
    print(f"wrote {', '.join(str(p) for p in written)}")
    print((out / "report.md").read_text())
    return 0
