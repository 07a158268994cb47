"""The fixed held-out split of compositions: disjoint, complete, every category in both, and what it holds out."""

import pytest

from treegrpo.world.grammar import CATEGORIES, COLOURS, INVERSE, SHAPES, all_scenes
from treegrpo.world.split import (
    HELDOUT_ARRANGEMENTS,
    HELDOUT_COLOURS,
    HELDOUT_COUNTS,
    world_prompts,
    world_scenes,
)


def test_splits_are_sorted_disjoint_and_cover_the_grammar():
    train, heldout = world_prompts("train"), world_prompts("heldout")
    assert train == sorted(train) and heldout == sorted(heldout)
    assert not set(train) & set(heldout)
    assert set(train) | set(heldout) == {s.prompt for s in all_scenes()}
    assert (len(train), len(heldout)) == (201, 93)  # the recorded split (module docstring)


def test_every_category_is_in_both_splits():
    for split in ("train", "heldout"):
        assert {s.category for s in world_scenes(split)} == set(CATEGORIES)


def _bindings(scenes):
    return {(g.shape, g.colour) for s in scenes for g in s.groups if g.colour}


def test_no_training_prompt_holds_a_heldout_composition():
    train = world_scenes("train")
    assert not _bindings(train) & set(HELDOUT_COLOURS.items())
    assert not {(s.groups[0].shape, s.groups[0].count) for s in train if s.category == "counting"} & HELDOUT_COUNTS
    arrangements = {(s.groups[0].shape, s.relation, s.groups[1].shape) for s in train if s.relation}
    mirrored = {(b, INVERSE[r], a) for a, r, b in HELDOUT_ARRANGEMENTS}
    assert not arrangements & (HELDOUT_ARRANGEMENTS | mirrored)


def test_every_part_of_a_heldout_composition_is_trained():
    train = world_scenes("train")
    bindings = _bindings(train)
    assert {c for _, c in bindings} == set(COLOURS) and {s for s, _ in bindings} == set(SHAPES)
    counts = {(s.groups[0].shape, s.groups[0].count) for s in train if s.category == "counting"}
    assert {s for s, _ in counts} == set(SHAPES) and {n for _, n in counts} == {2, 3, 4}
    assert {s.relation for s in train if s.relation} == {"left of", "right of", "above", "below"}


def test_heldout_is_exactly_the_scenes_with_a_heldout_composition():
    heldout = world_scenes("heldout")
    for scene in heldout:
        g = scene.groups
        reasons = [
            any(x.colour and HELDOUT_COLOURS[x.shape] == x.colour for x in g),
            scene.category == "counting" and (g[0].shape, g[0].count) in HELDOUT_COUNTS,
            scene.relation is not None and ((g[0].shape, scene.relation, g[1].shape) in HELDOUT_ARRANGEMENTS
                                            or (g[1].shape, INVERSE[scene.relation], g[0].shape)
                                            in HELDOUT_ARRANGEMENTS),
            scene.category == "two_objects" and {x.shape for x in g} == {"circle", "triangle"},
            scene.prompt == "a triangle",
        ]
        assert any(reasons), scene.prompt


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match="split='eval': use one of train, heldout, rl, unseen"):
        world_prompts("eval")


def test_rl_and_unseen_split_the_train_prompts_a_fifth_unseen_in_every_category():
    train, rl, unseen = (world_scenes(split) for split in ("train", "rl", "unseen"))
    assert [s.prompt for s in rl] == sorted(s.prompt for s in rl) and not {s.prompt for s in rl} & {
        s.prompt for s in unseen}
    assert sorted(s.prompt for s in rl + unseen) == [s.prompt for s in train]
    assert (len(rl), len(unseen)) == (160, 41)  # the recorded split (module docstring)
    for split in (rl, unseen):
        assert {s.category for s in split} == set(CATEGORIES)
        assert {g.colour for s in split for g in s.groups} == {None, *COLOURS}
        assert {g.shape for s in split for g in s.groups} == set(SHAPES)
    # positions 2, 7, 12, ... of each category's sorted prompts: 126 -> 25, 36 -> 7, 18 -> 4, 15 -> 3, and the middle
    # prompt of the 4 two-object and 2 single-object ones
    counts = {c: sum(s.category == c for s in unseen) for c in CATEGORIES}
    assert counts == {"colour_attribution": 25, "counting": 7, "position": 4, "colour": 3, "two_objects": 1,
                      "single_object": 1}
    singles = [s.prompt for s in train if s.category == "single_object"]
    assert singles == ["a circle", "a square"] and [s.prompt for s in unseen if not s.groups[0].colour
                                                     and s.category == "single_object"] == ["a square"]
