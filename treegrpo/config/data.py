"""The `data` section: where prompts come from, how they are split, what the validation suite accepts, and where the
ingested and validated prompt sets land."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from treegrpo.config.base import check


@dataclass(frozen=True)
class DataParams:
    # sources (treegrpo ingest)
    source: Literal["local", "hub"]
    path: str
    eval_source: Literal["split", "local", "hub"]
    eval_path: str | None
    eval_fraction: float
    split_salt: str
    hub_repos: list[str]
    hub_revision: str | None
    hub_train_files: list[str]
    hub_eval_files: list[str]
    hub_cache_dir: str | None
    ingested_dir: str
    # the suite (treegrpo validate)
    min_chars: int
    max_chars: int
    min_clip_tokens: int
    max_clip_tokens: int
    min_train_prompts: int
    max_train_prompts: int | None
    min_eval_prompts: int
    max_eval_prompts: int | None
    on_failure: Literal["fail", "quarantine"]
    validated_dir: str

    def __post_init__(self) -> None:
        check(bool(self.path.strip()), "data.path", self.path,
              "must be a prompt file or folder (data/sample/prompts.jsonl is the bundled sample)")
        check(self.eval_source != "local" or bool(self.eval_path and self.eval_path.strip()), "data.eval_path",
              self.eval_path, "must be a prompt file or folder when data.eval_source is 'local'")
        check(self.eval_source != "split" or 0.0 < self.eval_fraction < 1.0, "data.eval_fraction",
              self.eval_fraction, "must be in (0, 1) when data.eval_source is 'split'")
        check(0 < len(self.split_salt.encode()) <= 64, "data.split_salt", self.split_salt,
              "must be 1 to 64 bytes (it keys the BLAKE2b hash that assigns the split)")
        uses_hub = self.source == "hub" or self.eval_source == "hub"
        check(not uses_hub or len(self.hub_repos) > 0, "data.hub_repos", list(self.hub_repos),
              "must name at least one dataset repository, e.g. zhwang/HPDv2")
        check(self.source != "hub" or len(self.hub_train_files) > 0, "data.hub_train_files",
              list(self.hub_train_files), "must name at least one file when data.source is 'hub', e.g. train.json")
        check(self.eval_source != "hub" or len(self.hub_eval_files) > 0, "data.hub_eval_files",
              list(self.hub_eval_files), "must name at least one file when data.eval_source is 'hub'")
        check(bool(self.ingested_dir.strip()), "data.ingested_dir", self.ingested_dir, "must be a folder path")
        check(self.min_chars >= 1, "data.min_chars", self.min_chars, "must be >= 1")
        check(self.max_chars >= self.min_chars, "data.max_chars", self.max_chars,
              f"must be >= data.min_chars = {self.min_chars}")
        check(self.min_clip_tokens >= 2, "data.min_clip_tokens", self.min_clip_tokens,
              "must be >= 2 (the count includes CLIP's start and end tokens; 3 means one word piece)")
        check(self.max_clip_tokens >= self.min_clip_tokens, "data.max_clip_tokens", self.max_clip_tokens,
              f"must be >= data.min_clip_tokens = {self.min_clip_tokens}")
        for split in ("train", "eval"):
            low, high = getattr(self, f"min_{split}_prompts"), getattr(self, f"max_{split}_prompts")
            check(low >= 0, f"data.min_{split}_prompts", low, "must be >= 0")
            check(high is None or high >= low, f"data.max_{split}_prompts", high,
                  f"must be null (no bound) or >= data.min_{split}_prompts = {low}")
        check(bool(self.validated_dir.strip()), "data.validated_dir", self.validated_dir, "must be a folder path")
        check(self.validated_dir.rstrip("/") != self.ingested_dir.rstrip("/"), "data.validated_dir",
              self.validated_dir, "must differ from data.ingested_dir (validation replaces its outputs)")
