"""What `treegrpo train` prints: one progress bar with reward and loss, the per-iteration JSON line only at debug level
(`treegrpo -v`), and a prompt cut by `model.max_sequence_length` said once, in our words, not as diffusers' warning
(which prints the wrong slice of the prompt)."""

import argparse
import dataclasses
import logging

import pytest
import torch
import yaml

from tests.conftest import REPO, make_params

pytestmark = pytest.mark.integration


def test_train_shows_a_bar_with_reward_and_loss_and_the_json_line_only_with_v(tiny_pipeline_dir, tmp_path,
                                                                               monkeypatch, capsys, caplog):
    from treegrpo.cli.train import run as train

    monkeypatch.delenv("RANK", raising=False)
    _, raw = make_params(tiny_pipeline_dir, tmp_path / "out", model__device="cpu", train__iterations=2,
                         train__prompts_per_iteration=1, sampler__branching=2, sampler__depth=1,
                         tracking__uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "prompts.txt").write_text("a red car\n")
    caplog.set_level(logging.DEBUG)
    assert train(argparse.Namespace(params=str(tmp_path / "params.yaml"), prompts=str(tmp_path / "prompts.txt"))) == 0
    figures = [r for r in caplog.records if r.name == "treegrpo.cli.train" and "iteration" in r.getMessage()]
    assert len(figures) == 2 and all(r.levelno == logging.DEBUG for r in figures)  # hidden unless -v
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and '{"' in r.getMessage()]
    err = capsys.readouterr().err
    assert "train: 100%" in err and "reward=" in err and "loss=" in err and ("s/it" in err or "it/s" in err)
    assert '{"reward' not in err and "Loading" not in err  # one bar: not the weights' loading bars


def test_a_cut_prompt_is_said_once_and_diffusers_wrong_slice_is_not(tiny_pipeline_dir, caplog):
    from treegrpo.config import load_params
    from treegrpo.models.pipeline import load_pipeline
    from treegrpo.models.sd3 import encode_prompts

    model = dataclasses.replace(load_params(REPO / "params.yaml").model, pretrained=str(tiny_pipeline_dir),
                                device="cpu")
    pipe = load_pipeline(model)
    long = "a red square to the left of a blue triangle above a green circle and two yellow squares " * 3
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # the same prompt again (a later iteration): not said again
        encode_prompts(pipe, [long, "a cat"], torch.device("cpu"), 16)
    cut = [r.getMessage() for r in caplog.records if "model.max_sequence_length=16" in r.getMessage()]
    assert len(cut) == 1 and "1 prompt(s)" in cut[0]
    assert not [r for r in caplog.records if "`max_sequence_length` is set to" in r.getMessage()]
    caplog.clear()
    encode_prompts(pipe, ["a cat", "a dog"], torch.device("cpu"), 16)  # short prompts: nothing to say
    assert not caplog.records
