"""`treegrpo validate`: run the GX suite over the ingested prompt sets and write the sets training reads.

Reads `{ingested_dir}/{train,eval}.parquet`, stacks them into one table with a `split` column and two derived
columns the suite expects on (`clip_tokens`, `splits_per_prompt`), and runs `PromptSuite`. Writes to
`validated_dir`:
- `report.json` and `report.txt`: every expectation's outcome; for each failure its counts and first offending rows
  (file, row, provenance, value truncated);
- `data_docs/index.html`: GX's Data Docs (they carry each run's time, so `.dvcignore` keeps them out of DVC's hash
  of the folder: the same prompts give the same stage output);
- on success: `train.parquet` and `eval.parquet` (the ingested columns, clean rows only);
- with `on_failure: quarantine`: `quarantine.parquet` (the rows that failed a row-level expectation, with the
  failed checks named). Training then proceeds on the clean rows, provided they pass the whole suite on a second run
  (split sizes included) and no table-level expectation failed.
Any other failure raises `UserError` after writing the report, and leaves no `train.parquet`/`eval.parquet` behind,
so nothing downstream runs on unvalidated prompts.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from treegrpo.config.data import DataParams
from treegrpo.data.suite import Outcome, PromptSuite
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")
DERIVED = ("split", "row", "clip_tokens", "splits_per_prompt")  # columns build_table adds for the suite
FIRST_ROWS = 5      # offending rows shown per failed expectation
VALUE_CHARS = 80    # characters of a value shown


@dataclass(frozen=True)
class ValidationResult:
    """What `validate_prompts` decided: 'passed' or 'quarantined' (a failure raises)."""

    status: str
    rows: dict[str, int]
    quarantined: int
    report: Path
    data_docs: Path


def read_prompt_table(path: Path):
    """A prompt Parquet as a pandas DataFrame, `prompt` as object dtype (None for nulls) so GX checks each value.

    Raises:
        UserError: a missing file, a file that is not Parquet, or one without a `prompt` column.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UserError(f"{path}: no such file; run `treegrpo ingest` first (or `dvc repro validate`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: is not a readable Parquet file ({str(err).splitlines()[0]})") from None
    if "prompt" not in table.column_names:
        has = ", ".join(table.column_names) or "none"
        raise UserError(f"{path}: Parquet without a 'prompt' column (it has {has}); "
                        "rename the text column to 'prompt'")
    frame = table.drop_columns(["prompt"]).to_pandas()
    frame.insert(0, "prompt", pd.Series(table.column("prompt").to_pylist(), dtype=object))
    return frame


def _input_schema(paths: list[Path]):
    """The column types of the input files (unified; inferred afresh where they disagree)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pa.unify_schemas([pq.read_schema(p) for p in paths])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.schema([])


def clip_token_counts(prompts) -> list[float]:
    """CLIP tokens per prompt, start and end tokens included (what CLIP's 77-token context holds); NaN for non-text.

    Uses open_clip's `SimpleTokenizer` on its bundled BPE merges (no network). Its `encode` cleans the text, splits it
    with its regex and runs BPE on each piece independently, so a prompt's count is the sum of its pieces' counts:
    caching those per piece gives `len(encode(text))` several times faster on 100k prompts.
    """
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    pieces: dict[str, int] = {}

    def count(text: str) -> int:
        total = 2  # start and end
        for piece in tokenizer.pat.findall(tokenizer.clean_fn(text)):
            n = pieces.get(piece)
            if n is None:
                n = pieces[piece] = len(tokenizer.encode(piece))
            total += n
        return total

    return [count(p) if isinstance(p, str) else math.nan for p in prompts]


def build_table(frames: dict[str, object]):
    """Stack the split frames into the table the suite expects: `split`, `row` and the derived columns."""
    import pandas as pd

    parts = []
    for split, frame in frames.items():
        part = frame.copy()
        part["split"] = split
        part["row"] = range(len(part))
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table["prompt"] = table["prompt"].astype(object)
    table["clip_tokens"] = clip_token_counts(table["prompt"])
    table["splits_per_prompt"] = splits_per_prompt(table)
    return table


def splits_per_prompt(table):
    """How many splits hold each row's prompt (1 for non-strings, which other expectations reject)."""
    keys = table["prompt"].map(lambda p: p if isinstance(p, str) else None)
    return table.groupby(keys, dropna=True)["split"].transform("nunique").fillna(1).astype("int64")


def _plain(value: object) -> object:
    """A JSON-ready scalar: numpy scalars unwrapped, whole floats as ints, long strings truncated."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) > VALUE_CHARS:
        return value[: VALUE_CHARS - 1] + "…"
    return value


def _failure_entry(outcome: Outcome, table) -> dict:
    """The report entry of one failed expectation: counts and the first offending rows."""
    entry = {k: v for k, v in asdict(outcome).items() if k != "rows"}
    entry["observed"] = _plain(outcome.observed) if not isinstance(outcome.observed, list) else outcome.observed
    first = []
    for i in outcome.rows[:FIRST_ROWS]:
        row = table.loc[i]
        item = {"file": f"{row['split']}.parquet", "row": int(row["row"]), "value": _plain(row["prompt"])}
        for col in ("source", "source_index"):
            if col in table.columns:
                item[col] = _plain(row[col])
        if outcome.column not in (None, "prompt") and outcome.column in table.columns:
            item[outcome.column] = _plain(row[outcome.column])
        first.append(item)
    entry["first_rows"] = first
    return entry


def summarize(outcomes: list[Outcome], table, where: str) -> tuple[list[dict], str]:
    """Report entries for the failed expectations, and the text summary naming each with counts and first rows."""
    failed = [o for o in outcomes if not o.success]
    entries = [_failure_entry(o, table) for o in failed]
    lines = [f"{len(outcomes) - len(failed)} of {len(outcomes)} expectations passed on {len(table)} rows of {where}"]
    for o, e in zip(failed, entries, strict=True):
        on = f" on {o.column}" if o.column else ""
        if o.error:
            lines.append(f"FAILED {o.check} ({o.expectation}{on}): could not run: {o.error}")
        elif o.row_level:
            lines.append(f"FAILED {o.check} ({o.expectation}{on}): {o.unexpected_count} of {o.element_count} rows")
            lines += [f"    {r['file']} row {r['row']}: {r['value']!r}"
                      + (f" ({o.column}={r[o.column]})" if o.column in r else "") for r in e["first_rows"]]
        else:
            lines.append(f"FAILED {o.check} ({o.expectation}{on}): observed {e['observed']}")
    return entries, "\n".join(lines)


def _write_report(out_dir: Path, status: str, runs: dict[str, tuple[list[Outcome], object]], extra: dict) -> Path:
    report, texts = {"status": status, **extra, "runs": {}}, []
    where = f"{extra['input']}/{{train,eval}}.parquet"
    for name, (outcomes, table) in runs.items():
        entries, text = summarize(outcomes, table, where)
        report["runs"][name] = {"rows": len(table), "expectations": len(outcomes), "failed": entries,
                                "passed": [o.check for o in outcomes if o.success]}
        texts.append(f"[{name}] {text}")
    (out_dir / "report.txt").write_text("\n".join(texts) + "\n")
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def _to_arrow(frame, schema):
    """`frame` as an Arrow table with the input's column types (pandas would widen strings and drop all-null types)."""
    import pyarrow as pa

    fields = [schema.field(c) if c in schema.names else None for c in frame.columns]
    arrays = [pa.array(frame[c].tolist(), type=f.type if f is not None else None, from_pandas=True)
              for c, f in zip(frame.columns, fields, strict=True)]
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def _write_split(table, split: str, path: Path, columns: list[str], schema) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_to_arrow(table.loc[table["split"] == split, columns], schema), path)


def _quarantine(table, outcomes: list[Outcome], path: Path, columns: list[str], schema):
    """Write the rows that failed a row-level expectation (and why) to `path`; return the clean rows."""
    import pyarrow.parquet as pq

    reasons: dict[int, list[str]] = {}
    for o in outcomes:
        for i in o.rows:
            reasons.setdefault(i, []).append(o.check)
    bad = table.loc[sorted(reasons), columns + ["split", "row"]].copy()
    bad["failed"] = ["; ".join(reasons[i]) for i in bad.index]
    pq.write_table(_to_arrow(bad, schema), path)
    return table.drop(index=list(reasons)).reset_index(drop=True)


def _fail(outcomes: list[Outcome], report: Path, docs: Path, hint: str) -> UserError:
    failed = [o.check for o in outcomes if not o.success]
    return UserError(f"prompt validation failed: {len(failed)} of {len(outcomes)} expectations ({'; '.join(failed)}); "
                     f"details in {report.with_suffix('.txt')}, Data Docs in {docs}; {hint}")


def validate_prompts(params: DataParams) -> ValidationResult:
    """Validate the ingested prompt sets and write the validated ones (see the module docstring).

    Args:
        params: the `data` section (`ingested_dir`, `validated_dir`, the suite's bounds, `on_failure`).
    Returns:
        the outcome, when training may proceed.
    Raises:
        UserError: unreadable inputs, or a failed suite that the policy does not (or cannot) quarantine.
    """
    in_dir, out_dir = Path(params.ingested_dir), Path(params.validated_dir)
    frames = {s: read_prompt_table(in_dir / f"{s}.parquet") for s in SPLITS}
    schema = _input_schema([in_dir / f"{s}.parquet" for s in SPLITS])
    columns = [c for c in dict.fromkeys(c for f in frames.values() for c in f.columns) if c not in DERIVED]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train.parquet", "eval.parquet", "quarantine.parquet"):
        (out_dir / name).unlink(missing_ok=True)  # outputs of an earlier run never outlive a failed one
    shutil.rmtree(out_dir / "data_docs", ignore_errors=True)
    table = build_table(frames)
    suite = PromptSuite(params, out_dir / "data_docs")
    outcomes = suite.run(table, "ingested")
    runs = {"ingested": (outcomes, table)}
    extra = {"input": str(in_dir), "policy": params.on_failure, "data_docs": str(suite.index_html)}
    failed = [o for o in outcomes if not o.success]
    status = "passed"
    if failed:
        rows_only = all(o.row_level and o.error is None for o in failed)
        if params.on_failure == "fail" or not rows_only:
            report = _write_report(out_dir, "failed", runs, extra)
            log.error("%s", (out_dir / "report.txt").read_text().rstrip())
            hint = ("set data.on_failure: quarantine to train on the clean rows" if rows_only else
                    "a table-level expectation failed; fix the input or the data bounds in params.yaml")
            raise _fail(outcomes, report, suite.index_html, hint)
        clean = _quarantine(table, failed, out_dir / "quarantine.parquet", columns, schema)
        clean["splits_per_prompt"] = splits_per_prompt(clean)
        second = suite.run(clean, "clean")
        runs["clean"] = (second, clean)
        extra["quarantined"] = len(table) - len(clean)
        if not all(o.success for o in second):
            report = _write_report(out_dir, "failed", runs, extra)
            log.error("%s", (out_dir / "report.txt").read_text().rstrip())
            raise _fail(second, report, suite.index_html, "the clean rows alone fail; fix the input or the bounds")
        table, status = clean, "quarantined"
    for split in SPLITS:
        _write_split(table, split, out_dir / f"{split}.parquet", columns, schema)
    rows = {s: int((table["split"] == s).sum()) for s in SPLITS}
    report = _write_report(out_dir, status, runs, {**extra, "rows": rows})
    if status == "quarantined":
        log.warning("%s", (out_dir / "report.txt").read_text().rstrip())
    return ValidationResult(status, rows, extra.get("quarantined", 0), report, suite.index_html)
