"""The paper profile applies over the embedded default, validates, keeps comments and changes only its keys: `git diff
params.yaml` shows the profile's values and nothing else, and no comment its values make false."""

import difflib
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


def test_paper_profile_diff_shows_only_its_values_and_drops_their_old_comments(tmp_path):
    from treegrpo.config.edit import parse_entries

    old_text = (REPO / "params.yaml").read_text()
    text = apply_profile("paper", REPO / "params.yaml")
    diff = [line for line in difflib.ndiff(old_text.splitlines(), text.splitlines()) if line[:1] in "+-"]
    added = [line[2:] for line in diff if line[0] == "+"]
    profile = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
    changed = {k for k, e in parse_entries(text).items() if any(text.splitlines()[e.start] == a for a in added)}
    # every added line is the line of a key the profile sets (or an entry of a mapping it sets: reward.weights)
    assert changed and all(key.split(".")[0] in profile for key in changed)
    assert {"train.iterations", "model.pretrained", "reward.stand_in_dir", "reward.weights.hpsv2"} <= changed
    assert len(added) == len(changed)
    for line in old_text.splitlines():  # nothing the profile leaves alone is re-spelled
        if line.lstrip().startswith(("revision:", "target_modules:", "attn.add_v_proj", "hub_revision:")):
            assert line in text.splitlines()
    lines = {e.dotted: text.splitlines()[e.start] for e in parse_entries(text).values()}
    assert "#" not in lines["train.iterations"]  # its comment described 40 iterations on 2 CPU cores
    assert "#" not in lines["model.resolution"]  # "an 8x8 latent": false at 512 px
    assert lines["reward.stand_in_dir"].endswith("# the real weight files (reward.hpsv2.checkpoint, ...), not the "
                                                 "tiny stand-ins")  # the profile's own comment


def test_profile_with_unknown_key_is_refused(tmp_path, monkeypatch):
    import treegrpo.cli.profile as prof

    (tmp_path / "typo.yaml").write_text("train:\n  learnin_rate: 1.0\n")
    monkeypatch.setattr(prof, "PROFILES", tmp_path)
    from treegrpo.utils.errors import UserError

    with pytest.raises(UserError, match="train.learnin_rate"):
        apply_profile("typo", REPO / "params.yaml")


def test_unknown_profile_exits_2(capsys):
    assert main(["profile", "nope", "--dry-run"]) == 2
    assert "shipped profiles" in capsys.readouterr().err
