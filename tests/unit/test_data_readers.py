"""Prompt files in each supported form, and the one-line error each bad input gets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from treegrpo.data import readers
from treegrpo.data.readers import Record, list_prompt_files, read_records
from treegrpo.utils.errors import UserError


def records(path: Path) -> list[Record]:
    return list(read_records(path))


def write_parquet(path: Path, **columns) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


# --- each form ---------------------------------------------------------------------------------------------------

def test_txt_one_prompt_per_line_skips_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"a red fox\r\n\n  \nthe moon over water\nlast line without newline")
    # index is the 0-based line number: lines 1 and 2 are blank
    assert records(path) == [Record(0, "a red fox", None), Record(3, "the moon over water", None),
                             Record(4, "last line without newline", None)]


def test_txt_utf8_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfcaf\xc3\xa9 at night\n")
    assert records(path) == [Record(0, "café at night", None)]


def test_benchmark_json_list_of_strings_takes_style_from_file_name(tmp_path):
    path = tmp_path / "concept-art.json"
    path.write_text(json.dumps(["a castle in the clouds", "a desert city"]))
    assert records(path) == [Record(0, "a castle in the clouds", "concept-art"),
                             Record(1, "a desert city", "concept-art")]


def test_annotation_json_records_with_prompt_field(tmp_path):
    # HPDv2's train.json shape: records with more fields than the prompt
    rows = [{"prompt": "a cat", "human_preference": [1, 0], "image_path": ["a.jpg", "b.jpg"]},
            {"prompt": "a dog", "category": "photo", "rank": [2, 1]},
            {"prompt": None, "image_path": []}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows, indent=1))
    assert records(path) == [Record(0, "a cat", None), Record(1, "a dog", "photo"), Record(2, None, None)]


def test_jsonl_strings_and_records(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('"a plain string"\n\n{"prompt": "a record", "style": "anime"}\n')
    assert records(path) == [Record(0, "a plain string", None), Record(2, "a record", "anime")]


def test_parquet_prompt_and_style_columns(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", prompt=["one", None, "three"], style=["photo", None, "anime"])
    assert records(path) == [Record(0, "one", "photo"), Record(1, None, None), Record(2, "three", "anime")]


def test_folder_reads_supported_files_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "photo.json").write_text('["p"]')
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "b.txt").write_text("hidden\n")
    assert list_prompt_files(tmp_path) == [tmp_path / "a.txt", tmp_path / "benchmark" / "photo.json"]


def test_json_stream_survives_every_chunk_boundary(tmp_path, monkeypatch):
    # 5-byte chunks split strings, escapes, numbers and multi-byte characters across reads
    monkeypatch.setattr(readers, "_CHUNK", 5)
    values = ["snow", "caf\u00e9 \\ \"quoted\"", {"prompt": "a 12345 b", "n": 12345, "x": [1.5, True, None]}, "\u732b"]
    path = tmp_path / "anime.json"
    path.write_text(" [\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in values) + "\n] \n")
    assert [r.prompt for r in records(path)] == ["snow", "caf\u00e9 \\ \"quoted\"", "a 12345 b", "\u732b"]


def test_empty_json_list_is_no_prompts(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("[ ]")
    with pytest.raises(UserError, match="contains no prompts"):
        records(path)


# --- bad inputs: one line naming the file and the fix ---------------------------------------------------------------

def _bad(path: Path, pattern: str) -> str:
    with pytest.raises(UserError, match=pattern) as err:
        records(path) if path.is_file() or path.suffix else list_prompt_files(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file or folder; set data.path"):
        list_prompt_files(tmp_path / "nope.txt")


def test_empty_file(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    _bad(tmp_path / "e.txt", r"is empty \(0 bytes\)")


def test_blank_lines_only_file(tmp_path):
    (tmp_path / "b.txt").write_text("\n  \n\t\n")
    _bad(tmp_path / "b.txt", "contains no prompts")


def test_binary_file(tmp_path):
    (tmp_path / "img.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    _bad(tmp_path / "img.txt", r"looks binary \(a NUL byte at offset 8\)")


def test_wrong_encoding_latin1(tmp_path):
    (tmp_path / "l.txt").write_bytes("a caf\u00e9\n".encode("latin-1"))
    # 'a caf' is 5 bytes: the lone 0xe9 sits at offset 5
    _bad(tmp_path / "l.txt", r"is not UTF-8 \(byte 0xe9 at offset 5\); re-encode it as UTF-8")


def test_utf16_file(tmp_path):
    (tmp_path / "u.txt").write_bytes("a cat\n".encode("utf-16"))
    _bad(tmp_path / "u.txt", "is UTF-16")


def test_invalid_json(tmp_path):
    (tmp_path / "bad.json").write_text('["a",\n "b",, "c"]')
    _bad(tmp_path / "bad.json", r"is not valid JSON \(Expecting value, near line 2\)")


def test_truncated_json(tmp_path):
    (tmp_path / "cut.json").write_text('["a", "b"')
    _bad(tmp_path / "cut.json", "is not valid JSON")


def test_json_top_level_object(tmp_path):
    (tmp_path / "obj.json").write_text('{"anime": ["a"]}')
    _bad(tmp_path / "obj.json", "top-level JSON value is an object; expected a list")


def test_json_list_of_numbers(tmp_path):
    (tmp_path / "n.json").write_text('["ok", 3]')
    _bad(tmp_path / "n.json", "item 1 is a int; expected a list of prompt strings")


def test_json_records_without_prompt(tmp_path):
    (tmp_path / "r.json").write_text('[{"caption": "a cat"}]')
    _bad(tmp_path / "r.json", "item 0 is an object without a 'prompt' field")


def test_json_prompt_of_wrong_type(tmp_path):
    (tmp_path / "t.json").write_text('[{"prompt": ["a", "b"]}]')
    _bad(tmp_path / "t.json", "item 0 has a 'prompt' of type list")


def test_jsonl_invalid_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('"fine"\n{"prompt": "broken"\n')
    _bad(tmp_path / "p.jsonl", r"line 2 is not valid JSON")


def test_parquet_without_prompt_column(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", caption=["a cat"], n=[1])
    assert "(it has caption, n)" in _bad(path, "Parquet without a 'prompt' column")


def test_parquet_prompt_column_not_strings(tmp_path):
    _bad(write_parquet(tmp_path / "p.parquet", prompt=[1, 2]), "column 'prompt' holds int64")


def test_not_parquet_despite_extension(tmp_path):
    (tmp_path / "x.parquet").write_text("prompt\na cat\n")
    _bad(tmp_path / "x.parquet", "is not a Parquet file")


def test_unsupported_extension(tmp_path):
    (tmp_path / "p.csv").write_text("prompt\na cat\n")
    _bad(tmp_path / "p.csv", "unsupported file type '.csv'")


def test_folder_without_prompt_files(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(UserError, match="folder holds no .txt, .json, .jsonl, .parquet files"):
        list_prompt_files(tmp_path)
