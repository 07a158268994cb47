"""`treegrpo world`: write the world's prompt files, the train split to `data.path` and the held-out compositions to
`data.eval_path` (the DVC stage `world`, before `ingest`).

Each file is JSONL, one record per line, `{"prompt": ..., "category": ...}` in sorted prompt order, which
`treegrpo ingest` reads like any other local source (the category becomes the `style` column). The split is fixed in
`treegrpo.world.split`; the data section says where the files go, so it needs `data.source: local`,
`data.eval_source: local` and `.jsonl` paths. A file already there that does not hold world prompts (the bundled
sample, say) is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from treegrpo.config import load_params
from treegrpo.config.data import DataParams
from treegrpo.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world", help="write the world's train and held-out prompt files where the data section says (DVC stage "
        "`world`)", description=__doc__,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.set_defaults(func=run)


def targets(data: DataParams) -> dict[str, Path]:
    """split -> the file it is written to, after checking the data section points at local JSONL files."""
    if data.source != "local" or data.eval_source != "local":
        raise UserError(f"data.source={data.source!r}, data.eval_source={data.eval_source!r}: the world's prompts "
                        "are local files; set both to 'local', data.path to data/world/train.jsonl and "
                        "data.eval_path to data/world/heldout.jsonl")
    paths = {"train": Path(data.path), "heldout": Path(data.eval_path)}
    for key, path in zip(("data.path", "data.eval_path"), paths.values(), strict=True):
        if path.suffix != ".jsonl":
            raise UserError(f"{key}={str(path)!r}: the world writes JSONL; use a .jsonl path such as "
                            f"data/world/{'train' if key == 'data.path' else 'heldout'}.jsonl")
    if paths["train"].resolve() == paths["heldout"].resolve():
        raise UserError(f"data.path and data.eval_path are both {paths['train']}: give the splits two files")
    return paths


def _check_overwritable(path: Path) -> None:
    """Refuse to replace a file whose first prompt is not one of the world's (it is someone's data)."""
    if not path.is_file():
        return
    from treegrpo.data.readers import read_records
    from treegrpo.world.grammar import parse_prompt

    try:
        first = next(read_records(path))
        parse_prompt(first.prompt)
    except (UserError, StopIteration):
        raise UserError(f"{path}: already holds prompts that are not the world's; refusing to overwrite it. Point "
                        "data.path / data.eval_path at new files, e.g. data/world/train.jsonl and "
                        "data/world/heldout.jsonl") from None


def write_world(data: DataParams) -> dict[str, int]:
    """Write both splits (module docstring); returns split -> number of prompts written."""
    from treegrpo.world.split import world_scenes

    paths = targets(data)
    for path in paths.values():
        _check_overwritable(path)
    counts = {}
    for split, path in paths.items():
        scenes = world_scenes(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        lines = (json.dumps({"prompt": s.prompt, "category": s.category}) + "\n" for s in scenes)
        partial.write_text("".join(lines), encoding="utf-8")
        os.replace(partial, path)
        counts[split] = len(scenes)
    return counts


def run(args: argparse.Namespace) -> int:
    data = load_params(args.params).data
    counts = write_world(data)
    print(f"wrote the world's prompts: {counts['train']} train -> {data.path}, {counts['heldout']} held-out "
          f"compositions -> {data.eval_path}")
    return 0
