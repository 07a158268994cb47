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


def params_file(tmp_path: Path, world_dir: Path | None = None) -> Path:
    """params.yaml as shipped (its data section reads the world's files), the world and data pointed under tmp_path."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    world_dir = world_dir or tmp_path / "world"
    raw["world"]["output_dir"] = str(world_dir)
    raw["data"].update({"path": str(world_dir / "train.jsonl"), "eval_path": str(world_dir / "heldout.jsonl"),
                        "ingested_dir": str(tmp_path / "ingested"), "validated_dir": str(tmp_path / "validated")})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_world_runs_right_after_build_model():
    assert COMMANDS.index("world") == COMMANDS.index("build_model") + 1


def test_world_writes_every_split_as_jsonl_records(tmp_path, capsys):
    assert main(["world", "--params", str(params_file(tmp_path))]) == 0
    assert "201 train" in capsys.readouterr().out
    for split, name in (("train", "train.jsonl"), ("rl", "rl.jsonl"), ("unseen", "unseen.jsonl"),
                        ("heldout", "heldout.jsonl")):
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
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    sample = theirs / "train.jsonl"
    shutil.copy(REPO / "data" / "sample" / "prompts.jsonl", sample)
    before = sample.read_bytes()
    assert main(["world", "--params", str(params_file(tmp_path, world_dir=theirs))]) == 2
    err = capsys.readouterr().err
    assert "already holds prompts that are not the world's; refusing to overwrite it" in err and err.count("\n") == 1
    assert sample.read_bytes() == before and not (theirs / "heldout.jsonl").exists()


def test_the_shipped_data_section_reads_what_the_world_writes():
    from treegrpo.cli.world import targets
    from treegrpo.config import load_params

    params = load_params(REPO / "params.yaml")
    files = targets(params.world)
    assert (params.data.source, params.data.eval_source) == ("local", "local")
    assert Path(params.data.path) == files["rl"] and Path(params.data.eval_path) == files["unseen"]
    assert {name: Path(path) for name, path in params.eval.extra_sets.items()} == {"heldout": files["heldout"],
                                                                                 "rl": files["rl"]}
