"""The `world` section: `treegrpo world`, the shapes world's prompt files (`treegrpo.world`).

The world writes its two fixed splits to `output_dir`: `train.jsonl` (the compositions pretraining and RL training
see) and `heldout.jsonl` (the held-out compositions evaluation measures). `treegrpo ingest` reads them like any
other local source when `data.path` / `data.eval_path` point there (the embedded default).
"""

from __future__ import annotations

from dataclasses import dataclass

from treegrpo.config.base import check

SPLIT_FILES = {"train": "train.jsonl", "heldout": "heldout.jsonl"}


@dataclass(frozen=True)
class WorldParams:
    output_dir: str

    def __post_init__(self) -> None:
        check(bool(self.output_dir.strip()), "world.output_dir", self.output_dir,
              "must be a folder path, e.g. data/world")
