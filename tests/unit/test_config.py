"""params.yaml → typed config: the shipped file loads; every kind of bad value fails naming its key."""

import copy
import re

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.config import ParamsError, load_params, parse_params


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_shipped_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.sampler.branching == 2 and p.sampler.depth == 2  # the embedded default's cheap trees
    assert p.baselines.group_size == p.sampler.branching ** p.sampler.depth  # equal images per prompt
    assert isinstance(p.train.learning_rate, float)
    assert "attn2.to_q" in p.lora.target_modules


def _with(raw: dict, dotted: str, value, delete: bool = False) -> dict:
    d = copy.deepcopy(raw)
    *path, last = dotted.split(".")
    node = d
    for k in path:
        node = node[k]
    if delete:
        del node[last]
    else:
        node[last] = value
    return d


BAD = [
    ("sampler.branching", 1, "sampler.branching"),  # out of range: a group needs 2
    ("sampler.depth", 10, "sampler.depth"),  # window would reach the last step
    ("sampler.noise_level", -0.1, "sampler.noise_level"),
    ("sampler.window.alpha", 0.0, "sampler.window.alpha"),
    ("sampler.window.strategy", "sideways", "sampler.window.strategy"),  # not one of the choices
    ("sampler.num_inference_steps", "ten", "sampler.num_inference_steps"),  # wrong type
    ("train.learning_rate", "fast", "train.learning_rate"),
    ("train.iterations", 2.5, "train.iterations"),  # float for an int
    ("train.clip_range", 1.5, "train.clip_range"),
    ("train.gradient_checkpointing", "yes", "train.gradient_checkpointing"),  # string for a bool
    ("train.backup", "max", "train.backup"),
    ("model.resolution", 100, "model.resolution"),  # not a multiple of 16
    ("model.device", "tpu", "model.device"),
    ("lora.rank", 0, "lora.rank"),
    ("lora.target_modules", [], "lora.target_modules"),
    ("reward.weights", {"jpeg_compressibility": -1.0}, "reward.weights.jpeg_compressibility"),
    ("train.surprise", 1, "train.surprise"),  # unknown key
]


@pytest.mark.parametrize("dotted,value,named", BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_bad_value_names_the_key(raw, dotted, value, named):
    with pytest.raises(ParamsError, match=re.escape(named)):
        parse_params(_with(raw, dotted, value))


@pytest.mark.parametrize("dotted", ["train.seed", "sampler.window", "model.pretrained", "lora"])
def test_missing_key_names_the_key(raw, dotted):
    with pytest.raises(ParamsError, match=rf"missing key\(s\) {re.escape(dotted)}"):
        parse_params(_with(raw, dotted, None, delete=True))


def test_unknown_section(raw):
    with pytest.raises(ParamsError, match="unknown key.*optimizer"):
        parse_params({**raw, "optimizer": {"lr": 1}})


def test_int_is_accepted_for_float_and_frozen(raw):
    p = parse_params(_with(raw, "train.learning_rate", 1))
    assert p.train.learning_rate == 1.0 and isinstance(p.train.learning_rate, float)
    with pytest.raises(AttributeError):
        p.train.learning_rate = 2.0  # frozen


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_every_dvc_param_key_exists():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    named = [key for stage in stages.values() for key in stage.get("params", []) if isinstance(key, str)]
    assert named, "dvc.yaml names no params"
    for dotted in named:
        node = params
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml names {dotted}, absent from params.yaml"
            node = node[part]
    # ${...} interpolations in dvc.yaml must resolve too
    text = (REPO / "dvc.yaml").read_text()
    for dotted in re.findall(r"\$\{([\w.]+)\}", text):
        node = params
        for part in dotted.split("."):
            assert part in node, f"dvc.yaml interpolates ${{{dotted}}}, absent from params.yaml"
            node = node[part]


def test_set_dotted_sets_one_value_and_refuses_a_key_params_yaml_lacks(raw):
    from treegrpo.config.base import set_dotted

    before = copy.deepcopy(raw)
    set_dotted(raw, "sampler.window.alpha", 0.25)
    assert raw["sampler"]["window"]["alpha"] == 0.25
    raw["sampler"]["window"]["alpha"] = before["sampler"]["window"]["alpha"]
    assert raw == before  # nothing else moved
    with pytest.raises(KeyError, match="no key 'iteration'"):
        set_dotted(raw, "train.iteration", 3)  # a typo adds nothing
    with pytest.raises(KeyError, match="no section 'trian'"):
        set_dotted(raw, "trian.iterations", 3)
    with pytest.raises(KeyError, match="no section 'seed'"):
        set_dotted(raw, "train.seed.value", 3)  # a value is not a section
    assert raw == before
