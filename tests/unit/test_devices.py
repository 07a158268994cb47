"""Which process is which under a launcher: the local rank picks the GPU, and every rank must start the same run."""

from types import SimpleNamespace

import pytest
import torch

from treegrpo.recipes.trainer import TreeGRPOTrainer
from treegrpo.utils.devices import resolve_device
from treegrpo.utils.errors import UserError


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_local_rank_picks_this_process_gpu(four_gpus, monkeypatch):
    monkeypatch.setenv("RANK", "6")  # the global rank never picks a GPU: node 1 of 2, local rank 2
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_scheduler_that_shows_one_gpu_per_process(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES=<its own GPU>
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_without_a_launcher_cuda_is_the_current_device(four_gpus, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda")


def _ranks(starts: list[int], fingerprints: list[str]):
    """A trainer-shaped stub on rank 0 of len(starts) ranks; `gather` hands back every rank's row."""
    rows = torch.tensor([[s, int(f[:12], 16)] for s, f in zip(starts, fingerprints, strict=True)])
    accelerator = SimpleNamespace(num_processes=len(starts), device=torch.device("cpu"), gather=lambda t: rows)
    return SimpleNamespace(accelerator=accelerator, start_iteration=starts[0], out="/shared/outputs/train",
                           identity=SimpleNamespace(fingerprint=fingerprints[0]))


def test_ranks_that_start_the_same_run_at_the_same_iteration_go_on():
    TreeGRPOTrainer.check_ranks_agree(_ranks([4, 4], ["0123456789abcdef"] * 2))


def test_a_node_that_does_not_see_the_checkpoints_stops_every_rank_with_the_cause():
    """Node 0 resumes iteration 4; node 1's train.output_dir is its own disk, empty: it would start at 0 and the
    two would fall out of step in their collectives. Every rank gathers the same rows, so every rank raises."""
    with pytest.raises(UserError, match=r"start iterations \[4, 0\].*same train.output_dir='/shared/outputs/train'"):
        TreeGRPOTrainer.check_ranks_agree(_ranks([4, 0], ["0123456789abcdef"] * 2))
    with pytest.raises(UserError, match="same checkout and params.yaml"):
        TreeGRPOTrainer.check_ranks_agree(_ranks([0, 0], ["0123456789abcdef", "fedcba9876543210"]))
