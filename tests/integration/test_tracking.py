"""MLflow tracking on a temporary SQLite store: one run per training run, every params.yaml key, every iteration,
provenance tags, resume after a crash, rank 0 only, and a dead server that does not stop training."""

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from treegrpo import tracking
from treegrpo.config import ParamsError, load_params
from treegrpo.config.tracking import TrackingParams

pytestmark = pytest.mark.integration


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
    assert flat["train.learning_rate"] == "0.01" and flat["sampler.branching"] == "3"
    assert json.loads(flat["lora.target_modules"])[0] == "attn.to_q"
    assert json.loads(flat["reward.weights"]) == {"jpeg_compressibility": 1.0}


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
    with tracking.training_run(params) as log_fn:
        for it in range(3):
            log_fn({"reward_mean": it / 10, "loss": 1.0 - it, "skipped": True}, it)  # a bool is not a metric
    record = json.loads((Path(params.train.output_dir) / tracking.RUN_FILE).read_text())
    client = tracking.get_client(params.tracking)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "treegrpo"
    assert run.data.params == tracking.flat_params(params)
    assert _metrics(client, run.info.run_id, "reward_mean") == [(0, 0.0), (1, 0.1), (2, 0.2)]
    assert "skipped" not in run.data.metrics
    tags = run.data.tags
    assert tags["params_hash"] == tracking.params_hash(params) and len(tags["params_hash"]) == 16
    assert tags["dvc_lock_md5"] == tracking.file_md5("dvc.lock")  # the tests run from the repository root
    assert len(tags["git_commit"]) == 40 and tags["mlflow.source.name"] == "treegrpo train"


def test_a_crashed_run_is_reopened_only_with_the_same_params(params):
    with pytest.raises(RuntimeError, match="boom"), tracking.training_run(params) as log_fn:
        log_fn({"reward_mean": 0.5}, 0)
        raise RuntimeError("boom")
    client = tracking.get_client(params.tracking)
    first = tracking.read_run_file(params.train.output_dir)["run_id"]
    assert client.get_run(first).info.status == "FAILED"

    with tracking.training_run(params) as log_fn:  # `dvc repro` again after the crash: the same run goes on
        log_fn({"reward_mean": 0.6}, 1)
    assert tracking.read_run_file(params.train.output_dir)["run_id"] == first
    assert client.get_run(first).info.status == "FINISHED"
    assert _metrics(client, first, "reward_mean") == [(0, 0.5), (1, 0.6)]

    with tracking.training_run(params) as log_fn:  # finished: a new training is a new run
        pass
    second = tracking.read_run_file(params.train.output_dir)["run_id"]
    assert second != first
    client.update_run(second, status="FAILED")
    changed = dataclasses.replace(params, train=dataclasses.replace(params.train, seed=7))
    with tracking.training_run(changed):  # other params: never appended to the crashed run
        pass
    assert tracking.read_run_file(params.train.output_dir)["run_id"] not in (first, second)


def test_only_the_main_process_talks_to_mlflow(params, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with tracking.training_run(params) as log_fn:
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
    with tracking.training_run(params) as log_fn:
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
    client.log_metric(run_id, "reward_mean", 0.0, step=0)
    history = [{"iteration": i, "reward_mean": i / 10, "loss": -i} for i in range(4)]
    assert tracking.backfill_history(client, run_id, history) == 3
    assert _metrics(client, run_id, "reward_mean") == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)]
    assert tracking.backfill_history(client, run_id, history) == 0


def test_reward_curves_are_a_png(tmp_path):
    history = [{"iteration": i, "reward_mean": i, "reward_jpeg_compressibility_mean": -3 + i / 10} for i in range(5)]
    assert tracking.curve_keys(history) == ["reward_jpeg_compressibility_mean"]
    path = tracking.plot_history(history, tmp_path / "curve.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
