"""A run killed with SIGKILL and started again with the same command ends with the same LoRA as an uninterrupted
run (bit for bit: the same machine, the same batch layout); and a 2-process data-parallel run computes the same
samples, rewards, advantages and gradient as one process (up to float32 noise: other batch layouts)."""

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
from tests.integration.ddp_worker import assert_same_update

pytestmark = pytest.mark.integration
PROMPTS = "a red car\na blue boat\na green tree\na yellow flower\n"
REWARD_ATOL = 1e-5  # colour_fraction of the same samples on two batch layouts: ~1e-7 apart (float32 noise)


def _setup(tiny_pipeline_dir, root, **over):
    root.mkdir(parents=True)
    over = {"reward__weights": {"jpeg_compressibility": 1.0}, **over}
    _, raw = make_params(tiny_pipeline_dir, root / "out", model__device="cpu", **over)
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
    """Stage by stage, what DDP must preserve: each prompt's samples, rewards and advantages do not depend on the
    rank that owns it, and the all-reduced gradient is the one-process gradient. The reward is colour_fraction, a
    continuous (1-Lipschitz per pixel) function of the pixels, so float32 noise from the different batch layouts
    (the frontier and the VAE batch all nodes of a rank together) stays float32 noise at every stage; a step
    function such as JPEG size would turn it into flipped rewards."""
    over = dict(train__iterations=1, train__prompts_per_iteration=2, train__micro_batch=13,
                reward__weights={"color_fraction": 1.0}, sampler__branching=3, sampler__depth=3)
    worker = [sys.executable, "-m", "tests.integration.ddp_worker"]
    one = _setup(tiny_pipeline_dir, tmp_path / "one", **over)
    res = subprocess.run([*worker, str(tmp_path / "rec1"), *one[4:]], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    two = _setup(tiny_pipeline_dir, tmp_path / "two", **over)
    with socket.socket() as sock:  # a free port on loopback for the gloo rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(port), "-m", *worker[2:], str(tmp_path / "rec2"), *two[4:]]
    res = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (single,) = torch.load(tmp_path / "rec1" / "rank0.pt")
    ranks = [torch.load(tmp_path / "rec2" / f"rank{r}.pt")[0] for r in range(2)]
    assert_same_update(single, ranks, REWARD_ATOL)
