"""End-to-end fixtures: a snapshot of the working tree as a fresh git repository, servers on 127.0.0.1.

`pipeline_repo` runs `dvc repro` once per session in a temporary git repository holding exactly the files of this
working tree (tracked and untracked-but-not-ignored: what a fresh clone of the next commit would hold), with a few
params made smaller so the e2e set stays within minutes on 2 cores. Every server a test starts is stopped by it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent
# small enough for 2 CPU cores, the same code paths as the embedded default (the stand-in reward models of the
# evaluation are covered by tests/integration/test_evaluate.py)
FAST = {"train.iterations": 2, "eval.num_prompts": 4, "eval.grid_prompts": 2, "eval.samples_per_prompt": 1,
        "eval.rewards": ["composition", "jpeg_compressibility"], "pretrain.vae_steps": 2, "pretrain.steps": 2,
        "pretrain.images_per_prompt": 1}


def e2e_env(**extra: str) -> dict[str, str]:
    """The environment of the commands a user would type: the project's venv first on PATH, nothing online."""
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", VENV=str(BIN.parent), HF_HUB_OFFLINE="1",
               DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               GIT_AUTHOR_NAME="e2e", GIT_AUTHOR_EMAIL="e2e@localhost", GIT_COMMITTER_NAME="e2e",
               GIT_COMMITTER_EMAIL="e2e@localhost")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def sh(args: list[str] | str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600,
       check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure show its output's tail."""
    proc = subprocess.run(args, cwd=cwd, env=env or e2e_env(), capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(args, str))
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def snapshot_repo(dest: Path) -> Path:
    """A new git repository at `dest` with this working tree's files (tracked + untracked, not ignored), committed."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    sh(["git", "init", "-q"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "snapshot of the working tree"], dest)
    return dest


def set_params(repo: Path, overrides: dict) -> None:
    """Set dotted params.yaml keys in `repo`, comments kept (the flow's own override code)."""
    from flows.pipeline import set_params as apply

    path = repo / "params.yaml"
    path.write_text(apply(path.read_text(), overrides))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode} before answering {url}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=2).read()
            return
        time.sleep(0.5)
    raise AssertionError(f"no answer from {url} within {timeout} s")


@contextlib.contextmanager
def server(args: list[str], health_url: str, cwd: Path, env: dict[str, str], log: Path):
    """Start a server in its own process group, wait until `health_url` answers, stop the whole group after."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_http(health_url, proc)
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        with contextlib.suppress(ProcessLookupError):  # children left behind (uvicorn workers)
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    """A snapshot repo after one full `dvc repro` (FAST params), with its DVC remote beside it."""
    repo = snapshot_repo(tmp_path_factory.mktemp("e2e") / "repo")
    set_params(repo, FAST)
    sh(["git", "commit", "-qam", "e2e: fewer iterations and eval prompts"], repo)
    sh(["dvc", "repro"], repo, timeout=900)
    return repo
