"""The orchestration habit end to end: a real Prefect server on 127.0.0.1, the process GPU pool, the deployment
from prefect.yaml, `prefect deployment run treegrpo/train` with a parameter override, a worker that serves it once;
then the run completed, its Markdown artifact exists and MLflow has the new model version."""

import json
import re

import pytest

from tests.e2e.conftest import e2e_env, free_port, server, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_deployment_run_on_the_gpu_pool_registers_a_new_version(pipeline_repo, tmp_path):
    repo = pipeline_repo
    port = free_port()
    env = e2e_env(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_PORT=str(port),
                  PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    with server(["scripts/prefect_gpu.sh", "server"], f"http://127.0.0.1:{port}/api/health", repo, env,
                tmp_path / "server.log"):
        sh(["scripts/prefect_gpu.sh", "pool"], repo, env)
        sh(["scripts/prefect_gpu.sh", "deploy"], repo, env)
        started = sh(["prefect", "deployment", "run", "treegrpo/train", "--param",
                      'overrides={"train.iterations": 3}'], repo, env)
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
        worker = sh(["scripts/prefect_gpu.sh", "worker", "--run-once"], repo, env, timeout=500)

        state = json.loads(sh(["prefect", "flow-run", "inspect", flow_run_id, "--output", "json"], repo, env).stdout)
        assert state["state"]["type"] == "COMPLETED", worker.stdout[-3000:]
        artifact = sh(["prefect", "artifact", "inspect", "treegrpo-run"], repo, env).stdout
        assert "treegrpo-lora version 2" in artifact and "train.iterations" in artifact

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("treegrpo-lora", "candidate")
    assert str(mv.version) == "2"  # the fixture's `dvc repro` registered version 1
    assert client.get_run(mv.run_id).data.params["train.iterations"] == "3"
    assert json.loads((repo / "outputs/register/registered.json").read_text())["version"] == "2"
    assert sh(["dvc", "status"], repo).stdout.strip().endswith("up to date.")  # the flow kept dvc.lock current
    assert any((repo.parent / "treegrpo-dvc-remote").rglob("*")), "the flow pushed the outputs to the DVC remote"


def test_overrides_are_validated_and_keep_the_comments():
    from flows.pipeline import set_params
    from tests.conftest import REPO
    from treegrpo.config import ParamsError, parse_params, read_yaml

    text = (REPO / "params.yaml").read_text()
    out = set_params(text, {"train.iterations": 3, "sampler.branching": 2})
    p = parse_params(read_yaml(out))
    assert (p.train.iterations, p.sampler.branching) == (3, 2)
    assert "# the paper's CFG" in out and "revision: null" in out  # comments and nulls survive
    with pytest.raises(ValueError, match="train.iteration'"):
        set_params(text, {"train.iteration": 3})  # a typo is not silently added
    with pytest.raises(ParamsError, match="sampler.branching"):
        set_params(text, {"sampler.branching": 1})


def test_retries_only_around_what_is_safe_to_repeat():
    from flows.pipeline import dvc_stages, fetch_models, pull_cache, push_cache, stage_task

    retries = {stage: stage_task(stage).retries for stage in dvc_stages()}
    assert retries == {"check": 0, "build_model": 0, "world": 0, "pretrain": 0, "ingest": 2, "validate": 0,
                       "train": 0, "evaluate": 0, "register": 3}
    assert fetch_models.retries == 3 and pull_cache.retries == 2 and push_cache.retries == 2


def test_without_an_api_url_prefect_starts_a_temporary_server_over_prefect_home(tmp_path):
    """What docs/gpu.md says of `prefect deployment run` without PREFECT_API_URL, from the pinned Prefect's own
    settings: no URL, ephemeral mode on, 20 s to start, over $PREFECT_HOME/prefect.db (a local server's database)."""
    import subprocess
    import sys

    code = ("from prefect.settings import get_current_settings as g; s = g(); "
            "print(s.api.url, s.server.ephemeral.enabled, s.server.ephemeral.startup_timeout_seconds, "
            "s.server.database.connection_url.get_secret_value())")
    env = e2e_env(PREFECT_HOME=str(tmp_path))
    for key in [k for k in env if k.startswith("PREFECT_") and k not in ("PREFECT_HOME",
                                                                        "PREFECT_SERVER_ANALYTICS_ENABLED")]:
        env.pop(key)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.split()
    assert out == ["None", "True", "20", f"sqlite+aiosqlite:///{tmp_path}/prefect.db"]
