"""`treegrpo fetch`: download and load once every model the configured run needs (safe to repeat)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fetch",
        help="download (Hugging Face cache) and load once the base model and every reward model params name",
        description="Download the base pipeline when model.pretrained is a hub id (only the files a pipeline loads), "
        "and resolve and load once every reward of reward.weights and eval.rewards (hf:// files are downloaded into "
        "the Hugging Face cache), so a missing, gated or corrupt file fails now, naming its params key, and not "
        "during training. Safe to repeat (the cache makes a second run a check): the Prefect flow retries it. "
        "Writes nothing the DVC pipeline tracks.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--skip-base-model", action="store_true", help="only the reward models")
    p.add_argument("--skip-rewards", action="store_true", help="only the base model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from treegrpo.config import load_params
    from treegrpo.recipes.fetch import fetch

    params = load_params(args.params)
    for item in fetch(params, base_model=not args.skip_base_model, rewards=not args.skip_rewards):
        print(f"{item.what}: {item.status} [{item.source}]")
    return 0
