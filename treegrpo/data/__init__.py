"""Prompt ingestion and validation.

- `readers.py`: prompt files in HPDv2's forms (text, JSON lists and records, JSONL, Parquet), streamed.
- `hub.py`: HPDv2's files from the Hugging Face hub through the local cache.
- `ingest.py`: normalise, deduplicate, split by hash, write Parquet and stats (`treegrpo ingest`).
- `suite.py`, `validate.py`: the Great Expectations suite and the fail/quarantine policy (`treegrpo validate`).

Training and evaluation read the validated sets with `load_prompts`. Nothing here imports pyarrow, pandas or GX
until it is called.
"""

from __future__ import annotations

from pathlib import Path

from treegrpo.utils.errors import UserError


def load_prompts(path: str | Path) -> list[str]:
    """The prompts of a validated prompt set, in file order.

    Args:
        path: a Parquet file with a `prompt` string column, e.g. `{data.validated_dir}/train.parquet`.
    Returns:
        the prompts.
    Raises:
        UserError: a missing or unreadable file, or one without a `prompt` column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such prompt set; run `treegrpo ingest` and `treegrpo validate` "
                        "(or `dvc repro validate`) first")
    try:
        schema = pq.read_schema(path)
        if "prompt" not in schema.names:
            raise UserError(f"{path}: no 'prompt' column (it has {', '.join(schema.names)}); "
                            "give a prompt set written by `treegrpo validate`")
        prompts = pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: is not a readable Parquet file ({str(err).splitlines()[0]})") from None
    if any(not isinstance(p, str) for p in prompts):
        raise UserError(f"{path}: holds null or non-text prompts; validate it with `treegrpo validate`")
    return prompts
