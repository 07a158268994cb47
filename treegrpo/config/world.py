"""The `world` section: `treegrpo world`, the shapes world's prompt files (`treegrpo.world`).

The world writes its fixed splits (`treegrpo.world.split`) to `output_dir`: `train.jsonl` (what pretraining
draws), which is `rl.jsonl` (what RL trains on) and `unseen.jsonl` (RL-unseen: pretrained on, never RL-trained on),
and `heldout.jsonl` (the held-out compositions nobody trains on). `treegrpo ingest` reads them like any other local
source when `data.path` / `data.eval_path` point there (the embedded default: rl.jsonl and unseen.jsonl), and
`eval.extra_sets` evaluates the others beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

from treegrpo.config.base import check

SPLIT_FILES = {"train": "train.jsonl", "rl": "rl.jsonl", "unseen": "unseen.jsonl", "heldout": "heldout.jsonl"}


@dataclass(frozen=True)
class WorldParams:
    output_dir: str

    def __post_init__(self) -> None:
        check(bool(self.output_dir.strip()), "world.output_dir", self.output_dir,
              "must be a folder path, e.g. data/world")
