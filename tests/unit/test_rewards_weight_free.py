"""The weight-free rewards against values worked out by hand, and the reward protocol's common contract."""

import io
import math
import pickle

import pytest
import torch
from PIL import Image

from treegrpo.rewards.weight_free import PALETTE, ColorFraction, JpegCompressibility, named_color


def _solid(rgb, n=1, size=8) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size).clone()


@pytest.mark.parametrize("prompt,color", [
    ("a red car", "red"), ("A RED car", "red"), ("a grey cat", "gray"), ("a car, red and blue", "red"),
    ("a photo of a cat", None), ("bored student", None),  # "red" inside a word is not a colour
])
def test_named_color(prompt, color):
    assert named_color(prompt) == color


def test_all_red_image_scores_one_for_red_and_zero_for_blue():
    scores = ColorFraction()(_solid((1, 0, 0), n=2), ["a red car", "a blue car"])
    assert scores.tolist() == [1.0, 0.0]  # blue is sqrt(2) > RADIUS away


def test_partial_colours_by_hand():
    # orange anchor is (1, .5, 0): distance 0.5 from pure red -> 1 - 0.5 = 0.5
    assert ColorFraction()(_solid((1, 0, 0)), ["an orange car"]).item() == pytest.approx(0.5)
    # uniform mid-gray against red: distance sqrt(3 * 0.25) -> 1 - sqrt(0.75)
    assert ColorFraction()(_solid((0.5, 0.5, 0.5)), ["a red car"]).item() == pytest.approx(1 - math.sqrt(0.75))
    # half the pixels red, half blue: 0.5 for either colour
    img = _solid((1, 0, 0))
    img[:, :, :4] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert ColorFraction()(torch.cat([img, img]), ["a red car", "a blue car"]).tolist() == [0.5, 0.5]


def test_prompt_without_colour_scores_zero():
    assert ColorFraction()(_solid((1, 0, 0)), ["a photo of a cat"]).item() == 0.0


def test_every_palette_colour_scores_one_on_itself():
    names = list(PALETTE)
    images = torch.cat([_solid(PALETTE[n]) for n in names])
    assert ColorFraction()(images, [f"a {n} thing" for n in names]).tolist() == [1.0] * len(names)


def test_jpeg_is_minus_the_kilobytes_pil_writes():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    images[1] = 0.5  # a flat image compresses better than noise
    scores = JpegCompressibility()(images, ["x", "y"])
    for img, s in zip(images, scores, strict=True):
        buf = io.BytesIO()
        pixels = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        assert s.item() == pytest.approx(-buf.tell() / 1000)
    assert scores[1] > scores[0]


@pytest.mark.parametrize("reward", [ColorFraction(), JpegCompressibility()], ids=["color", "jpeg"])
def test_protocol_contract(reward):
    torch.manual_seed(0)
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    prompts = ["a red car", "a green tree", "a blue sky"]
    scores = reward(images, prompts)
    assert scores.shape == (3,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert not scores.requires_grad
    torch.testing.assert_close(reward(images, prompts), scores, rtol=0, atol=0)  # deterministic
    single = torch.cat([reward(images[i : i + 1], prompts[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, scores, rtol=0, atol=0)  # batch == one at a time
    torch.testing.assert_close(pickle.loads(pickle.dumps(reward))(images, prompts), scores, rtol=0, atol=0)


@pytest.mark.parametrize("reward", [ColorFraction(), JpegCompressibility()], ids=["color", "jpeg"])
def test_pil_input_equals_8bit_tensor_input(reward):
    torch.manual_seed(0)
    images = (torch.rand(2, 3, 16, 16) * 255).round() / 255  # exactly representable in 8 bits
    pils = [Image.fromarray((im * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) for im in images]
    torch.testing.assert_close(reward(pils, ["a red car", "a pink cat"]), reward(images, ["a red car", "a pink cat"]))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="one per image"):
        ColorFraction()(torch.rand(2, 3, 8, 8), ["a red car"])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        JpegCompressibility()(torch.rand(3, 8, 8), ["a red car"])
