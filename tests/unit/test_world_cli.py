"""`treegrpo world`: the prompt files it writes enter the pipeline through `treegrpo ingest` and `validate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from treegrpo.cli import COMMANDS, main
from treegrpo.world.split import world_prompts

REPO = Path(__file__).resolve().parents[2]


def params_file(tmp_path: Path, **data) -> Path:
    """params.yaml as shipped, its data section pointed at the world's files under tmp_path, then `data` applied."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    world = {"source": "local", "path": str(tmp_path / "world" / "train.jsonl"), "eval_source": "local",
             "eval_path": str(tmp_path / "world" / "heldout.jsonl"), "ingested_dir": str(tmp_path / "ingested"),
             "validated_dir": str(tmp_path / "validated")}
    raw["data"].update({**world, **data})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_world_runs_right_after_build_model():
    assert COMMANDS.index("world") == COMMANDS.index("build_model") + 1


def test_world_writes_both_splits_as_jsonl_records(tmp_path, capsys):
    assert main(["world", "--params", str(params_file(tmp_path))]) == 0
    assert "201 train" in capsys.readouterr().out
    for split, name in (("train", "train.jsonl"), ("heldout", "heldout.jsonl")):
        records = [json.loads(line) for line in (tmp_path / "world" / name).read_text().splitlines()]
        assert [r["prompt"] for r in records] == world_prompts(split)
        assert {"prompt", "category"} == set(records[0])
    # a second run replaces its own files
    assert main(["world", "--params", str(params_file(tmp_path))]) == 0


def test_ingest_reads_the_world_with_categories_as_styles(tmp_path, capsys):
    import pandas as pd

    params = str(params_file(tmp_path))
    assert main(["world", "--params", params]) == 0
    assert main(["ingest", "--params", params]) == 0
    assert "201 train, 93 eval; dropped 0 duplicates and 0 training copies" in capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "ingested" / "eval.parquet")
    assert sorted(table["prompt"]) == world_prompts("heldout")
    assert set(table["style"]) == {"single_object", "colour", "two_objects", "counting", "position",
                                   "colour_attribution"}


@pytest.mark.slow
def test_validate_accepts_the_world(tmp_path, capsys):
    params = str(params_file(tmp_path))
    for command in ("world", "ingest", "validate"):
        assert main([command, "--params", params]) == 0
    assert "prompts passed: 201 train, 93 eval, 0 quarantined" in capsys.readouterr().out


def test_refuses_to_overwrite_a_file_that_is_not_the_worlds(tmp_path, capsys):
    sample = tmp_path / "prompts.jsonl"
    shutil.copy(REPO / "data" / "sample" / "prompts.jsonl", sample)
    before = sample.read_bytes()
    assert main(["world", "--params", str(params_file(tmp_path, path=str(sample)))]) == 2
    assert "already holds prompts that are not the world's; refusing to overwrite it" in capsys.readouterr().err
    assert sample.read_bytes() == before and not (tmp_path / "world").exists()


@pytest.mark.parametrize(("data", "message"), [
    ({"eval_source": "split", "eval_path": None}, "data.eval_source='split': the world's prompts are local files"),
    ({"path": "world.txt"}, "data.path='world.txt': the world writes JSONL"),
])
def test_a_data_section_the_world_cannot_write_is_one_line_exit_2(tmp_path, capsys, data, message):
    assert main(["world", "--params", str(params_file(tmp_path, **data))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
