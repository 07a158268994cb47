"""HPSv2.1, CLIPScore and Aesthetic on tiny random-weight CLIPs loaded through the real loader; hpsv2 parity."""

import importlib.util
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from treegrpo.rewards import stand_ins
from treegrpo.rewards.clip import AestheticReward, ClipScoreReward, HPSv2Reward
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration
PROMPTS = ["a red car", "a portrait of a woman in a yellow dress", "a green dragon over a castle"]


@pytest.fixture
def hpsv2_open_clip(monkeypatch):
    """hpsv2's vendored open_clip. Its factory has a stray `from turtle import forward`, which needs tkinter: where
    tkinter is missing (slim images), a stub stands in for the unused name."""
    if importlib.util.find_spec("hpsv2") is None:
        pytest.skip("hpsv2 is installed by scripts/setup.sh")
    if importlib.util.find_spec("tkinter") is None and "turtle" not in sys.modules:
        monkeypatch.setitem(sys.modules, "turtle", types.SimpleNamespace(forward=None))
    from hpsv2.src import open_clip

    return open_clip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-rewards")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 48, 40, generator=g)  # not square and not the model's size: resize + crop or pad happen


@pytest.fixture(scope="module")
def rewards(folder):
    return {
        "hpsv2": HPSv2Reward(**stand_ins.ensure_stand_in("hpsv2", folder), device="cpu", batch_size=2),
        "clip_score": ClipScoreReward(**stand_ins.ensure_stand_in("clip_score", folder), device="cpu", batch_size=2),
        "aesthetic": AestheticReward(**stand_ins.ensure_stand_in("aesthetic", folder), device="cpu", batch_size=2),
    }


@pytest.mark.parametrize("name", ["hpsv2", "clip_score", "aesthetic"])
def test_contract(rewards, images, name):
    reward = rewards[name]
    x = images.clone().requires_grad_(True)
    scores = reward(x, PROMPTS)
    assert scores.shape == (3,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert not scores.requires_grad and scores.device.type == "cpu"
    assert scores.std() > 0  # random weights still tell images apart
    torch.testing.assert_close(reward(images, PROMPTS), scores, rtol=0, atol=0)  # deterministic
    single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, scores, rtol=1e-5, atol=1e-6)  # batch of 2 + 1 == one at a time
    copy = pickle.loads(pickle.dumps(reward))  # travels without its model, reloads it
    assert copy._model is None
    torch.testing.assert_close(copy(images, PROMPTS), scores, rtol=0, atol=0)


def test_cosine_rewards_are_bounded_and_depend_on_the_prompt(rewards, images):
    for name in ("hpsv2", "clip_score"):
        a = rewards[name](images, PROMPTS)
        b = rewards[name](images, list(reversed(PROMPTS)))
        assert (a.abs() <= 1 + 1e-6).all() and not torch.allclose(a, b)


def test_aesthetic_ignores_the_prompt(rewards, images):
    a = rewards["aesthetic"](images, PROMPTS)
    torch.testing.assert_close(rewards["aesthetic"](images, ["", "", ""]), a, rtol=0, atol=0)


def test_model_loads_once(rewards, images):
    rewards["hpsv2"](images[:1], PROMPTS[:1])
    model = rewards["hpsv2"]._model
    rewards["hpsv2"](images[:1], PROMPTS[:1])
    assert rewards["hpsv2"]._model is model


@pytest.mark.parametrize("height, width", [(64, 64), (80, 80), (96, 80), (48, 40), (40, 72)],
                         ids=["square-model-size", "square", "portrait-down", "portrait-up", "landscape-up"])
def test_hps_parity_with_the_hpsv2_package(folder, hpsv2_open_clip, monkeypatch, height, width):
    """Same tiny weights, same PIL images: our HPSv2.1 equals `hpsv2.img_score.score(..., hps_version="v2.1")`, with
    the model and transform that `img_score.initialize_model` builds (its own arguments, `light_augmentation=True`:
    resize the longer side, pad), on square and non-square images (the tiny model is 64 px).

    (On the CPU to 1e-5. On a CUDA device hpsv2 scores under fp16 autocast: ours differs by ~2e-4 with
    reward.dtype float16, ~4e-4 in float32, measured on an H100; HPS values differ between models by ~1e-2.)"""
    import hpsv2.img_score as img_score

    files = stand_ins.ensure_stand_in("hpsv2", folder)
    checkpoint = folder / "hps_format.pt"  # the HPS release format: torch.save({'state_dict': ...})
    if not checkpoint.exists():
        stand_ins.build_tiny_clip(stand_ins.tiny_clip_config(folder), checkpoint, stand_ins.SEEDS["hpsv2"])
    ours = HPSv2Reward(model=files["model"], checkpoint=str(checkpoint), device="cpu")
    # hpsv2 builds ViT-H-14 with a pretrained tag that it downloads: let its own initialize_model() run with all of
    # its arguments, swapping only the architecture for the tiny one (in its vendored open_clip) and the tag for none
    hpsv2_open_clip.add_model_config(files["model"])
    build = img_score.create_model_and_transforms

    def tiny(model_name, pretrained, **kwargs):
        assert (model_name, pretrained) == ("ViT-H-14", "laion2B-s32B-b79K"), "hpsv2 changed how it builds HPS"
        return build("tiny-clip", None, **kwargs)

    monkeypatch.setattr(img_score, "create_model_and_transforms", tiny)
    monkeypatch.setattr(img_score, "model_dict", {})
    g = torch.Generator().manual_seed(height * 1000 + width)
    pils = [Image.fromarray((torch.rand(height, width, 3, generator=g) * 255).round().to(torch.uint8).numpy())
            for _ in PROMPTS]
    tol = 1e-5 if img_score.device == "cpu" else 1e-3  # hpsv2 autocasts to fp16 on CUDA
    for pil, prompt in zip(pils, PROMPTS, strict=True):
        theirs = img_score.score([pil], prompt, cp=str(checkpoint), hps_version="v2.1")
        assert ours([pil], [prompt]).item() == pytest.approx(float(np.float32(theirs[0])), abs=tol)
    # and a tensor batch scores as its 8-bit PIL images do
    batch = torch.stack([torch.from_numpy(np.asarray(p)).permute(2, 0, 1) / 255 for p in pils])
    torch.testing.assert_close(ours(batch, PROMPTS), ours(pils, PROMPTS), rtol=0, atol=1e-6)


def test_vit_h_14_state_dict_matches_hpsv2s(hpsv2_open_clip):
    """The real HPS checkpoint's keys fit open_clip 3's ViT-H-14 (checked on the meta device: no memory)."""
    import open_clip

    hps_open_clip = hpsv2_open_clip

    with torch.device("meta"):
        ours = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
        theirs = hps_open_clip.create_model("ViT-H-14", None, device="meta")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_wrong_architecture_for_checkpoint_is_a_user_error(folder, images):
    files = stand_ins.ensure_stand_in("hpsv2", folder)
    with pytest.raises(UserError, match="does not fit open_clip 'ViT-B-32'"):
        HPSv2Reward(model="ViT-B-32", checkpoint=files["checkpoint"], device="cpu")(images[:1], PROMPTS[:1])


def test_unknown_architecture_and_missing_weights(folder, images):
    with pytest.raises(UserError, match="not an open_clip architecture"):
        HPSv2Reward(model="ViT-Q-99", checkpoint="x.pt", device="cpu")(images[:1], PROMPTS[:1])
    with pytest.raises(UserError, match=r"reward\.hpsv2\.checkpoint.*HPS_v2\.1_compressed\.pt \(~1\.9 GB"):
        HPSv2Reward(model="ViT-H-14", checkpoint=str(folder / "HPS_v2.1_compressed.pt"), device="cpu")(
            images[:1], PROMPTS[:1])
