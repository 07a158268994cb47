"""`treegrpo fetch`: what the Prefect flow retries before training. It loads every reward model once and fails,
naming the params key, on a file that is missing or can't be downloaded (the tests run with HF_HUB_OFFLINE=1)."""

import dataclasses

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.cli import main
from treegrpo.config import load_params
from treegrpo.recipes.fetch import fetch, reward_names
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration


@pytest.fixture
def params(tiny_pipeline_dir, tmp_path):
    p = load_params(REPO / "params.yaml")
    return dataclasses.replace(
        p, model=dataclasses.replace(p.model, pretrained=str(tiny_pipeline_dir), device="cpu"),
        eval=dataclasses.replace(p.eval, rewards=["hpsv2", "image_reward", "aesthetic", "clip_score",
                                                  "jpeg_compressibility", "color_fraction"]),
        reward=dataclasses.replace(p.reward, stand_in_dir=str(tmp_path / "stand-ins"), device="cpu"))


def test_every_training_and_evaluation_reward_is_loaded_once(params):
    assert reward_names(params) == ["composition", "hpsv2", "image_reward", "aesthetic", "clip_score",
                                    "jpeg_compressibility", "color_fraction"]  # training's first, each once
    done = {f.what: f.status for f in fetch(params)}
    assert done == {
        "base model": "local folder",
        "reward composition": "weight-free: nothing to fetch",
        "reward hpsv2": "loaded (tiny random-weight stand-in)",
        "reward image_reward": "loaded (tiny random-weight stand-in)",
        "reward aesthetic": "loaded (tiny random-weight stand-in)",
        "reward clip_score": "loaded (tiny random-weight stand-in)",
        "reward jpeg_compressibility": "weight-free: nothing to fetch",
        "reward color_fraction": "weight-free: nothing to fetch",
    }


def test_a_reward_file_that_cannot_be_downloaded_names_its_key(params):
    real = dataclasses.replace(params, reward=dataclasses.replace(params.reward, stand_in_dir=None),
                               eval=dataclasses.replace(params.eval, rewards=("hpsv2",)))
    with pytest.raises(UserError, match=r"reward.hpsv2.checkpoint='hf://xswu/HPSv2/HPS_v2.1_compressed.pt'.*"
                                        r"not in the local Hugging Face cache"):
        fetch(real, base_model=False)


def test_base_model_hub_id_offline_and_a_folder_that_is_not_a_pipeline(params, tmp_path):
    hub = dataclasses.replace(params.model, pretrained="stabilityai/stable-diffusion-3.5-medium")
    with pytest.raises(UserError, match="(?s)stable-diffusion-3.5-medium.*could not load it from the hub.*hf auth "
                                        "login"):
        fetch(dataclasses.replace(params, model=hub), rewards=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no model_index.json"):
        fetch(dataclasses.replace(params, model=dataclasses.replace(params.model, pretrained=str(empty))),
              rewards=False)


def test_cli_prints_what_it_did_and_exits_2_on_a_missing_file(params, tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["pretrained"] = params.model.pretrained
    raw["eval"]["rewards"] = ["color_fraction"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["fetch", "--params", str(path)]) == 0
    out = capsys.readouterr().out
    assert "base model: local folder" in out and "reward color_fraction: weight-free" in out
    raw["reward"]["aesthetic"]["head"] = str(tmp_path / "missing.pth")
    raw["reward"]["stand_in_dir"] = None
    raw["eval"]["rewards"] = ["aesthetic"]
    path.write_text(yaml.safe_dump(raw))
    assert main(["fetch", "--params", str(path), "--skip-base-model"]) == 2
    assert "reward.aesthetic" in capsys.readouterr().err
