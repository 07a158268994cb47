"""The flow's stages and their outputs come from dvc.yaml (one list of stages), resolved against params.yaml."""

from pathlib import Path

from flows.pipeline import dvc_stages, stage_output
from tests.conftest import REPO
from treegrpo.config import load_params


def test_the_flow_runs_dvc_yamls_stages_in_its_order():
    assert list(dvc_stages()) == ["check", "build_model", "world", "pretrain", "ingest", "validate", "train",
                                  "evaluate", "register"]


def test_each_stage_output_is_its_first_dvc_out_resolved():
    params = load_params(REPO / "params.yaml")
    outputs = {stage: stage_output(stage, params) for stage in dvc_stages()}
    assert outputs == {
        "check": "outputs/check/passed.json", "build_model": params.tiny_model.path,
        "world": params.world.output_dir, "pretrain": params.pretrain.output,
        "ingest": params.data.ingested_dir, "validate": params.data.validated_dir,
        "train": str(Path(params.train.output_dir) / "lora"),
        "evaluate": str(Path(params.eval.output_dir) / "table.md"),
        "register": str(Path(params.tracking.output_dir) / "registered.json")}


def test_a_changed_key_changes_the_resolved_output(tmp_path):
    import dataclasses

    params = load_params(REPO / "params.yaml")
    moved = dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, output="elsewhere/model"))
    assert stage_output("pretrain", moved) == "elsewhere/model"
