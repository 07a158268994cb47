"""The `pretrain` section: a good section builds; every kind of bad value fails naming its dotted key."""

import pytest

from treegrpo.config import ParamsError, build
from treegrpo.config.pretrain import PretrainParams

GOOD = {
    "seed": 0, "output": "models/world-sd3", "report": "outputs/pretrain/pretrain.json", "images_per_prompt": 8,
    "vae_steps": 500, "vae_batch_size": 16,
    "vae_crop": 32, "vae_learning_rate": 3e-3, "vae_kl_weight": 1e-6, "steps": 1000, "batch_size": 32,
    "learning_rate": 2e-3, "weight_decay": 0.01, "caption_dropout": 0.1, "logit_mean": 0.0, "logit_std": 1.0,
    "ema_decay": 0.99, "scheduler_shift": 1.0,
}


def test_good_section_builds_with_floats_widened():
    p = build(PretrainParams, {**GOOD, "logit_std": 1}, "pretrain")
    assert p.steps == 1000 and p.logit_std == 1.0 and isinstance(p.logit_std, float)


@pytest.mark.parametrize("key, value, fix", [
    ("output", " ", "folder path"),
    ("report", "models/world-sd3/pretrain.json", "outside pretrain.output"),
    ("report", "outputs/pretrain/report.txt", ".json file"),
    ("images_per_prompt", 0, ">= 1"),
    ("vae_steps", -1, ">= 0"),
    ("steps", -5, ">= 0"),
    ("batch_size", 0, ">= 1"),
    ("vae_batch_size", 0, ">= 1"),
    ("learning_rate", 0.0, "(0, 1)"),
    ("vae_learning_rate", 2.0, "(0, 1)"),
    ("vae_crop", 20, "multiple of 8"),
    ("vae_kl_weight", -1e-3, ">= 0"),
    ("weight_decay", -0.1, ">= 0"),
    ("caption_dropout", 1.0, "[0, 1)"),
    ("ema_decay", 1.0, "[0, 1)"),
    ("scheduler_shift", 0.0, "> 0"),
    ("logit_std", 0.0, "> 0"),
    ("steps", 10.5, "expected int"),  # a float for an int
])
def test_bad_value_names_key_value_and_fix(key, value, fix):
    with pytest.raises(ParamsError) as err:
        build(PretrainParams, {**GOOD, key: value}, "pretrain")
    message = str(err.value)
    assert f"pretrain.{key}={value!r}" in message and fix in message


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ParamsError, match=r"unknown key\(s\) pretrain\.epochs"):
        build(PretrainParams, {**GOOD, "epochs": 3}, "pretrain")
    missing = dict(GOOD)
    del missing["caption_dropout"]
    with pytest.raises(ParamsError, match=r"missing key\(s\) pretrain\.caption_dropout"):
        build(PretrainParams, missing, "pretrain")
