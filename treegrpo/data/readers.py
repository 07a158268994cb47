"""Prompt files in every form HPDv2 and the GRPO codebases ship, read as a stream of records.

Forms, chosen by extension:
- `.txt`: one prompt per line (the `prompts.txt` of DanceGRPO, MixGRPO and TreeGRPO); blank lines are skipped.
- `.json`: a list of strings (HPDv2's `benchmark/{style}.json`) or of records with a `prompt` field (HPDv2's
  `train.json`/`test.json` annotations). Parsed element by element, so a large file is never held in memory.
- `.jsonl`: one JSON string or record per line.
- `.parquet`: a `prompt` string column, read in record batches.
A folder means every such file under it (hidden ones skipped), in sorted order.

The style comes from a record's `style` or `category` field, else from a file named after an HPDv2 style
(`anime.json`). Every problem with a file's form raises `UserError` naming the file, what is wrong and the fix.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from treegrpo.utils.errors import UserError

HPDV2_STYLES = ("anime", "concept-art", "paintings", "photo")
SUFFIXES = (".txt", ".json", ".jsonl", ".parquet")
_CHUNK = 1 << 20  # bytes read at a time
_MAX_ELEMENT = 16 << 20  # characters one JSON list element may span; longer counts as malformed (bounds memory)
_FORMS = "a .txt (one prompt per line), .json, .jsonl or .parquet file"


class Record(NamedTuple):
    """One prompt as read. `index` is its 0-based position in the file: the line (text, JSONL), the list element
    (JSON) or the row (Parquet). `prompt` is None where a record holds a JSON null."""

    index: int
    prompt: str | None
    style: str | None


def list_prompt_files(path: Path) -> list[Path]:
    """The prompt files `path` names: itself, or every supported file under a folder, sorted."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise UserError(f"{path}: folder holds no {', '.join(SUFFIXES)} files; point data.path at a prompt file")
        return files
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; set data.path (or data.eval_path) to {_FORMS}")
    return [path]


def read_records(path: Path) -> Iterator[Record]:
    """Yield the records of one prompt file, whatever its form.

    Raises:
        UserError: a missing, empty, binary, non-UTF-8 or malformed file, or one with no prompts.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{path}: unsupported file type '{suffix or '(none)'}'; give {_FORMS}")
    if not path.is_file():
        raise UserError(f"{path}: no such file; set data.path (or data.eval_path) to {_FORMS}")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: is empty (0 bytes); give it one prompt per line, or a JSON list of prompts")
    style = path.stem if path.stem in HPDV2_STYLES else None
    reader = {".txt": _read_txt, ".json": _read_json, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[suffix]
    count = 0
    for record in reader(path, style):
        count += 1
        yield record
    if count == 0:
        raise UserError(f"{path}: contains no prompts; give it one prompt per line, or a JSON list of prompts")


# --- text ------------------------------------------------------------------------------------------------------

def _iter_text(path: Path) -> Iterator[str]:
    """Decode `path` as UTF-8 in chunks (a UTF-8 byte-order mark is dropped); refuse binary and other encodings."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            if offset == 0:
                if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise UserError(f"{path}: is UTF-16 (it starts with a UTF-16 byte-order mark); re-encode it "
                                    "as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8`")
                if chunk.startswith(codecs.BOM_UTF8):
                    chunk, offset = chunk[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise UserError(f"{path}: looks binary (a NUL byte at offset {offset + nul}); give {_FORMS}")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                raise UserError(f"{path}: is not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {at}); "
                                "re-encode it as UTF-8, e.g. `iconv -f LATIN1 -t UTF-8`") from None
            offset += len(chunk)
            yield text
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UserError(f"{path}: is not UTF-8 (it ends inside a multi-byte character); "
                        "re-encode it as UTF-8") from None


def _iter_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file, without their line endings."""
    tail = ""
    for text in _iter_text(path):
        lines = (tail + text).split("\n")
        tail = lines.pop()
        for line in lines:
            yield line.removesuffix("\r")
    if tail:
        yield tail.removesuffix("\r")


def _read_txt(path: Path, style: str | None) -> Iterator[Record]:
    for i, line in enumerate(_iter_lines(path)):
        if line.strip():
            yield Record(i, line, style)


# --- JSON and JSONL ---------------------------------------------------------------------------------------------

def _record(value: Any, path: Path, where: str, index: int, style: str | None) -> Record:
    """A JSON value as a record: a string, or an object with a `prompt` string (and maybe `style`/`category`)."""
    if isinstance(value, str):
        return Record(index, value, style)
    if isinstance(value, dict) and "prompt" in value:
        prompt = value["prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise UserError(f"{path}: {where} has a 'prompt' of type {type(prompt).__name__}; prompts must be strings")
        named = value.get("style", value.get("category"))
        return Record(index, prompt, named if isinstance(named, str) else style)
    kind = "an object without a 'prompt' field" if isinstance(value, dict) else f"a {type(value).__name__}"
    raise UserError(f"{path}: {where} is {kind}; expected a list of prompt strings (HPDv2's benchmark form) "
                    "or of records with a 'prompt' field (HPDv2's annotation form)")


def _read_jsonl(path: Path, style: str | None) -> Iterator[Record]:
    for i, line in enumerate(_iter_lines(path)):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {i + 1} is not valid JSON ({err.msg}, column {err.colno}); "
                            "JSONL needs one JSON string or object per line") from None
        yield _record(value, path, f"line {i + 1}", i, style)


class _JsonArrayStream:
    """The elements of a top-level JSON list, decoded one at a time from a stream of text chunks.

    The buffer holds the unread tail of the text; `json.JSONDecoder.raw_decode` takes one element from it, and the
    buffer is refilled when an element may run past its end. An element that still fails to parse once it has
    `_MAX_ELEMENT` characters (or the file) to itself is malformed, so a bad file never fills memory.
    """

    def __init__(self, path: Path):
        self.path = path
        self.chunks = _iter_text(path)
        self.buf, self.pos, self.eof, self.lines_before = "", 0, False, 0
        self.decoder = json.JSONDecoder()

    def _refill(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.eof = True
            return False
        self.lines_before += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos:] + chunk, 0
        return True

    def _skip_space(self) -> str:
        """Advance past whitespace; return the next character, or '' at the end of the file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._refill():
                return ""

    def _bad(self, what: str, at: int | None = None) -> UserError:
        line = self.lines_before + self.buf.count("\n", 0, self.pos if at is None else at) + 1
        return UserError(f"{self.path}: is not valid JSON ({what}, near line {line}); fix the file or give it "
                         "one prompt per line as .txt")

    def _value(self) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                if not self.eof and len(self.buf) - self.pos < _MAX_ELEMENT and self._refill():
                    continue
                raise self._bad(err.msg, err.pos) from None
            if end == len(self.buf) and not self.eof and self._refill():
                continue  # a number or literal may go on in the next chunk
            self.pos = end
            return value

    def __iter__(self) -> Iterator[Any]:
        first = self._skip_space()
        if first != "[":
            kinds = {"{": "an object", '"': "a string", "": "missing"}
            kind = kinds.get(first, f"not a list (it starts with {first!r})")
            raise UserError(f"{self.path}: the top-level JSON value is {kind}; expected a list of prompt strings or "
                            "of records with a 'prompt' field (HPDv2's forms)")
        self.pos += 1
        if self._skip_space() == "]":
            self.pos += 1
        else:
            while True:
                yield self._value()
                sep = self._skip_space()
                self.pos += 1
                if sep == "]":
                    break
                if sep != ",":
                    raise self._bad("expected ',' or ']' after a list element", self.pos - 1)
                if self._skip_space() in ("]", ""):
                    raise self._bad("a trailing ',' or an unterminated list", self.pos)
        if self._skip_space():
            raise self._bad("extra data after the top-level list", self.pos)


def _read_json(path: Path, style: str | None) -> Iterator[Record]:
    for i, value in enumerate(_JsonArrayStream(path)):
        yield _record(value, path, f"item {i}", i, style)


# --- Parquet ----------------------------------------------------------------------------------------------------

def _read_parquet(path: Path, style: str | None) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open("rb") as f:
        if f.read(4) != b"PAR1":
            raise UserError(f"{path}: is not a Parquet file (it does not start with PAR1); give {_FORMS}")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: is not a readable Parquet file ({str(err).splitlines()[0]})") from None
    schema = pf.schema_arrow
    if "prompt" not in schema.names:
        raise UserError(f"{path}: Parquet without a 'prompt' column (it has {', '.join(schema.names) or 'none'}); "
                        "rename the text column to 'prompt'")
    prompt_type = schema.field("prompt").type
    if not (pa.types.is_string(prompt_type) or pa.types.is_large_string(prompt_type)):
        raise UserError(f"{path}: column 'prompt' holds {prompt_type}; it must hold strings")
    style_col = next((c for c in ("style", "category") if c in schema.names), None)
    columns = ["prompt"] + ([style_col] if style_col else [])
    index = 0
    for batch in pf.iter_batches(batch_size=65536, columns=columns):
        prompts = batch.column(0).to_pylist()
        styles = batch.column(1).cast(pa.string()).to_pylist() if style_col else [style] * len(prompts)
        for prompt, named in zip(prompts, styles, strict=True):
            yield Record(index, prompt, named if named is not None else style)
            index += 1
