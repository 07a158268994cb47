"""HPDv2's prompt files from the Hugging Face hub, through huggingface_hub's local cache.

The dataset repository `zhwang/HPDv2` (mirror `ymhao/HPDv2`) holds the benchmark prompts as
`benchmark/{anime,concept-art,paintings,photo}.json` (lists of strings, 800 each) and the annotations as
`train.json`/`test.json` (records with a `prompt` field). Each file is tried in every repository in turn; with
`HF_HUB_OFFLINE=1` (the Makefile's default) `hf_hub_download` answers from the cache alone and never opens a socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from treegrpo.utils.errors import UserError


class HubFile(NamedTuple):
    """A downloaded file: `uri` names repository, commit and file (the provenance); `path` is the cached copy."""

    uri: str
    path: Path


def _commit_of(local: Path) -> str:
    """The commit a cached file belongs to: the folder after `snapshots/` in huggingface_hub's cache layout."""
    parts = local.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else "unknown"


def download_hub_files(
    repos: tuple[str, ...], files: tuple[str, ...], revision: str | None, cache_dir: str | None
) -> list[HubFile]:
    """Fetch `files` from the first of `repos` that has each, into (or straight from) the local cache.

    Args:
        repos: dataset repositories, tried in order (the original, then mirrors).
        files: paths inside the repository, e.g. `benchmark/anime.json`.
        revision: branch, tag or commit; None for the default branch.
        cache_dir: huggingface_hub's cache folder; None for its default (`HF_HUB_CACHE`).
    Returns:
        one `HubFile` per entry of `files`, in order.
    Raises:
        UserError: a file no repository (or, offline, no cache) has; the message lists why each failed.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    out = []
    for filename in files:
        failures = []
        for repo in repos:
            try:
                local = Path(hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset",
                                             revision=revision, cache_dir=cache_dir))
            except (HfHubHTTPError, OSError, ValueError) as err:
                failures.append(f"{repo}: {type(err).__name__}")
                continue
            out.append(HubFile(f"hf://datasets/{repo}@{_commit_of(local)}/{filename}", local))
            break
        else:
            where = cache_dir or "huggingface_hub's default cache"
            raise UserError(
                f"could not get {filename} from {' or '.join(repos)} ({'; '.join(failures)}); offline it must "
                f"already be in {where}: fetch it once with network access, or set data.source: local"
            )
    return out
