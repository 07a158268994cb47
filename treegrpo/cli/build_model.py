"""`treegrpo build-tiny-model`: build the offline tiny SD3.5-architecture pipeline (the first DVC stage)."""

from __future__ import annotations

import argparse

from treegrpo.cli import quiet_loading_bars
from treegrpo.config import load_params


def add_parser(sub) -> None:
    p = sub.add_parser(
        "build-tiny-model",
        help="build a random-weight SD3.5-architecture pipeline offline and save it in diffusers format",
        description="Build the tiny (tests, embedded default) or small (~20M transformer, benchmarks) random-weight "
        "SD3.5-architecture pipeline with tokenizers made offline, and save it where tiny_model.path says.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--size", choices=["tiny", "small", "world"], help="override tiny_model.size")
    p.add_argument("--out", help="override tiny_model.path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from treegrpo.models.tiny import count_parameters, save_tiny_pipeline

    quiet_loading_bars()
    spec = load_params(args.params).tiny_model
    size, out = args.size or spec.size, args.out or spec.path
    path = save_tiny_pipeline(out, size=size, seed=spec.seed)
    from diffusers import SD3Transformer2DModel

    n = count_parameters(SD3Transformer2DModel.from_pretrained(path, subfolder="transformer"))
    print(f"built {size} SD3.5-architecture pipeline ({n:,} transformer parameters) at {path}")
    return 0
