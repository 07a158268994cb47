"""The params.yaml writer (`treegrpo profile`, the flow's overrides): `git diff` shows only the changed values, their
old comments gone, everything else byte for byte; the result reads back as asked under YAML 1.2 and 1.1."""

import difflib

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.config import ParamsError, read_yaml
from treegrpo.config.edit import parse_entries, render, set_values

TEXT = """\
# a header comment
model:
  pretrained: models/world-sd3  # a local folder here
  revision: null                # hub revision
  target: [a, b,
           c]
train:
  iterations: 40                # ~2.6 s each on 2 CPU cores
  learning_rate: 1.0e-2         # chosen on the tiny model; 3e-2
                                #   diverged
  # a comment about the next key, kept
  mixed_precision: "no"         # no | bf16
reward:
  weights:                      # z-scored, then weighted
    # the embedded default's reward
    composition: 1.0
  device: auto
"""


def changed_lines(old: str, new: str) -> list[str]:
    """The lines `git diff` would show as removed (-), then those it would show as added (+)."""
    diff = [line for line in difflib.ndiff(old.splitlines(), new.splitlines()) if line[:1] in "+-"]
    return [line for line in diff if line[0] == "-"] + [line for line in diff if line[0] == "+"]


def test_only_the_changed_values_lines_change_and_their_comments_go():
    out = set_values(TEXT, {"train.iterations": 300, "train.learning_rate": 1e-5, "model.revision": None,
                            "reward.weights": {"hpsv2": 1.0}})
    assert changed_lines(TEXT, out) == [
        "-   iterations: 40                # ~2.6 s each on 2 CPU cores",  # a false comment: gone with the value
        "-   learning_rate: 1.0e-2         # chosen on the tiny model; 3e-2",
        "-                                 #   diverged",  # its continuation line too
        "-     # the embedded default's reward",  # inside the mapping: it described the old entries
        "-     composition: 1.0",
        "+   iterations: 300",
        "+   learning_rate: 1.0e-05",
        "+     hpsv2: 1.0",
    ]  # model.revision was already null: untouched (not even re-spelled)
    assert "weights:                      # z-scored, then weighted" in out  # the key's own comment stays
    assert "# a comment about the next key, kept" in out
    new = read_yaml(out)
    assert new["train"]["learning_rate"] == 1e-5 and new["reward"]["weights"] == {"hpsv2": 1.0}
    assert yaml.safe_load(out)["train"]["learning_rate"] == 1e-5  # YAML 1.1 (PyYAML) reads a float too


def test_an_unchanged_value_leaves_the_text_as_it_was_and_a_wrapped_list_is_one_value():
    assert set_values(TEXT, {"train.iterations": 40, "model.target": ["a", "b", "c"]}) == TEXT
    out = set_values(TEXT, {"model.target": ["a", "b"], "train.mixed_precision": "bf16"})
    assert changed_lines(TEXT, out) == ["-   target: [a, b,", "-            c]",
                                        '-   mixed_precision: "no"         # no | bf16',
                                        "+   target: [a, b]", "+   mixed_precision: bf16"]


def test_a_profiles_comment_replaces_the_old_one():
    from treegrpo.config.edit import Change

    out = set_values(TEXT, {"train.iterations": Change(300, "300", comment="# the paper's 300")})
    assert changed_lines(TEXT, out) == ["-   iterations: 40                # ~2.6 s each on 2 CPU cores",
                                        "+   iterations: 300               # the paper's 300"]


def test_a_key_the_file_lacks_is_refused_and_nothing_is_added():
    with pytest.raises(ParamsError, match="'train.iteration' is not a key"):
        set_values(TEXT, {"train.iteration": 3})


@pytest.mark.parametrize("value", [None, True, 3, 1e-5, 2.5e20, 0.5, "no", "on", "a: b", "a #b", "bf16", "",
                                   ["x", "y z"], {"hpsv2": 0.8, "clip_score": 0.2}])
def test_values_are_spelled_so_both_yaml_versions_read_them_back(value):
    text = render(value)
    assert read_yaml(text) == value and yaml.safe_load(text) == value


def test_every_key_of_params_yaml_is_found_with_its_lines():
    text = (REPO / "params.yaml").read_text()
    entries = parse_entries(text)
    leaves = {"lora.target_modules", "train.learning_rate", "reward.weights", "sampler.window.alpha",
              "reward.hpsv2.checkpoint", "tracking.min_improvement"}
    assert leaves <= set(entries)
    lora = entries["lora.target_modules"]
    assert lora.end - lora.start == 2  # the wrapped list: two lines, one value
    assert entries["reward.weights"].block and not entries["reward.stand_in_dir"].block
