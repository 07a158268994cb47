"""The reward registry, the `reward` and `eval` params, and weight-file resolution (no model is built here)."""

import copy
import dataclasses
import pickle
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.config import ParamsError, load_params, parse_params
from treegrpo.rewards import PAPER_REWARDS, REWARD_NAMES
from treegrpo.rewards.base import resolve_file
from treegrpo.rewards.registry import REWARDS, build_reward, build_rewards, reward_kwargs
from treegrpo.utils.errors import UserError


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def _set(raw: dict, dotted: str, value) -> dict:
    d = copy.deepcopy(raw)
    *path, last = dotted.split(".")
    node = d
    for k in path:
        node = node[k]
    node[last] = value
    return d


def test_registry_matches_the_light_name_list():
    assert tuple(REWARDS) == REWARD_NAMES
    assert PAPER_REWARDS == ("hpsv2", "image_reward", "aesthetic", "clip_score")


def test_config_import_stays_light():
    # params load before any model: importing the config must not pull in torch or the reward packages
    code = "import sys, treegrpo.config; print(sorted({'torch', 'open_clip', 'ImageReward'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("dotted,value", [
    ("reward.weights", {"hps": 1.0}),
    ("eval.rewards", ["hpsv2", "pickscore"]),
])
def test_unknown_reward_fails_at_load_listing_the_registry(raw, dotted, value):
    with pytest.raises(ParamsError, match=re.escape(dotted)) as err:
        parse_params(_set(raw, dotted, value))
    assert all(name in str(err.value) for name in REWARD_NAMES)


@pytest.mark.parametrize("dotted,value", [
    ("reward.device", "tpu"), ("reward.batch_size", 0), ("reward.dtype", "float8"), ("reward.stand_in_dir", " "),
    ("eval.num_prompts", -1), ("eval.rewards", []), ("eval.rewards", ["hpsv2", "hpsv2"]), ("eval.grid_prompts", 0),
])
def test_bad_reward_and_eval_values_name_the_key(raw, dotted, value):
    with pytest.raises(ParamsError, match=re.escape(dotted)):
        parse_params(_set(raw, dotted, value))


def test_embedded_default_trains_on_weight_free_rewards(params):
    assert set(params.reward.weights) == {"composition"}  # the world's reward
    assert tuple(params.eval.rewards[:2]) == ("composition_accuracy", "composition")
    assert tuple(params.eval.rewards[2:6]) == PAPER_REWARDS  # the paper's four, on stand-ins here


def test_build_reward_unknown_name_lists_registry(params):
    with pytest.raises(UserError, match="the registry has hpsv2, image_reward"):
        build_reward("pickscore", params.reward)


def test_real_weight_kwargs_come_from_the_section(params):
    real = dataclasses.replace(params.reward, stand_in_dir=None)
    kwargs = reward_kwargs("hpsv2", real)
    assert kwargs["model"] == "ViT-H-14" and kwargs["checkpoint"].endswith("HPS_v2.1_compressed.pt")
    reward = build_reward("image_reward", real)  # lazily: nothing is loaded or resolved yet
    assert reward._model is None and reward.stand_in is False
    assert pickle.loads(pickle.dumps(reward)).checkpoint == reward.checkpoint


def test_build_rewards_defaults_to_the_trained_names(params):
    assert list(build_rewards(params.reward)) == list(params.reward.weights)


def test_missing_local_file_names_it_and_where_to_put_it(tmp_path):
    missing = tmp_path / "HPS_v2.1_compressed.pt"
    with pytest.raises(UserError, match=re.escape(f"Put it at {missing}")) as err:
        resolve_file(str(missing), "reward.hpsv2.checkpoint", "HPS_v2.1_compressed.pt (~1.9 GB)")
    assert "reward.hpsv2.checkpoint" in str(err.value) and "HPS_v2.1_compressed.pt (~1.9 GB)" in str(err.value)


def test_hub_file_not_cached_offline_fails_at_once_with_the_fix():
    # conftest sets HF_HUB_OFFLINE=1: an uncached file must fail now, not hang on the network
    with pytest.raises(UserError, match=r"hf download treegrpo-tests/absent weights/HPS.pt") as err:
        resolve_file("hf://treegrpo-tests/absent/weights/HPS.pt", "reward.hpsv2.checkpoint", "HPS_v2.1 (~1.9 GB)")
    assert "set reward.hpsv2.checkpoint to its local path" in str(err.value) and "HPS_v2.1 (~1.9 GB)" in str(err.value)


def test_malformed_hub_spec():
    with pytest.raises(UserError, match="hf://owner/repo/file"):
        resolve_file("hf://xswu/HPSv2", "reward.hpsv2.checkpoint", "x")
