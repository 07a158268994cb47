"""The renderer: deterministic in its seed, varied across seeds, and drawing what the scene says."""

import itertools

import numpy as np
import pytest

from treegrpo.world.grammar import COLOURS, all_scenes, parse_prompt
from treegrpo.world.render import GAP, MARGIN, _apart, _relation_holds, layout, render

PROMPTS = ["a circle", "three red squares", "a red circle and a blue square", "a triangle below a circle"]


@pytest.mark.parametrize("size", [64, 512])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_same_seed_same_bytes_different_seed_different_image(prompt, size):
    scene = parse_prompt(prompt)
    image = render(scene, size, seed=3)
    assert image.mode == "RGB" and image.size == (size, size)
    assert render(scene, size, seed=3).tobytes() == image.tobytes()
    assert render(scene, size, seed=4).tobytes() != image.tobytes()


def test_layouts_respect_count_colour_margins_gaps_and_relations():
    for scene, seed in itertools.product(all_scenes(), range(8)):
        objects = layout(scene, seed)
        assert [o.shape for o in objects] == [g.shape for g in scene.groups for _ in range(g.count)]
        for group in scene.groups:
            colours = {o.colour for o in objects if o.shape == group.shape}
            assert colours == {group.colour} if group.colour else len(colours) == 1 and colours <= set(COLOURS)
        if len(scene.groups) == 2:
            assert objects[0].colour != objects[1].colour  # unnamed colours differ too, so the two read apart
        for o in objects:
            assert MARGIN - 1e-9 <= o.cx - o.side / 2 and o.cx + o.side / 2 <= 1 - MARGIN + 1e-9
            assert MARGIN - 1e-9 <= o.cy - o.side / 2 and o.cy + o.side / 2 <= 1 - MARGIN + 1e-9
        assert all(_apart(a, b) for a, b in itertools.combinations(objects, 2)), (scene.prompt, seed, GAP)
        if scene.relation:
            assert _relation_holds(objects[0], objects[1], scene.relation), (scene.prompt, seed)


def test_left_of_puts_the_first_shape_left():
    for seed in range(20):
        first, second = layout(parse_prompt("a circle to the left of a square"), seed)
        assert first.shape == "circle" and second.cx - first.cx >= (first.side + second.side) / 2 + GAP
        assert abs(second.cy - first.cy) <= (second.cx - first.cx) / 2


def test_background_is_light_and_nearly_grey():
    for seed in range(20):
        pixels = np.asarray(render(parse_prompt("a circle"), 64, seed), dtype=np.float64) / 255
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]  # (4, 3): inside MARGIN, never under an object
        high, low = corners.max(1), corners.min(1)
        assert (high >= 0.8).all() and ((high - low) / high <= 0.1).all()


def test_the_layout_does_not_depend_on_the_size():
    scene = parse_prompt("two green triangles")
    small = np.asarray(render(scene, 64, 5), dtype=np.float64)
    large = np.asarray(render(scene, 256, 5).resize((64, 64)), dtype=np.float64)
    assert np.abs(small - large).mean() < 4  # 8-bit levels: the same picture, resampled


def test_too_small_a_size_is_refused():
    with pytest.raises(ValueError, match="size=8: the world's shapes need at least 16 px"):
        render(parse_prompt("a circle"), 8, 0)
