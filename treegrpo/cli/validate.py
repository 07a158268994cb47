"""`treegrpo validate`: run the Great Expectations suite over the ingested prompts and write the prompt sets that
training and evaluation read (the DVC stage `validate`). A failed suite exits non-zero with a summary, unless
`data.on_failure: quarantine` moves the bad rows aside."""

from __future__ import annotations

import argparse

from treegrpo.config import load_params


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate", help="validate the ingested prompts with Great Expectations (DVC stage `validate`)",
        description=__doc__,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params).data
    from treegrpo.data.validate import validate_prompts

    result = validate_prompts(params)
    print(f"prompts {result.status}: {result.rows['train']} train, {result.rows['eval']} eval, "
          f"{result.quarantined} quarantined -> {params.validated_dir} (report {result.report}, "
          f"Data Docs {result.data_docs})")
    return 0
