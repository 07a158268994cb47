"""The model registry on a temporary SQLite store: one version per distinct LoRA, alias candidate, the champion gate
on the primary reward (same eval set), forced promotions with a reason, and the pyfunc that turns prompts into the
images the base pipeline + LoRA makes."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import REPO
from treegrpo.cli import main
from treegrpo.config import load_params
from treegrpo.recipes.registry import eval_key, lora_digest, promote, register_lora
from treegrpo.training import tracking
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration
PROMPTS = ["a red cube on a table", "a green forest at dawn"]
NAME = "treegrpo-lora"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


@pytest.fixture
def params(store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = load_params(REPO / "params.yaml")
    # a model name per test: the store is shared by the module
    name = f"{NAME}-{tmp_path.name}"[:60]
    return dataclasses.replace(
        p, train=dataclasses.replace(p.train, output_dir=str(tmp_path / "train")),
        eval=dataclasses.replace(p.eval, lora=str(tmp_path / "lora"), output_dir=str(tmp_path / "eval")),
        tracking=dataclasses.replace(p.tracking, uri=store, model_name=name, output_dir=str(tmp_path / "reg"),
                                     primary_reward="jpeg_compressibility"))  # what evaluation() scores


def fake_lora(path, seed: int) -> str:
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"transformer.x.lora_A.weight": torch.randn(4, 8, generator=g)},
              str(path / "pytorch_lora_weights.safetensors"))
    return str(path)


def evaluation(jpeg: float, base_jpeg: float = -5.0) -> dict:
    """An evaluation's metrics.json: the trained model scored `jpeg`, the base model `base_jpeg`."""
    stats = {"jpeg_compressibility": {"mean": jpeg, "sem": 0.01}, "hpsv2": {"mean": 0.2, "sem": None}}
    base = {**stats, "jpeg_compressibility": {"mean": base_jpeg, "sem": 0.01}}
    return {"n_prompts": len(PROMPTS), "base": base, "trained": stats}


def register(params, lora_dir, jpeg: float, prompts=PROMPTS, base_jpeg: float = -5.0):
    """Register `lora_dir` as if a training run had produced it and the evaluation scored `jpeg` (the base model:
    `base_jpeg`)."""
    client, run_id = tracking.start_run(params, "test")
    p = dataclasses.replace(params, eval=dataclasses.replace(params.eval, lora=str(lora_dir)))
    return register_lora(client, p, run_id, evaluation(jpeg, base_jpeg), list(prompts))


def test_the_same_weights_make_one_version_and_candidate_follows_the_newest(params, tmp_path):
    first = register(params, fake_lora(tmp_path / "a", seed=1), -3.0)
    assert (first.version, first.created) == ("1", True)
    copy = shutil.copytree(tmp_path / "a", tmp_path / "a-copy")  # same bytes elsewhere: the same version
    again = register(params, copy, -2.9)
    assert (again.version, again.created) == ("1", False)
    second = register(params, fake_lora(tmp_path / "b", seed=2), -3.1)
    assert (second.version, second.created) == ("2", True)

    client = tracking.get_client(params.tracking)
    assert str(client.get_model_version_by_alias(params.tracking.model_name, "candidate").version) == "2"
    v1 = client.get_model_version(params.tracking.model_name, "1")
    assert v1.tags["lora_sha256"] == lora_digest(copy)
    assert v1.tags["eval.jpeg_compressibility"] == repr(-2.9)  # the newest evaluation of these weights
    assert v1.tags["eval_key"] == eval_key(params, PROMPTS)
    last = dataclasses.replace(params, eval=dataclasses.replace(params.eval, lora=str(copy)))
    assert v1.tags["params_hash"] == tracking.params_hash(last)
    assert v1.tags["base_model"] == params.model.pretrained and v1.run_id == v1.tags["run_id"]
    assert len(client.search_model_versions(f"name = '{params.tracking.model_name}'")) == 2


def test_champion_moves_only_to_a_better_version_or_when_forced_with_a_reason(params, tmp_path):
    client = tracking.get_client(params.tracking)
    register(params, fake_lora(tmp_path / "v1", 1), -3.0)
    first = promote(client, params)
    assert first.promoted and first.previous is None and "first champion" in first.message

    register(params, fake_lora(tmp_path / "v2", 2), -3.0)  # a tie is not better
    tie = promote(client, params)
    assert not tie.promoted and "does not beat champion version 1" in tie.message
    with pytest.raises(UserError, match="--reason"):
        promote(client, params, force=True)
    forced = promote(client, params, force=True, reason="rollback drill")
    assert forced.promoted and forced.message.startswith("forced")
    tags = client.get_model_version(params.tracking.model_name, "2").tags
    assert tags["promotion_forced"] == "True" and tags["promotion_reason"] == "rollback drill"
    assert tags["previous_champion"] == "1" and tags["primary_reward"] == "jpeg_compressibility"

    register(params, fake_lora(tmp_path / "v3", 3), -2.95)  # better by 0.05
    strict = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, min_improvement=0.1))
    assert not promote(client, strict).promoted  # not by more than the margin
    better = promote(client, params)
    assert better.promoted and (better.version, better.previous) == ("3", "2")
    assert str(client.get_model_version_by_alias(params.tracking.model_name, "champion").version) == "3"
    assert promote(client, params).message == "version 3 is already the champion"


def test_the_first_champion_must_beat_the_base_model_or_be_forced(params, tmp_path):
    client = tracking.get_client(params.tracking)
    name = params.tracking.model_name
    register(params, fake_lora(tmp_path / "v1", 1), -3.0, base_jpeg=-3.0)  # trained no better than the base
    tie = promote(client, params)
    assert not tie.promoted and tie.previous is None
    assert "does not beat the base model's -3" in tie.message
    assert client.get_model_version(name, "1").tags["eval_base.jpeg_compressibility"] == repr(-3.0)
    forced = promote(client, params, force=True, reason="the base is the bar to clear later")
    assert forced.promoted and forced.message.startswith("forced")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    fresh = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, model_name=name + "-b"))
    register(fresh, fake_lora(tmp_path / "w1", 2), -3.0, base_jpeg=-3.2)
    margin = dataclasses.replace(fresh, tracking=dataclasses.replace(fresh.tracking, min_improvement=0.5))
    assert not promote(client, margin).promoted  # better than the base, but not by the margin
    first = promote(client, fresh)
    assert first.promoted and "beats the base model's -3.2" in first.message


def test_evaluations_on_other_prompts_are_not_compared(params, tmp_path):
    client = tracking.get_client(params.tracking)
    register(params, fake_lora(tmp_path / "v1", 1), -3.0)
    promote(client, params)
    register(params, fake_lora(tmp_path / "v2", 2), -1.0, prompts=["another prompt", "and another"])
    refused = promote(client, params)
    assert not refused.promoted and "different eval sets" in refused.message


def _write_outputs(params, jpeg: float, seed: int) -> None:
    """What train and evaluate leave behind: the LoRA, history.json, metrics.json, table.md, scores.jsonl."""
    from pathlib import Path

    fake_lora(Path(params.eval.lora), seed)
    train, ev = Path(params.train.output_dir), Path(params.eval.output_dir)
    train.mkdir(parents=True, exist_ok=True)
    ev.mkdir(parents=True, exist_ok=True)
    (train / "history.json").write_text(json.dumps([{"iteration": i, "reward_mean": i} for i in range(3)]))
    (ev / "metrics.json").write_text(json.dumps(evaluation(jpeg)))
    (ev / "table.md").write_text("| Model |\n|---|\n")
    (ev / "scores.jsonl").write_text("".join(json.dumps({"model": "trained", "index": i, "prompt": p}) + "\n"
                                             for i, p in enumerate(PROMPTS)))


def test_register_and_promote_commands(params, tmp_path, capsys):
    import yaml

    from treegrpo.config import to_dict

    _write_outputs(params, -3.0, seed=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(to_dict(params)))
    assert main(["register", "--params", str(path)]) == 0
    assert "Downloading artifacts" not in capsys.readouterr().err  # one display: not MLflow's artifact bars
    record = json.loads((tmp_path / "reg" / "registered.json").read_text())
    assert record["version"] == "1" and record["new_version"] and record["alias"] == "candidate"
    assert (tmp_path / "reg" / "reward_curve.png").is_file()
    client = tracking.get_client(params.tracking)
    run = client.get_run(record["run_id"])
    assert run.data.tags["restored_outputs"] == "true"  # no mlflow_run.json: a run of its own
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")] == [0, 1, 2]
    assert run.data.metrics["test/trained.jpeg_compressibility.mean"] == -3.0
    description = client.get_model_version(params.tracking.model_name, "1").description  # what the version is
    assert description.startswith(f"**treegrpo** LoRA (rank {params.lora.rank}) on `{params.model.pretrained}`")
    assert f"{params.train.iterations} iterations" in description and "reward: composition (1)" in description
    assert description.rstrip().endswith("| Model |\n|---|")  # the evaluation's table.md
    assert main(["promote", "--params", str(path)]) == 0

    _write_outputs(params, -4.0, seed=2)  # a worse model
    assert main(["register", "--params", str(path)]) == 0
    assert main(["promote", "--params", str(path)]) == 1
    assert "not promoted" in capsys.readouterr().out
    assert main(["promote", "--params", str(path), "--version", "9"]) == 2


def test_register_ends_the_pipeline_with_the_run_summary(params, tmp_path, capsys):
    """The last stage's stdout (what `make run` shows last): base -> trained on the primary reward, the outputs'
    paths, the registered version and the link that opens this run in the MLflow UI."""
    import yaml

    from treegrpo.config import to_dict

    _write_outputs(params, -3.0, seed=3)  # the trained model -3.0, the base -5.0: a change of +2.000
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(to_dict(params)))
    assert main(["register", "--params", str(path)]) == 0
    out = capsys.readouterr().out
    items = [" ".join(line.split()) for line in out.splitlines()]
    assert "treegrpo: the run in one screen" in items
    assert "JPEG compressibility (-kB) -5.000 ± 0.010 -> -3.000 ± 0.010 (+2.000)" in items
    assert "HPS-v2.1" not in out  # the headline is tracking.primary_reward alone here
    assert f"table {tmp_path / 'eval' / 'table.md'}" in items
    assert f"image grid {tmp_path / 'eval' / 'grid.png'}" in items
    assert f"LoRA {tmp_path / 'lora'}" in items
    record = json.loads((tmp_path / "reg" / "registered.json").read_text())
    assert (f"registered {params.tracking.model_name} version 1 (alias candidate), in "
            f"{tmp_path / 'reg' / 'registered.json'}") in items
    run = tracking.get_client(params.tracking).get_run(record["run_id"])
    link = f"#/experiments/{run.info.experiment_id}/runs/{record['run_id']}/model-metrics"
    (ui,) = [line for line in items if line.startswith("MLflow UI ")]
    # a store other than make mlflow-ui's: the command that opens it, then the run's page
    assert ui.startswith(f"MLflow UI `mlflow ui --backend-store-uri {params.tracking.uri} ") and link in ui


# the model code earlier releases logged with each version ("models from code"): loading such a version runs it
OLD_MODEL_CODE = {
    "treegrpo.registry": "import mlflow\n\nfrom treegrpo.registry import LoraText2Image\n\n"
                         "mlflow.models.set_model(LoraText2Image())\n",
    "treegrpo.serving": "import mlflow\n\nfrom treegrpo.serving import LoraText2Image\n\n"
                        "mlflow.models.set_model(LoraText2Image())\n",
}


def test_versions_logged_before_the_pyfunc_moved_still_find_it():
    """Model code logged before `LoraText2Image` moved to treegrpo.serving imports it from treegrpo.registry; code
    logged before it moved on to treegrpo.recipes.serving, from treegrpo.serving."""
    import treegrpo.recipes.registry
    import treegrpo.recipes.serving
    import treegrpo.registry
    import treegrpo.serving

    assert treegrpo.registry.LoraText2Image is treegrpo.recipes.serving.LoraText2Image
    assert treegrpo.serving.LoraText2Image is treegrpo.recipes.serving.LoraText2Image
    assert "from treegrpo.recipes.serving import LoraText2Image" in treegrpo.recipes.registry.MODEL_CODE


@pytest.mark.parametrize("module", [*OLD_MODEL_CODE, "treegrpo.recipes.serving"])
def test_the_model_code_of_every_release_runs_and_sets_the_pyfunc(module, tmp_path, monkeypatch):
    """The logged code file, run as `mlflow.pyfunc.load_model` runs it (`_load_model_code_path`), sets a
    `LoraText2Image`; today's code is the earlier releases' with the class's new module path."""
    import mlflow.models.model
    from mlflow.models.utils import _load_model_code_path

    from treegrpo.recipes.registry import MODEL_CODE
    from treegrpo.recipes.serving import LoraText2Image

    code = OLD_MODEL_CODE.get(module, MODEL_CODE)
    assert MODEL_CODE == code.replace(module, "treegrpo.recipes.serving")
    (tmp_path / "model_code.py").write_text(code)
    monkeypatch.setattr(mlflow.models.model, "__mlflow_model__", None)  # set by the code file alone
    assert type(_load_model_code_path(str(tmp_path / "model_code.py"), None)) is LoraText2Image


@pytest.mark.slow
def test_the_pyfunc_returns_the_images_of_the_base_model_with_the_lora(params, tiny_pipeline_dir, tmp_path):
    import mlflow

    from treegrpo.models.lora import add_lora, save_lora
    from treegrpo.models.pipeline import load_pipeline

    model = dataclasses.replace(params.model, pretrained=str(tiny_pipeline_dir), device="cpu")
    params = dataclasses.replace(params, model=model)
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)

    def images(seed):  # what the pyfunc promises: prompt i from seed + i, the trained steps and CFG, uint8
        g = [torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))]
        out = pipe(PROMPTS, num_inference_steps=params.sampler.num_inference_steps, guidance_scale=4.5,
                   height=model.resolution, width=model.resolution, generator=g,
                   max_sequence_length=model.max_sequence_length, output_type="np").images
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)

    base = images(5)
    add_lora(pipe.transformer, params.lora)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    with_lora = images(5)
    save_lora(pipe.transformer, tmp_path / "lora")
    register(params, tmp_path / "lora", -3.0)

    mlflow.set_tracking_uri(params.tracking.uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{params.tracking.model_name}@candidate")
    got = loaded.predict(PROMPTS, params={"seed": 5})
    assert got.shape == (2, model.resolution, model.resolution, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - with_lora.astype(int)).max() <= 1  # the LoRA is applied...
    assert np.abs(got.astype(int) - base.astype(int)).max() > 10  # ...and it changes the images
