"""`treegrpo evaluate`: the base model against the trained LoRA on the eval prompts, scored by every eval reward."""

from __future__ import annotations

import argparse

from treegrpo.cli import quiet_loading_bars


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score base vs trained LoRA on the eval prompts (metrics.json, table.md, grid.png)",
        description="Sample every eval prompt with the ODE sampler, one fixed seed per prompt, from the base model "
        "and from the trained LoRA (eval.lora); score them with eval.rewards; write metrics.json (mean and standard "
        "error), a Markdown table shaped like the paper's Table 1 and a base-vs-trained PNG grid to eval.output_dir. "
        "The prompt files of eval.extra_sets are evaluated the same way and reported after the eval set.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--prompts", metavar="FILE",
                   help="eval prompts from FILE (text, one per line, or .parquet) instead of "
                   "{data.validated_dir}/eval.parquet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from treegrpo.config import load_params
    from treegrpo.recipes.evaluation import evaluate, read_extra_sets, read_prompts

    quiet_loading_bars()
    params = load_params(args.params)
    prompts = read_prompts(params, args.prompts)
    name = Path(args.prompts).stem if args.prompts else None  # None: the validated eval set's name
    evaluate(params, prompts, extra_sets=read_extra_sets(params), name=name)
    table = (params.eval.output_dir.rstrip("/") + "/table.md")
    with open(table) as f:
        print(f.read(), end="")
    return 0
