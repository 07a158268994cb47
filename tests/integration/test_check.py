"""`treegrpo check` (the DVC stage before every stage that owns outputs) and the order of `treegrpo train`'s start:
a bad value fails with its key and leaves no output; a good one writes the same bytes whatever the params; a
training start that cannot load its model opens no MLflow run and leaves mlflow_run.json as it was."""

import argparse
import json

import pytest
import yaml

from tests.conftest import REPO, make_params
from treegrpo.cli import main

pytestmark = pytest.mark.integration


def params_file(tmp_path, name: str = "params.yaml", **sections) -> str:
    """params.yaml as shipped with `sections` merged in (`{"sampler": {"branching": 0}}`); its path."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["path"] = str(REPO / raw["data"]["path"])
    for section, values in sections.items():
        raw[section].update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def check(tmp_path, params: str, capsys) -> tuple[int, str]:
    code = main(["check", "--params", params, "--out", str(tmp_path / "passed.json")])
    return code, capsys.readouterr().err


def test_good_params_pass_and_the_output_does_not_depend_on_them(tmp_path, capsys, tiny_pipeline_dir):
    out = tmp_path / "passed.json"
    assert check(tmp_path, params_file(tmp_path), capsys)[0] == 0  # model.pretrained: tiny_model.path, not built
    first = out.read_bytes()
    other = params_file(tmp_path, "other.yaml", model={"pretrained": str(tiny_pipeline_dir)}, eval={"seed": 7})
    assert check(tmp_path, other, capsys)[0] == 0
    assert out.read_bytes() == first  # downstream stages do not re-run because the check ran again


@pytest.mark.parametrize(("sections", "key"), [
    ({"sampler": {"branching": 0}}, "sampler.branching"),
    ({"model": {"pretrained": "models/no-such-model"}}, "model.pretrained"),  # hub-shaped, not cached, offline
    ({"model": {"pretrained": "./models/no-such-model"}}, "model.pretrained"),  # a path: no such folder
    ({"data": {"path": "data/no-such-prompts.jsonl"}}, "data.path"),
    ({"reward": {"stand_in_dir": None, "aesthetic": {"clip_model": "ViT-L-14-quickgelu",
                                                      "clip_checkpoint": "models/no-such-clip.safetensors",
                                                      "head": "models/no-such-head.pth"}},
      "eval": {"rewards": ["aesthetic"]}}, "reward.aesthetic.clip_checkpoint"),
])
def test_a_bad_value_fails_with_its_key_and_removes_the_output(tmp_path, capsys, monkeypatch, sections, key):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "passed.json"
    out.write_text("from an earlier check")
    code, err = check(tmp_path, params_file(tmp_path, **sections), capsys)
    assert code == 2 and key in err, err
    assert not out.exists()  # the stages after it see a missing dependency, not a stale pass


def test_a_training_start_that_cannot_load_its_model_keeps_the_run_a_resume_reopens(tiny_pipeline_dir, tmp_path,
                                                                                    monkeypatch):
    from treegrpo.cli.train import run as train
    from treegrpo.training import tracking

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    out = tmp_path / "out"
    (tmp_path / "prompts.txt").write_text("a red car\na blue boat\n")
    small = dict(model__device="cpu", tracking__uri=store, reward__weights={"jpeg_compressibility": 1.0},
                 train__prompts_per_iteration=1, train__iterations=1, sampler__branching=2, sampler__depth=1)

    def start(pretrained) -> int:
        _, raw = make_params(pretrained, out, **small)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        return train(argparse.Namespace(params=str(tmp_path / "params.yaml"), prompts=str(tmp_path / "prompts.txt")))

    assert start(tiny_pipeline_dir) == 0
    record = (out / tracking.RUN_FILE).read_bytes()
    lora = (out / "lora" / "pytorch_lora_weights.safetensors").read_bytes()
    client = tracking.get_client(make_params(tiny_pipeline_dir, out, **small)[0].tracking)
    runs = client.search_runs([client.get_experiment_by_name("treegrpo").experiment_id])

    from treegrpo.utils.errors import UserError

    with pytest.raises(UserError, match="model.pretrained"):
        start(tmp_path / "no-such-model")
    assert (out / tracking.RUN_FILE).read_bytes() == record
    assert json.loads(record)["run_id"] == runs[0].info.run_id
    assert (out / "lora" / "pytorch_lora_weights.safetensors").read_bytes() == lora
    again = client.search_runs([client.get_experiment_by_name("treegrpo").experiment_id])
    assert [r.info.run_id for r in again] == [r.info.run_id for r in runs]  # no FAILED run of a start that failed
