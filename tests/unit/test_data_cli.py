"""`treegrpo ingest` and `treegrpo validate` on the command line: help, success, and one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import SAMPLE_DATA
from treegrpo.cli import main, make_parser

REPO = Path(__file__).resolve().parents[2]




def params_file(tmp_path: Path, **data) -> Path:
    """The repository's params.yaml reading the bundled sample, the data section's outputs under tmp_path and `data`
    applied."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(SAMPLE_DATA)
    raw["data"].update(ingested_dir=str(tmp_path / "ingested"), validated_dir=str(tmp_path / "validated"), **data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("command", ["ingest", "validate"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "--params" in capsys.readouterr().out


def test_ingest_bundled_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # data.path is relative to the repository root, as under dvc repro
    assert main(["ingest", "--params", str(params_file(tmp_path))]) == 0
    assert capsys.readouterr().out.startswith("ingested 48 records from 1 file(s): 37 train, 11 eval; dropped 0")
    assert (tmp_path / "ingested" / "train.parquet").is_file()


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file or folder"),
    (b"", "is empty (0 bytes)"),
    (b"\x00\x01\x02", "looks binary"),
    (b"caf\xe9\n", "is not UTF-8 (byte 0xe9 at offset 3)"),
])
def test_ingest_bad_input_is_one_line_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    assert main(["ingest", "--params", str(params_file(tmp_path, path=str(path)))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"treegrpo ingest: error: {path}: ") and message in err
    assert "Traceback" not in err


def test_validate_before_ingest_is_one_line_exit_2(tmp_path, capsys):
    assert main(["validate", "--params", str(params_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.parquet: no such file; run `treegrpo ingest` first" in err


def test_bad_data_param_is_one_line_exit_2(tmp_path, capsys):
    assert main(["ingest", "--params", str(params_file(tmp_path, eval_fraction=1.5))]) == 2
    assert "data.eval_fraction=1.5: must be in (0, 1)" in capsys.readouterr().err
