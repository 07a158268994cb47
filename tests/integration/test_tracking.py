"""MLflow tracking on a temporary SQLite store: one run per training run, every params.yaml key, every iteration,
provenance tags, resume after a crash, rank 0 only, and a dead server that does not stop training; what the UI shows
first: a model-training experiment, figures grouped by prefix (reward/...), the run's constants once, as params."""

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.config import ParamsError, load_params
from treegrpo.config.tracking import TrackingParams
from treegrpo.training import tracking

pytestmark = pytest.mark.integration
KEY = "0123456789abcdef-40"  # a RunIdentity.key: the training run's trajectory and end


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds); each test has its own runs."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


@pytest.fixture
def params(store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    p = load_params(REPO / "params.yaml")
    return dataclasses.replace(p, train=dataclasses.replace(p.train, output_dir=str(tmp_path / "train")),
                               tracking=dataclasses.replace(p.tracking, uri=store))


def _leaf_keys(tree, prefix=""):
    """Dotted keys of params.yaml's leaves; reward.weights is one value (a mapping of reward -> weight)."""
    for key, value in tree.items():
        dotted = prefix + key
        if isinstance(value, dict) and dotted != "reward.weights":
            yield from _leaf_keys(value, dotted + ".")
        else:
            yield dotted


def test_params_are_flattened_with_the_params_yaml_keys(params):
    flat = tracking.flat_params(params)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(flat) == set(_leaf_keys(raw))
    assert flat["train.learning_rate"] == "0.001" and flat["sampler.branching"] == "2"
    assert json.loads(flat["lora.target_modules"])[0] == "attn.to_q"
    assert json.loads(flat["reward.weights"]) == {"composition": 1.0}


def test_credentials_stay_out_of_params_yaml_and_of_logged_params(params, monkeypatch):
    with pytest.raises(ParamsError, match="MLFLOW_TRACKING_URI"):
        TrackingParams(uri="http://alice:s3cret@mlflow.internal:5000", experiment="e", model_name="m",
                       primary_reward="hpsv2", min_improvement=0.0, output_dir="o")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://alice:s3cret@db.internal/mlflow")
    assert tracking.tracking_uri(params.tracking).startswith("postgresql://alice")  # the environment wins
    flat = tracking.flat_params(params)
    assert flat["tracking.uri"] == "postgresql://<redacted>@db.internal/mlflow"
    assert not any("s3cret" in v for v in flat.values())


def _metrics(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_one_run_per_training_with_every_iteration_params_and_provenance(params):
    with tracking.training_run(params, KEY) as log_fn:
        for it in range(3):
            log_fn({"reward_mean": it / 10, "loss": 1.0 - it, "skipped": True}, it)  # a bool is not a metric
    record = json.loads((Path(params.train.output_dir) / tracking.RUN_FILE).read_text())
    client = tracking.get_client(params.tracking)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "treegrpo"
    assert run.data.params == tracking.flat_params(params)
    assert _metrics(client, run.info.run_id, "reward/mean") == [(0, 0.0), (1, 0.1), (2, 0.2)]
    assert "skipped" not in run.data.metrics and "rl/skipped" not in run.data.metrics
    tags = run.data.tags
    assert tags["params_hash"] == tracking.params_hash(params) and len(tags["params_hash"]) == 16
    assert tags["dvc_lock_md5"] == tracking.file_md5("dvc.lock")  # the tests run from the repository root
    assert len(tags["git_commit"]) == 40 and tags["mlflow.source.name"] == "treegrpo train"


FIGURES = {"reward_mean": 0.5, "reward_composition_mean": 0.5, "reward_composition_std": 0.1, "loss": 0.2,
           "grad_norm": 1.0, "approx_kl": 0.0, "time_sampling": 1.5, "peak_memory_mb": 900.0,
           "tree/tie_fraction": 0.5, "nfe": 29.0, "window_start": 2.0, "images": 54.0, "eff_group": 27.0,
           "edges_trained": 78.0}  # the trainer's names (history.json), a few of each kind


def test_the_ui_opens_on_training_with_reward_first_and_constants_once(params):
    with tracking.training_run(params, KEY) as log_fn:
        log_fn(FIGURES, 0)
        log_fn({**FIGURES, "reward_mean": 0.6}, 1)
        log_fn({**FIGURES, "edges_trained": 60.0}, 2)  # a "constant" that changed: kept, as a metric
    client = tracking.get_client(params.tracking)
    run = client.get_run(tracking.read_run_file(params.train.output_dir)["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    link = tracking.ui_url(params.tracking, experiment.experiment_id, run.info.run_id)  # what the log prints
    assert link == (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/"
                     "model-metrics?workflowType=machine_learning")  # the UI's model-training view, not GenAI
    assert set(run.data.metrics) == {
        "reward/mean", "reward/composition_mean", "reward/composition_std", "rl/loss", "rl/grad_norm",
        "rl/approx_kl", "time/sampling", "system/peak_memory_mb", "tree/tie_fraction", "sampler/nfe",
        "sampler/window_start", "shape/edges_trained"}
    sections = sorted({name.split("/")[0] for name in run.data.metrics} - {"system"})  # "system": its own tab
    assert sections[0] == "reward" and sections.index("rl") == 1  # MLflow orders sections alphabetically
    assert _metrics(client, run.info.run_id, "reward/mean") == [(0, 0.5), (1, 0.6), (2, 0.5)]
    shape = {k: v for k, v in run.data.params.items() if k.startswith("shape.")}
    assert shape == {"shape.images": "54", "shape.eff_group": "27", "shape.edges_trained": "78"}
    assert _metrics(client, run.info.run_id, "shape/edges_trained") == [(2, 60.0)]

    client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "genai_development")
    tracking.experiment_id(client, experiment.name)  # a kind someone chose is left alone
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.experimentKind"] == "genai_development"
    client.delete_experiment_tag(experiment.experiment_id, "mlflow.experimentKind")
    tracking.experiment_id(client, experiment.name)  # an experiment made before the tag existed gets it
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_backfill_names_and_splits_the_figures_as_the_logger_does(params):
    client, run_id = tracking.start_run(params, "test")
    history = [{"iteration": i, **FIGURES, "reward_mean": i / 10} for i in range(3)]
    assert tracking.backfill_history(client, run_id, history) == 3
    run = client.get_run(run_id)
    assert "reward/mean" in run.data.metrics and "reward_mean" not in run.data.metrics
    assert run.data.params["shape.eff_group"] == "27" and "shape/eff_group" not in run.data.metrics
    assert _metrics(client, run_id, "reward/mean") == [(0, 0.0), (1, 0.1), (2, 0.2)]


def test_a_run_is_reopened_only_by_the_same_training_run(params):
    with pytest.raises(RuntimeError, match="boom"), tracking.training_run(params, KEY) as log_fn:
        log_fn({"reward_mean": 0.5}, 0)
        raise RuntimeError("boom")
    client = tracking.get_client(params.tracking)
    first = tracking.read_run_file(params.train.output_dir)["run_id"]
    assert client.get_run(first).info.status == "FAILED"
    assert client.get_run(first).data.tags[tracking.RUN_KEY_TAG] == KEY

    with tracking.training_run(params, KEY) as log_fn:  # `dvc repro` again after the crash: the same run goes on
        log_fn({"reward_mean": 0.6}, 1)
    assert tracking.read_run_file(params.train.output_dir)["run_id"] == first
    assert client.get_run(first).info.status == "FINISHED"
    assert _metrics(client, first, "reward/mean") == [(0, 0.5), (1, 0.6)]

    # finished, then re-run (DVC re-runs the stage, the trainer resumes the final checkpoint) with a setting that
    # does not change the training run: the same run, the new value tagged (MLflow params cannot change)
    resumed = dataclasses.replace(params, train=dataclasses.replace(params.train, checkpoint_every=5))
    with tracking.training_run(resumed, KEY):
        pass
    assert tracking.read_run_file(params.train.output_dir)["run_id"] == first
    run = client.get_run(first)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_with.train.checkpoint_every"] == "5"

    with tracking.training_run(params, "0123456789abcdef-4"):  # another end: another LoRA, another run
        pass
    second = tracking.read_run_file(params.train.output_dir)["run_id"]
    assert second != first
    client.update_run(second, status="FAILED")
    with tracking.training_run(params, "fedcba9876543210-4"):  # another trajectory: never appended to it
        pass
    third = tracking.read_run_file(params.train.output_dir)["run_id"]
    assert third not in (first, second)
    client.delete_run(third)
    with tracking.training_run(params, "fedcba9876543210-4"):  # a deleted run is not reopened
        pass
    assert tracking.read_run_file(params.train.output_dir)["run_id"] != third


def test_the_iterations_before_a_resume_point_are_logged_from_history_json(params):
    """A new run that starts at a resume point (another end of the same trajectory) gets the earlier figures."""
    out = Path(params.train.output_dir)
    out.mkdir(parents=True)
    (out / "history.json").write_text(json.dumps([{"iteration": i, "reward_mean": i / 10} for i in range(3)]))
    with tracking.training_run(params, KEY) as log_fn:
        log_fn({"reward_mean": 0.2}, 2)  # the trainer logs what it runs
    run_id = tracking.read_run_file(out)["run_id"]
    client = tracking.get_client(params.tracking)
    assert _metrics(client, run_id, "reward/mean") == [(0, 0.0), (1, 0.1), (2, 0.2)]


def test_only_the_main_process_talks_to_mlflow(params, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with tracking.training_run(params, KEY) as log_fn:
        assert log_fn is None
    assert tracking.read_run_file(params.train.output_dir) is None


def test_a_dead_tracking_server_does_not_stop_training(params, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = dataclasses.replace(params.tracking, uri=f"http://127.0.0.1:{port}")
    log_fn = tracking.MetricLogger(dead, "0" * 32)
    log_fn({"reward_mean": 1.0}, 0)
    assert log_fn.failures == 1 and "history.json keeps it" in caplog.text


def test_training_files_become_run_artifacts_and_a_dead_server_only_warns(params, tmp_path, monkeypatch, caplog):
    grid = tmp_path / "iteration_000010.png"
    grid.write_bytes(b"png")
    with tracking.training_run(params, KEY) as log_fn:
        log_fn.log_file(grid, 9)
    client = tracking.get_client(params.tracking)
    run_id = tracking.read_run_file(params.train.output_dir)["run_id"]
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/iteration_000010.png"]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = tracking.MetricLogger(dataclasses.replace(params.tracking, uri="http://127.0.0.1:9"), "0" * 32)
    dead.log_file(grid, 9)
    assert dead.failures == 1 and "it stays on disk" in caplog.text


def test_backfill_logs_only_the_missing_iterations(params):
    client, run_id = tracking.start_run(params, "test")
    client.log_metric(run_id, "reward/mean", 0.0, step=0)
    history = [{"iteration": i, "reward_mean": i / 10, "loss": -i} for i in range(4)]
    assert tracking.backfill_history(client, run_id, history) == 3
    assert _metrics(client, run_id, "reward/mean") == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)]
    assert tracking.backfill_history(client, run_id, history) == 0


def test_treegrpo_train_keeps_one_mlflow_run_per_training_run(tiny_pipeline_dir, store, tmp_path, monkeypatch):
    """`treegrpo train` again after it finished (what `dvc repro` does when an unrelated dep changed) resumes the
    final checkpoint and reopens its MLflow run; fewer iterations or another learning rate train another LoRA: a new
    run, whose metric history has exactly the iterations of that LoRA."""
    import argparse

    from tests.conftest import make_params
    from treegrpo.cli.train import run as train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    out = tmp_path / "out"
    (tmp_path / "prompts.txt").write_text("a red car\na blue boat\n")

    def run_id(**over) -> str:
        _, raw = make_params(tiny_pipeline_dir, out, model__device="cpu", tracking__uri=store,
                             reward__weights={"jpeg_compressibility": 1.0}, train__prompts_per_iteration=1,
                             train__checkpoint_every=1, train__keep_checkpoints=1, sampler__branching=2,
                             sampler__depth=1, **over)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        assert train(argparse.Namespace(params=str(tmp_path / "params.yaml"), prompts=str(tmp_path / "prompts.txt"))) \
            == 0
        return tracking.read_run_file(out)["run_id"]

    client = tracking.get_client(TrackingParams(uri=store, experiment="treegrpo", model_name="m",
                                                primary_reward="jpeg_compressibility", min_improvement=0.0,
                                                output_dir=str(tmp_path)))
    first = run_id(train__iterations=3)
    assert run_id(train__iterations=3) == first  # the final checkpoint resumed: the same run
    assert client.get_run(first).info.status == "FINISHED"
    assert [step for step, _ in _metrics(client, first, "reward/mean")] == [0, 1, 2]
    shorter = run_id(train__iterations=2)  # started over (keep_checkpoints=1 left only ckpt-000003)
    assert shorter != first
    assert [step for step, _ in _metrics(client, shorter, "reward/mean")] == [0, 1]
    assert run_id(train__iterations=2) == shorter
    assert run_id(train__iterations=2, train__learning_rate=1e-3) not in (first, shorter)
