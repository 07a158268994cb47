"""Checkpoint retention: the newest `keep` at or below the one just written; a longer run's later ones stay."""

import torch

from treegrpo.training import checkpoint as ckpt


def _save(root, iteration, keep):
    return ckpt.save_checkpoint(root, iteration, {"w": torch.full((2,), float(iteration))}, {}, {"note": "x"}, keep)


def _names(root):
    return [p.name for p in ckpt.complete_checkpoints(root)]


def test_keep_prunes_only_checkpoints_at_or_below_the_new_one(tmp_path):
    for it in (2, 4, 6):
        _save(tmp_path, it, keep=2)
    assert _names(tmp_path) == ["ckpt-000004", "ckpt-000006"]
    _save(tmp_path, 40, keep=1)
    assert _names(tmp_path) == ["ckpt-000040"]
    # a shorter run of the same trajectory, started over below the longer run's checkpoint: its own final
    # checkpoint survives (not "older than ckpt-000040") and the longer run's is left alone
    _save(tmp_path, 2, keep=1)
    _save(tmp_path, 4, keep=1)
    assert _names(tmp_path) == ["ckpt-000004", "ckpt-000040"]
    assert ckpt.checkpoint_iteration(tmp_path / "ckpt-000040") == 40


def test_read_state_reads_the_json_state_without_touching_the_rngs(tmp_path):
    path = _save(tmp_path, 3, keep=1)
    before = torch.get_rng_state()
    torch.rand(5)  # move the global RNG: read_state must not restore the checkpoint's
    moved = torch.get_rng_state()
    state = ckpt.read_state(path)
    assert state == {"iteration": 3, "note": "x"}
    assert torch.equal(torch.get_rng_state(), moved) and not torch.equal(before, moved)

