"""`treegrpo ingest`: prompt sources in any of HPDv2's forms -> deduplicated train/eval prompt tables.

One pass, one record at a time: read (`readers.py`) -> normalise -> drop exact duplicates -> assign a split ->
buffered Parquet writers. Memory holds one read chunk, one write batch per split and a 16-byte digest per kept
prompt, whatever the size of the input.

- Normalise: Unicode NFC, runs of whitespace collapsed to one space, ends stripped.
- Split: with `eval_source: split`, a prompt goes to eval when the first 8 bytes of BLAKE2b(prompt, key=split_salt),
  read as an integer, fall below `eval_fraction * 2**64`. It depends on the prompt's text alone, so adding prompts
  never moves an existing one across the split. An explicit eval source (`local` or `hub`, e.g. the benchmark
  JSONs) replaces the hash split: its prompts are the eval set, read first, and training copies of them are dropped.
- Provenance columns: `source` (file path, or `hf://datasets/{repo}@{commit}/{file}`), `style` (where known),
  `source_index` (the record's 0-based position in its file).
- Outputs in `ingested_dir`: `train.parquet`, `eval.parquet`, `stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from treegrpo.config.data import DataParams
from treegrpo.data.hub import download_hub_files
from treegrpo.data.readers import list_prompt_files, read_records

SPLITS = ("train", "eval")
Role = Literal["split", "train", "eval"]
_WRITE_BATCH = 16384  # rows buffered per split before a Parquet row group is written


def normalize(text: str) -> str:
    """Unicode NFC with whitespace runs collapsed to one space and the ends stripped.

    Lone surrogates (which JSON escapes can carry but UTF-8 cannot) become U+FFFD, which validation flags.
    """
    text = " ".join(unicodedata.normalize("NFC", text).split())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def split_of(digest: bytes, eval_fraction: float) -> str:
    """'eval' or 'train' from a prompt's keyed BLAKE2b digest: eval iff its first 8 bytes < eval_fraction * 2**64."""
    return "eval" if int.from_bytes(digest[:8], "big") < int(eval_fraction * 2**64) else "train"


def prompt_digest(text: str, salt: str) -> bytes:
    """The 16-byte BLAKE2b digest of a normalised prompt, keyed by the split salt."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, key=salt.encode("utf-8")).digest()


@dataclass
class SourceStats:
    """What one source file contributed."""

    source: str
    role: Role
    records: int = 0
    empty: int = 0                 # null, empty or whitespace-only prompts (kept: validation decides their fate)
    duplicates: int = 0            # exact duplicates (after normalisation) of a prompt kept earlier in the same split
    cross_split_duplicates: int = 0  # training copies of an eval prompt, dropped from train
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))


@dataclass
class IngestStats:
    """The stats JSON: per-source counts, totals per split and per style."""

    eval_source: str
    eval_fraction: float | None
    split_salt: str
    sources: list[SourceStats] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    styles: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {} for s in SPLITS})

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates + s.cross_split_duplicates for s in self.sources)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "duplicates": self.duplicates}, indent=2, sort_keys=True) + "\n"


class _SplitWriter:
    """Buffers rows per split and writes them as Parquet row groups; files appear only when `close` succeeds."""

    def __init__(self, out_dir: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.pq = pa, pq
        self.schema = pa.schema([("prompt", pa.string()), ("source", pa.string()), ("style", pa.string()),
                                 ("source_index", pa.int64())])
        out_dir.mkdir(parents=True, exist_ok=True)
        self.final = {s: out_dir / f"{s}.parquet" for s in SPLITS}
        self.partial = {s: out_dir / f".{s}.parquet.partial" for s in SPLITS}
        self.writers = {s: pq.ParquetWriter(self.partial[s], self.schema) for s in SPLITS}
        self.rows: dict[str, list[list]] = {s: [[], [], [], []] for s in SPLITS}

    def add(self, split: str, prompt: str | None, source: str, style: str | None, index: int) -> None:
        cols = self.rows[split]
        cols[0].append(prompt)
        cols[1].append(source)
        cols[2].append(style)
        cols[3].append(index)
        if len(cols[0]) >= _WRITE_BATCH:
            self._flush(split)

    def _flush(self, split: str) -> None:
        cols = self.rows[split]
        self.writers[split].write_table(self.pa.Table.from_arrays(
            [self.pa.array(c, type=f.type) for c, f in zip(cols, self.schema, strict=True)], schema=self.schema))
        self.rows[split] = [[], [], [], []]

    def close(self, ok: bool) -> None:
        for split in SPLITS:
            if ok:
                self._flush(split)
            self.writers[split].close()
            if ok:
                os.replace(self.partial[split], self.final[split])
            else:
                self.partial[split].unlink(missing_ok=True)


def resolve_sources(params: DataParams) -> list[tuple[Role, str, Path]]:
    """(role, provenance name, local file) for every file to read, eval sources first when explicit."""

    def files(kind: str, path: str | None, hub_files: tuple[str, ...]) -> list[tuple[str, Path]]:
        if kind == "hub":
            return list(download_hub_files(params.hub_repos, hub_files, params.hub_revision, params.hub_cache_dir))
        return [(str(p), p) for p in list_prompt_files(Path(path))]

    train = files(params.source, params.path, params.hub_train_files)
    if params.eval_source == "split":
        return [("split", name, p) for name, p in train]
    evals = files(params.eval_source, params.eval_path, params.hub_eval_files)
    return [("eval", name, p) for name, p in evals] + [("train", name, p) for name, p in train]


def _ingest_file(role: Role, name: str, path: Path, params: DataParams, seen: dict[bytes, str],
                 writer: _SplitWriter, stats: IngestStats) -> SourceStats:
    src = SourceStats(name, role)
    styles = stats.styles
    for record in read_records(path):
        src.records += 1
        text = None if record.prompt is None else normalize(record.prompt)
        if not text:
            src.empty += 1
        digest = prompt_digest(text or "", params.split_salt)
        split = split_of(digest, params.eval_fraction) if role == "split" else role
        if text is not None:  # nulls are never duplicates of anything; validation rejects them
            first = seen.get(digest)
            if first is not None:
                if first == split:
                    src.duplicates += 1
                else:
                    src.cross_split_duplicates += 1
                continue
            seen[digest] = split
        writer.add(split, text, name, record.style, record.index)
        src.kept[split] += 1
        style = record.style or "unknown"
        styles[split][style] = styles[split].get(style, 0) + 1
    return src


def ingest_prompts(params: DataParams) -> IngestStats:
    """Read every source `params` names and write `train.parquet`, `eval.parquet` and `stats.json`.

    Args:
        params: the `data` section.
    Returns:
        the counts also written to `stats.json`.
    Raises:
        UserError: a missing or malformed source, or a hub file that cannot be fetched.
    """
    out_dir = Path(params.ingested_dir)
    for name in ("train.parquet", "eval.parquet", "stats.json"):
        (out_dir / name).unlink(missing_ok=True)  # outputs of an earlier run never outlive a failed one
    sources = resolve_sources(params)
    stats = IngestStats(params.eval_source, params.eval_fraction if params.eval_source == "split" else None,
                        params.split_salt)
    seen: dict[bytes, str] = {}
    writer = _SplitWriter(out_dir)
    ok = False
    try:
        for role, name, path in sources:
            stats.sources.append(_ingest_file(role, name, path, params, seen, writer, stats))
        ok = True
    finally:
        writer.close(ok)
    for src in stats.sources:
        for split in SPLITS:
            stats.rows[split] += src.kept[split]
    (out_dir / "stats.json").write_text(stats.to_json())
    return stats
