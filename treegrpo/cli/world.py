"""`treegrpo world`: write the world's prompt files (the DVC stage `world`, before `ingest`), one per split of
`treegrpo.world.split` in `{world.output_dir}`: `train.jsonl` (what pretraining draws), `rl.jsonl` and `unseen.jsonl`
(the part RL trains on and the RL-unseen rest), `heldout.jsonl` (the held-out compositions).

Each file is JSONL, one record per line, `{"prompt": ..., "category": ...}` in sorted prompt order, which
`treegrpo ingest` reads like any other local source (the category becomes the `style` column) when `data.path` and
`data.eval_path` point there (`data.source: local`, `data.eval_source: local`: the embedded default). The split is
fixed in `treegrpo.world.split`. A file already there that does not hold world prompts is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from treegrpo.config import load_params
from treegrpo.config.world import SPLIT_FILES, WorldParams
from treegrpo.utils.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world", help="write the world's prompt files (train, rl, unseen, heldout) to world.output_dir",
        description=__doc__,
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.set_defaults(func=run)


def targets(world: WorldParams) -> dict[str, Path]:
    """split -> the file it is written to."""
    return {split: Path(world.output_dir) / name for split, name in SPLIT_FILES.items()}


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
                        "world.output_dir at another folder, e.g. data/world") from None


def write_world(world: WorldParams) -> dict[str, int]:
    """Write every split (module docstring); returns split -> number of prompts written."""
    from treegrpo.world.split import world_scenes

    paths = targets(world)
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
    world = load_params(args.params).world
    counts = write_world(world)
    paths = targets(world)
    print("wrote the world's prompts: " + ", ".join(f"{n} {split} -> {paths[split]}" for split, n in counts.items()))
    return 0
