"""Two "nodes" of one process each on 127.0.0.1, launched as docs/nodes.md launches real ones
(`accelerate launch --multi_gpu --num_machines 2 --machine_rank R --main_process_ip ...`; gloo on the CPU): the same
update as one process, files and the MLflow run written by global rank 0 alone, and a SIGKILL of both nodes then a
relaunch ends bit for bit where an uninterrupted run on the same layout ends.

On two nodes of one process each, both processes have local rank 0: a rank-0 check that used the local rank would
make both write. Each process records what it writes (Python's audit hooks, `ddp_worker.watch_writes`), so the test
sees a second writer even where both write the same bytes to the same shared folder.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from tests.conftest import REPO, make_params
from tests.integration.ddp_worker import assert_same_update

pytestmark = pytest.mark.integration
PROMPTS = "a red car\na blue boat\na green tree\na yellow flower\n"
REWARD_ATOL = 1e-5  # as test_resume.py's DDP test: colour_fraction on two batch layouts, ~1e-7 apart
# a smooth reward (see test_resume.py), 2 prompts: one per node; micro_batch 13 = every window parent of a prompt's
# k = d = 3 tree (the shape ddp_worker's counts are worked for)
OVER = dict(train__prompts_per_iteration=2, train__micro_batch=13, train__checkpoint_every=2,
            reward__weights={"color_fraction": 1.0}, sampler__branching=3, sampler__depth=3)
ITERATIONS = 3  # checkpoints at 2 and 3: a kill inside iteration 3 resumes from 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory) -> Path:
    """One MLflow store for the module's runs, one experiment per layout (its schema is made once: ~15 s)."""
    return tmp_path_factory.mktemp("mlflow")


class Layout:
    """One run's folders: params, prompts, output, per-node working directories, records; its MLflow experiment."""

    def __init__(self, tiny_pipeline_dir: Path, root: Path, mlflow_dir: Path, **over):
        self.root, self.mlflow_dir, self.experiment = root, mlflow_dir, root.name
        for sub in ("node0", "node1"):
            (root / sub).mkdir(parents=True)
        _, raw = make_params(tiny_pipeline_dir, root / "out", model__device="cpu", tracking__experiment=root.name,
                             **{**OVER, **over})
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        (root / "prompts.txt").write_text(PROMPTS)
        self.tracking_uri = f"sqlite:///{mlflow_dir / 'mlflow.db'}"

    def train_args(self) -> list[str]:
        return ["--params", str(self.root / "params.yaml"), "--prompts", str(self.root / "prompts.txt")]

    def env(self, **extra: str) -> dict[str, str]:
        # every node writes into its own working directory if anything is relative: watched too
        watch = os.pathsep.join(str(d) for d in (self.root / "out", self.mlflow_dir, self.root / "node0",
                                                  self.root / "node1"))
        return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                "MLFLOW_TRACKING_URI": self.tracking_uri, "TREEGRPO_WATCH": watch, **extra}

    def launch_nodes(self, records: str, **extra: str) -> list[subprocess.Popen]:
        """Both nodes, each in its own session (a SIGKILL of its process group is the node going down)."""
        port = _free_port()
        procs = []
        for node in (0, 1):
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
                   "--num_processes", "2", "--machine_rank", str(node), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "tests.integration.ddp_worker", str(self.root / records), *self.train_args()]
            log = open(self.root / f"{records}-node{node}.log", "w")  # noqa: SIM115 (closed with the process)
            procs.append(subprocess.Popen(cmd, cwd=self.root / f"node{node}", env=self.env(**extra), stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        return procs

    def run_nodes(self, records: str, check: bool = True, **extra: str) -> None:
        procs = self.launch_nodes(records, **extra)
        for node, proc in enumerate(procs):
            try:
                code = proc.wait(timeout=240)
            except subprocess.TimeoutExpired:
                kill_nodes(procs)
                raise
            assert code == 0 or not check, (self.root / f"{records}-node{node}.log").read_text()[-3000:]

    def writes(self, records: str, rank: int) -> list[tuple[str, str]]:
        return [tuple(w) for w in json.loads((self.root / records / f"writes{rank}.json").read_text())]

    def lora(self) -> tuple[dict, dict[str, bytes]]:
        """The LoRA file's header (its metadata and every tensor's dtype, shape and offsets) and each tensor's
        bytes. Not the file's bytes: safetensors writes the metadata's keys in a hash-map order that changes from
        process to process."""
        data = (self.root / "out" / "lora" / "pytorch_lora_weights.safetensors").read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        body = data[8 + size:]
        return header, {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()
                        if k != "__metadata__"}

    def mlflow_runs(self) -> list:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        return client.search_runs([client.get_experiment_by_name(self.experiment).experiment_id])


def kill_nodes(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every process of both nodes: the launchers and their workers (torchrun starts each worker in a
    session of its own, so killing the launcher's process group would leave them running)."""
    victims = []
    for proc in procs:
        try:
            victims += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait()


def _assert_rank0_owns_the_files(layout: Layout, records: str) -> None:
    out = layout.root / "out"
    mine, theirs = layout.writes(records, 0), layout.writes(records, 1)
    assert theirs == [], f"global rank 1 wrote: {theirs[:10]}"
    paths = {Path(p) for _, p in mine}
    # the detector sees every kind of file the run owns (else "rank 1 wrote nothing" would prove nothing)
    assert any(p.parent == out / "checkpoints" for p in paths), "no checkpoint write seen"
    assert out / "lora" in paths and out / "metrics.json" in paths and out / "history.json" in paths
    assert out / "mlflow_run.json" in paths and layout.mlflow_dir / "mlflow.db" in paths


def test_two_nodes_update_like_one_process_rank0_writes_and_sigkill_resumes(tiny_pipeline_dir, tmp_path,
                                                                            mlflow_dir):
    # (a) one process, one iteration: the reference update (beside the two nodes' run: they share nothing)
    # its own MLflow store: two processes creating one store's schema at once would race
    one = Layout(tiny_pipeline_dir, tmp_path / "one", tmp_path / "one-mlflow", train__iterations=1)
    with open(one.root / "rec.log", "w") as log:
        reference = subprocess.Popen([sys.executable, "-m", "tests.integration.ddp_worker", str(one.root / "rec"),
                                      *one.train_args()], cwd=one.root / "node0", env=one.env(), stdout=log,
                                     stderr=subprocess.STDOUT)
        # two nodes, uninterrupted: iteration 0 is the one-process update, split over the nodes
        straight = Layout(tiny_pipeline_dir, tmp_path / "straight", mlflow_dir, train__iterations=ITERATIONS)
        try:
            straight.run_nodes("rec")
        finally:
            code = reference.wait(timeout=240)
    assert code == 0, (one.root / "rec.log").read_text()[-3000:]
    (single,) = torch.load(one.root / "rec" / "rank0.pt")
    ranks = [torch.load(straight.root / "rec" / f"rank{r}.pt") for r in range(2)]
    assert [[r["iteration"] for r in rank] for rank in ranks] == [list(range(ITERATIONS))] * 2
    assert_same_update(single, [rank[0] for rank in ranks], REWARD_ATOL)

    # (b) global rank 0 alone writes checkpoints, the LoRA, metrics and the MLflow run
    _assert_rank0_owns_the_files(straight, "rec")
    (run,) = straight.mlflow_runs()
    assert run.info.status == "FINISHED" and run.data.metrics  # the iterations' figures, logged once

    # (c) both nodes SIGKILLed between checkpoints, then the same commands again
    killed = Layout(tiny_pipeline_dir, tmp_path / "killed", mlflow_dir, train__iterations=ITERATIONS)
    procs = killed.launch_nodes("rec-killed")
    ckpt = killed.root / "out" / "checkpoints" / "ckpt-000002"
    deadline = time.time() + 200
    while not ckpt.exists() and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside iteration 3
    kill_nodes(procs)
    assert ckpt.exists() and not (killed.root / "out" / "lora").exists(), "the run was not killed mid-way"
    killed.run_nodes("rec-resumed")
    resumed = [torch.load(killed.root / "rec-resumed" / f"rank{r}.pt") for r in range(2)]
    assert [[r["iteration"] for r in rank] for rank in resumed] == [[2]] * 2  # both nodes resumed at 2
    assert killed.lora() == straight.lora()  # every tensor's bytes, and the metadata, of the uninterrupted run
    history = json.loads((killed.root / "out" / "history.json").read_text())
    assert [r["iteration"] for r in history] == list(range(ITERATIONS))
    _assert_rank0_owns_the_files(killed, "rec-resumed")
    (run,) = killed.mlflow_runs()  # the relaunch reopened the killed run, on rank 0 only
    assert run.info.status == "FINISHED"


def test_the_write_check_catches_file_ownership_by_local_rank(tiny_pipeline_dir, tmp_path, mlflow_dir):
    """The bug the check above exists for, planted: 'main process' = local rank 0, true on both nodes."""
    layout = Layout(tiny_pipeline_dir, tmp_path / "bug", mlflow_dir, train__iterations=1)
    layout.run_nodes("rec", check=False, TREEGRPO_TEST_LOCAL_OWNER="1")  # the two writers' checkpoints collide
    with pytest.raises(AssertionError, match="global rank 1 wrote"):
        _assert_rank0_owns_the_files(layout, "rec")
    theirs = {Path(p) for _, p in layout.writes("rec", 1)}
    assert layout.root / "out" / "mlflow_run.json" in theirs  # rank 1 opened an MLflow run of its own too
