"""The paper profile applies over the embedded default, validates, keeps comments and changes only its keys."""

import shutil

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.cli import main
from treegrpo.cli.profile import apply_profile


def test_paper_profile_applies_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    assert main(["profile", "paper", "--params", str(params)]) == 0
    text = params.read_text()
    new = yaml.safe_load(text)
    old = yaml.safe_load((REPO / "params.yaml").read_text())
    assert new["model"]["pretrained"] == "stabilityai/stable-diffusion-3.5-medium"
    assert new["model"]["resolution"] == 512 and new["train"]["learning_rate"] == 1e-5
    assert new["sampler"]["branching"] == 3 and new["sampler"]["guidance_scale"] == 4.5
    assert new["train"]["weight_decay"] == old["train"]["weight_decay"]  # untouched keys stay
    assert "# the paper's CFG" in text  # comments survive the round trip


def test_profile_with_unknown_key_is_refused(tmp_path, monkeypatch):
    import treegrpo.cli.profile as prof

    (tmp_path / "typo.yaml").write_text("train:\n  learnin_rate: 1.0\n")
    monkeypatch.setattr(prof, "PROFILES", tmp_path)
    from treegrpo.errors import UserError

    with pytest.raises(UserError, match="train.learnin_rate"):
        apply_profile("typo", REPO / "params.yaml")


def test_unknown_profile_exits_2(capsys):
    assert main(["profile", "nope", "--dry-run"]) == 2
    assert "shipped profiles" in capsys.readouterr().err
