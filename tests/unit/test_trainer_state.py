"""The trainer's carried state and its checkpoint keys: a state.json written before `TrainerState` resumes the same."""

import json

from treegrpo.recipes.trainer import TrainerState
from treegrpo.training import checkpoint as ckpt


def test_the_state_is_saved_under_the_checkpoint_keys_of_before():
    state = TrainerState(window={"alpha": 0.4, "reward_ema": -3.9}, bad_steps=1, skipped_steps=2)
    assert state.to_checkpoint() == {"window": {"alpha": 0.4, "reward_ema": -3.9}, "bad_steps": 1, "skipped_steps": 2}
    assert TrainerState().to_checkpoint() == {"window": None, "bad_steps": 0, "skipped_steps": 0}


def test_a_checkpoint_written_as_a_plain_dict_resumes_into_the_state(tmp_path):
    # what the trainer wrote when its state was a dict: {**state, "fingerprint": ..., "history": ...}
    old = {"window": {"alpha": 0.5, "reward_ema": None}, "bad_steps": 0, "skipped_steps": 3, "fingerprint": "ab" * 32,
           "history": [{"iteration": 0, "reward_mean": -3.9}]}
    path = ckpt.save_checkpoint(tmp_path, 2, {}, {}, old, keep=1)
    assert json.loads((path / "state.json").read_text())["skipped_steps"] == 3
    _, _, state = ckpt.load_checkpoint(path)
    assert TrainerState.from_checkpoint(state) == TrainerState({"alpha": 0.5, "reward_ema": None}, 0, 3)
