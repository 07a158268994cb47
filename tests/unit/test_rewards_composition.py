"""The `composition` reward on the world's own renders: exact on clean ones, stable under blur and noise, and lower
by the hand-worked fraction when a render breaks one constraint (constraint lists in the module docstring)."""

import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from tests.conftest import REPO
from treegrpo.config import load_params
from treegrpo.rewards.composition import Composition, CompositionAccuracy, detect_objects, score_composition
from treegrpo.rewards.registry import REWARDS, build_reward
from treegrpo.utils.errors import UserError
from treegrpo.world.grammar import CATEGORIES, COLOURS, all_scenes, parse_prompt
from treegrpo.world.render import render

SCENES = all_scenes()


def _accuracy_by_category(size: int, seeds, step: int = 1, perturb=lambda image, seed: image) -> dict[str, float]:
    hits, totals = Counter(), Counter()
    for scene in SCENES[::step]:
        for seed in seeds:
            score = score_composition(perturb(render(scene, size, seed), seed), scene.prompt)
            assert score.category == scene.category
            hits[scene.category] += score.strict
            totals[scene.category] += 1
    assert set(totals) == set(CATEGORIES)
    return {c: hits[c] / totals[c] for c in totals}


def test_clean_renders_score_one_in_every_category_at_64_px():
    accuracy = _accuracy_by_category(64, seeds=range(3))
    assert accuracy == dict.fromkeys(CATEGORIES, 1.0)


def test_clean_renders_score_one_at_256_px():
    accuracy = _accuracy_by_category(256, seeds=[7], step=3)
    assert accuracy == dict.fromkeys(CATEGORIES, 1.0)


def _blur(image: Image.Image, seed: int) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=image.width / 64))  # 1 px at 64 px


def _noise(image: Image.Image, seed: int) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float64) / 255
    return np.clip(pixels + np.random.default_rng(seed).normal(0, 0.04, pixels.shape), 0, 1)


@pytest.mark.parametrize("perturb", [_blur, _noise], ids=["blur", "noise"])
def test_mild_blur_and_noise_keep_strict_accuracy_above_95_percent(perturb):
    accuracy = _accuracy_by_category(64, seeds=[11, 12], perturb=perturb)
    assert min(accuracy.values()) >= 0.95, accuracy


@pytest.mark.parametrize(("prompt", "drawn", "fraction", "broken"), [
    # present, count 2, red, nothing else: three red circles break only the count
    ("two red circles", "three red circles", 3 / 4, {"circle: count 2"}),
    # present, count 1, red, nothing else
    ("a red circle", "a blue circle", 3 / 4, {"circle: red"}),
    # present, count 1, nothing else
    ("a circle", "two circles", 2 / 3, {"circle: count 1"}),
    ("a circle", "a circle and a square", 2 / 3, {"nothing else"}),
    # present and count per shape, nothing else
    ("a circle and a triangle", "a circle", 3 / 5, {"triangle: present", "triangle: count 1"}),
    # present, count, colour per shape, nothing else: the colours bound to the wrong shapes
    ("a red circle and a blue square", "a blue circle and a red square", 5 / 7, {"circle: red", "square: blue"}),
    # present and count per shape, the relation, nothing else: positions swapped
    ("a circle to the left of a square", "a circle to the right of a square", 5 / 6, {"circle left of square"}),
    ("a triangle above a square", "a triangle below a square", 5 / 6, {"triangle above square"}),
])
def test_one_broken_constraint_lowers_the_score_by_the_hand_worked_fraction(prompt, drawn, fraction, broken):
    for seed in range(5):
        score = score_composition(render(parse_prompt(drawn), 64, seed), prompt)
        assert {c.name for c in score.constraints if not c.met} == broken, (seed, score)
        assert score.fraction == pytest.approx(fraction) and not score.strict


def test_blank_and_shapeless_images():
    blank = np.full((64, 64, 3), 0.9)
    # 'a circle': present no, count 1 no, nothing else yes
    assert score_composition(blank, "a circle").fraction == pytest.approx(1 / 3)
    bar = blank.copy()
    bar[30:36, 10:50] = np.array([215, 35, 45]) / 255  # a long red bar: an object of no shape
    assert [o.shape for o in detect_objects(bar)] == [None]
    assert score_composition(bar, "a red square").fraction == 0.0


def _disc(image: np.ndarray, cx: float, cy: float, radius: float, rgb) -> np.ndarray:
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]] + 0.5
    image[(xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2] = np.array(rgb) / 255
    return image


def test_an_object_whose_edge_drifts_to_another_hue_is_one_object_of_its_main_colour():
    # a yellow disc of radius 10 px inside an orange ring 2 px wide (~125 px, above the minimum area of 16 px): the
    # ring is the disc's edge, not a second, shapeless orange object
    image = _disc(np.full((64, 64, 3), 0.9), 32, 32, 12, COLOURS["orange"])
    image = _disc(image, 32, 32, 10, COLOURS["yellow"])
    objects = detect_objects(image)
    assert [(o.shape, o.colour) for o in objects] == [("circle", "yellow")]
    assert score_composition(image, "a yellow circle").strict


def test_a_two_tone_object_has_no_colour_and_touching_objects_are_one():
    # a square, left half green, right half blue: no colour holds 60% of it ('a green square': colour not met, 3/4)
    image = np.full((64, 64, 3), 0.9)
    image[20:40, 20:30], image[20:40, 30:40] = np.array(COLOURS["green"]) / 255, np.array(COLOURS["blue"]) / 255
    assert [(o.shape, o.colour) for o in detect_objects(image)] == [("square", None)]
    score = score_composition(image, "a green square")
    assert {c.name for c in score.constraints if not c.met} == {"square: green"}
    # a red and a blue disc that touch are one shapeless object: 'a red circle and a blue circle' is no prompt of
    # the grammar, so 'two circles' (present no, count no, nothing else no)
    touching = _disc(_disc(np.full((64, 64, 3), 0.9), 22, 32, 10, COLOURS["red"]), 42, 32, 10, COLOURS["blue"])
    assert [o.shape for o in detect_objects(touching)] == [None]
    assert score_composition(touching, "two circles").fraction == 0.0


@pytest.mark.parametrize(("prompt", "n"), [
    ("a circle", 3), ("a red circle", 4), ("two circles", 3), ("two red circles", 4), ("a circle and a square", 5),
    ("a red circle and a blue square", 7), ("a circle above a square", 6),
])
def test_constraint_count_per_category(prompt, n):
    assert len(score_composition(render(parse_prompt(prompt), 64, 0), prompt).constraints) == n


def test_reward_call_tensor_and_pil_agree_deterministic_and_picklable():
    prompts = ["two red circles", "a red circle", "a circle to the left of a square"]
    drawn = ["three red circles", "a red circle", "a circle to the right of a square"]
    images = [render(parse_prompt(p), 64, 2) for p in drawn]
    tensor = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in images]).float() / 255
    reward = pickle.loads(pickle.dumps(build_reward("composition", load_params(REPO / "params.yaml").reward)))
    scores = reward(tensor, prompts)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    assert scores.tolist() == pytest.approx([3 / 4, 1.0, 5 / 6])
    assert torch.equal(reward(images, prompts), scores) and torch.equal(reward(tensor, prompts), scores)
    assert CompositionAccuracy()(images, prompts).tolist() == [0.0, 1.0, 0.0]
    assert REWARDS["composition"] is Composition and REWARDS["composition_accuracy"] is CompositionAccuracy


def test_a_prompt_outside_the_grammar_raises_instead_of_scoring_zero():
    image = render(parse_prompt("a circle"), 64, 0)
    with pytest.raises(UserError, match="prompt 'a photo of a cat': .* it accepts"):
        Composition()([image], ["a photo of a cat"])
