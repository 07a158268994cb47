"""`treegrpo ingest`: read the prompt sources in params.yaml's `data` section and write deduplicated train/eval
prompt tables (the DVC stage `ingest`)."""

from __future__ import annotations

import argparse

from treegrpo.config import load_params


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest", help="read, normalise, deduplicate and split the prompt sources (DVC stage `ingest`)",
        description=__doc__,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params).data
    from treegrpo.data.ingest import ingest_prompts

    stats = ingest_prompts(params)
    dropped = sum(s.duplicates for s in stats.sources)
    cross = sum(s.cross_split_duplicates for s in stats.sources)
    records = sum(s.records for s in stats.sources)
    print(f"ingested {records} records from {len(stats.sources)} file(s): {stats.rows['train']} train, "
          f"{stats.rows['eval']} eval; dropped {dropped} duplicates and {cross} training copies of eval prompts "
          f"-> {params.ingested_dir}")
    return 0
