"""The world's prompt grammar: canonical prompts, the parser as their inverse, and clear errors outside it."""

import pytest

from treegrpo.utils.errors import UserError
from treegrpo.world.grammar import CATEGORIES, COLOURS, RELATIONS, SHAPES, Group, Scene, all_scenes, parse_prompt
from treegrpo.world.split import world_scenes


def test_vocabulary_covers_the_brief():
    assert len(SHAPES) >= 3 and len(COLOURS) >= 6
    assert set(RELATIONS) == {"left of", "right of", "above", "below"}
    assert CATEGORIES == ("single_object", "colour", "two_objects", "counting", "position", "colour_attribution")


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_round_trip_over_every_prompt_of_the_split(split):
    scenes = world_scenes(split)
    assert scenes
    for scene in scenes:
        assert parse_prompt(scene.prompt) == scene


def test_every_scene_has_a_distinct_prompt_and_counts_by_category():
    scenes = all_scenes()
    assert len({s.prompt for s in scenes}) == len(scenes) == 294
    counts = {c: sum(s.category == c for s in scenes) for c in CATEGORIES}
    # 3 shapes, 6 colours, counts 2-4 (with or without a colour), 6 ordered shape pairs, 4 relations, 30 colour pairs
    assert counts == {"single_object": 3, "colour": 18, "two_objects": 6, "counting": 63, "position": 24,
                      "colour_attribution": 180}


@pytest.mark.parametrize(("scene", "prompt", "category"), [
    (Scene((Group("circle"),)), "a circle", "single_object"),
    (Scene((Group("square", 1, "orange"),)), "an orange square", "colour"),
    (Scene((Group("triangle", 3),)), "three triangles", "counting"),
    (Scene((Group("circle", 2, "red"),)), "two red circles", "counting"),
    (Scene((Group("circle"), Group("square"))), "a circle and a square", "two_objects"),
    (Scene((Group("circle", 1, "red"), Group("square", 1, "blue"))), "a red circle and a blue square",
     "colour_attribution"),
    (Scene((Group("circle"), Group("square")), "left of"), "a circle to the left of a square", "position"),
    (Scene((Group("triangle"), Group("circle")), "below"), "a triangle below a circle", "position"),
])
def test_canonical_prompt_and_category(scene, prompt, category):
    assert scene.prompt == prompt and scene.category == category
    assert parse_prompt(prompt) == scene


def test_parser_ignores_case_spaces_and_a_full_stop():
    assert parse_prompt("  A Red   Circle. ") == Scene((Group("circle", 1, "red"),))
    assert parse_prompt("one circle") == Scene((Group("circle"),))


@pytest.mark.parametrize(("prompt", "why"), [
    ("a photo of a cat", "not a noun phrase"),
    ("a pink circle", "not a noun phrase"),
    ("two circle", "mixes a count of 2 with a singular noun"),
    ("a circles", "mixes a count of 1 with a plural noun"),
    ("five circles", "not a noun phrase"),
    ("a circle and a circle", "two groups of the same shape"),
    ("a red circle and a square", "name a colour for both objects or for neither"),
    ("a red circle and a red square", "both objects are red"),
    ("a red circle above a blue square", "a relation scene names no colours"),
    ("two circles and a square", "one object of each shape"),
    ("a circle and a square and a triangle", "not a noun phrase"),
    ("", "outside the world's grammar"),
])
def test_prompt_outside_the_grammar_names_the_prompt_and_what_it_accepts(prompt, why):
    with pytest.raises(UserError) as err:
        parse_prompt(prompt)
    message = str(err.value)
    assert message.startswith(f"prompt {prompt!r}: ") and why in message
    assert "it accepts 'a circle', 'a red circle'" in message and ", ".join(COLOURS) in message


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"shape": "hexagon"}, "Group.shape='hexagon'"),
    ({"shape": "circle", "count": 5}, "Group.count=5: must be 1 to 4"),
    ({"shape": "circle", "colour": "pink"}, "Group.colour='pink'"),
])
def test_bad_group_names_the_field(kwargs, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        Group(**kwargs)


def test_relation_needs_two_groups():
    with pytest.raises(ValueError, match="a relation needs two groups"):
        Scene((Group("circle"),), "above")
