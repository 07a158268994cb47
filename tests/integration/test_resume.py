"""A run killed with SIGKILL and started again with the same command ends with the same LoRA as an uninterrupted
run; and a 2-process data-parallel run makes the same update as one process."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO, make_params

pytestmark = pytest.mark.integration
PROMPTS = "a red car\na blue boat\na green tree\na yellow flower\n"


def _setup(tiny_pipeline_dir, root, **over):
    root.mkdir(parents=True)
    _, raw = make_params(tiny_pipeline_dir, root / "out", model__device="cpu",
                         reward__weights={"jpeg_compressibility": 1.0}, **over)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "prompts.txt").write_text(PROMPTS)
    return [sys.executable, "-m", "treegrpo", "train", "--params", str(root / "params.yaml"),
            "--prompts", str(root / "prompts.txt")]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _lora(root):
    return load_file(root / "out" / "lora" / "pytorch_lora_weights.safetensors")


def test_sigkill_then_resume_gives_the_same_lora(tiny_pipeline_dir, tmp_path):
    over = dict(train__iterations=6, train__checkpoint_every=2, train__prompts_per_iteration=2)
    straight = _setup(tiny_pipeline_dir, tmp_path / "straight", **over)
    subprocess.run(straight, check=True, env=_env(), capture_output=True, timeout=300)

    killed = _setup(tiny_pipeline_dir, tmp_path / "killed", **over)
    proc = subprocess.Popen(killed, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "out" / "checkpoints" / "ckpt-000002"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside iteration 3 or 4
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "killed" / "out" / "lora").exists(), "the run was not killed mid-way"
    # a half-written checkpoint must be ignored on resume: plant one
    shutil.copytree(ckpt, ckpt.with_name("ckpt-000004.partial"))
    resumed = subprocess.run(killed, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    a, b = _lora(tmp_path / "straight"), _lora(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert any(t.abs().max() > 0 for k, t in a.items() if "lora_B" in k)  # it trained (lora_B starts at 0)
    history = yaml.safe_load((tmp_path / "killed" / "out" / "history.json").read_text())
    assert [r["iteration"] for r in history] == list(range(6))  # one history, no duplicated iterations


def test_two_processes_make_the_same_update_as_one(tiny_pipeline_dir, tmp_path):
    over = dict(train__iterations=1, train__prompts_per_iteration=2, train__micro_batch=13)
    one = _setup(tiny_pipeline_dir, tmp_path / "one", **over)
    subprocess.run(one, check=True, env=_env(), capture_output=True, timeout=300)
    two = _setup(tiny_pipeline_dir, tmp_path / "two", **over)
    with socket.socket() as sock:  # a free port on loopback for the gloo rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(port), "-m", *two[2:]]
    res = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # the all-reduced gradient equals the one-process gradient up to float32 summation order
    g1, g2 = (json.loads((tmp_path / d / "out" / "metrics.json").read_text())["grad_norm"] for d in ("one", "two"))
    assert g2 == pytest.approx(g1, rel=1e-3)
    # and so does the update; Adam's first step is lr * g / (|g| + 1e-8), which magnifies float noise on the many
    # near-zero gradient elements, so compare the update's direction and size rather than bitwise
    a, b = _lora(tmp_path / "one"), _lora(tmp_path / "two")
    keys = [k for k in a if "lora_B" in k]  # lora_B starts at 0: its value is the update
    x, y = torch.cat([a[k].flatten() for k in keys]), torch.cat([b[k].flatten() for k in keys])
    assert x.norm() > 0
    assert (x.sign() == y.sign()).float().mean() > 0.99
    assert (x - y).norm() / x.norm() < 0.05
    for k in a:
        if "lora_A" in k:  # while lora_B is 0, lora_A gets no gradient: it keeps its seeded init on every rank
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
