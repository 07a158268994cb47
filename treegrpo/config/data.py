"""The `data` section: where prompts come from and where the validated prompt sets land."""

from __future__ import annotations

from dataclasses import dataclass

from treegrpo.config.base import check


@dataclass(frozen=True)
class DataParams:
    validated_dir: str

    def __post_init__(self) -> None:
        check(bool(self.validated_dir.strip()), "data.validated_dir", self.validated_dir, "must be a folder path")
