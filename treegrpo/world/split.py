"""The fixed held-out split of compositions: what pretraining and RL training never see, and evaluation scores.

A prompt is held out when it contains any held-out composition below; every other prompt of the grammar is a
training prompt. Each held-out part (a colour, a shape, a count, a relation) still appears in training, only never in
that combination, so held-out accuracy measures composition, not vocabulary.

- Colour-shape bindings `HELDOUT_COLOURS` (3 of 18, one per shape, three different colours): blue circles, red
  squares, yellow triangles are never drawn in training, in any category (colour, counting with a colour, colour
  attribution); blue, red and yellow are trained on the other shapes. This is the attribute-binding test.
- Shape-count pairs `HELDOUT_COUNTS` (3 of the 9 with counts 2-4, a Latin square: each shape and each count once):
  three circles, four squares, two triangles, with or without a colour.
- Spatial arrangements `HELDOUT_ARRANGEMENTS` (3 of 12), each in both phrasings ('a circle to the left of a square'
  and 'a square to the right of a circle' are one arrangement): training sees the mirrored arrangements ('a square to
  the left of a circle'), so only binding the relation to the right order of shapes scores.
- Two objects: the pair circle + triangle, in both orders (it still appears in training under position and colour
  attribution).
- Single object: nothing compositional to hold out (a shape alone); evaluation uses 'a triangle', the shape named
  alone in no training prompt (it is trained as 'a red triangle', 'three triangles', ...), so the category is in
  both splits and the splits stay disjoint, as `treegrpo validate` requires.

Of the grammar's 294 prompts, 93 are held out and 201 train (`world_prompts`).

The train split is what pretraining draws. RL trains on most of it, not all: the **RL-unseen** prompts
(`rl_unseen`), about a fifth of the train prompts of every category, are seen by pretraining and never by RL. That
is a real model's situation (it saw everything in pretraining; RL's prompts are a subset) and that of Flow-GRPO's
GenEval runs, whose test prompts are new prompts from the training templates. So RL is measured three ways:
`unseen` (new prompts of familiar compositions: does RL's gain carry beyond its own prompts?), `heldout`
(compositions nobody trained on) and `rl` (RL's own prompts, fresh noise).

| split | prompts | pretraining | RL |
|---|---|---|---|
| train | 201 | yes | `rl` yes, `unseen` no |
| rl | 160 | yes | yes |
| unseen | 41 | yes | no |
| heldout | 93 | no | no |
"""

from __future__ import annotations

from treegrpo.world.grammar import INVERSE, Scene, all_scenes

SPLITS = ("train", "heldout", "rl", "unseen")
RL_UNSEEN_EVERY = 5  # every fifth train prompt of each category (sorted by prompt) is RL-unseen: 20%
HELDOUT_COLOURS = {"circle": "blue", "square": "red", "triangle": "yellow"}
HELDOUT_COUNTS = {("circle", 3), ("square", 4), ("triangle", 2)}
# (first shape, relation, second shape); the equivalent (second, inverse relation, first) is held out too
HELDOUT_ARRANGEMENTS = {("circle", "left of", "square"), ("square", "above", "triangle"),
                        ("triangle", "left of", "circle")}
HELDOUT_PAIRS = {frozenset(("circle", "triangle"))}
HELDOUT_SINGLES = {"triangle"}


def _arrangement_held_out(first: str, relation: str, second: str) -> bool:
    return ((first, relation, second) in HELDOUT_ARRANGEMENTS
            or (second, INVERSE[relation], first) in HELDOUT_ARRANGEMENTS)


def is_heldout(scene: Scene) -> bool:
    """Whether `scene` contains a held-out composition (module docstring)."""
    if any(g.colour is not None and HELDOUT_COLOURS[g.shape] == g.colour for g in scene.groups):
        return True
    category = scene.category
    if category == "counting":
        return (scene.groups[0].shape, scene.groups[0].count) in HELDOUT_COUNTS
    if category == "position":
        first, second = scene.groups
        return _arrangement_held_out(first.shape, scene.relation, second.shape)
    if category == "two_objects":
        return frozenset(g.shape for g in scene.groups) in HELDOUT_PAIRS
    if category == "single_object":
        return scene.groups[0].shape in HELDOUT_SINGLES
    return False


def rl_unseen(train: list[Scene]) -> set[str]:
    """The RL-unseen prompts of the (sorted) train scenes: in each category, the prompts at positions 2, 7, 12, ...
    (every `RL_UNSEEN_EVERY`-th, from the middle of the first five), and at least one per category; so every
    category, shape, colour and count is in both `rl` and `unseen`."""
    by_category: dict[str, list[str]] = {}
    for scene in train:
        by_category.setdefault(scene.category, []).append(scene.prompt)
    unseen = set()
    for prompts in by_category.values():
        picks = prompts[RL_UNSEEN_EVERY // 2 :: RL_UNSEEN_EVERY] or prompts[len(prompts) // 2 :][:1]
        if len(picks) < len(prompts):  # a category of one prompt stays RL's
            unseen.update(picks)
    return unseen


def world_scenes(split: str) -> list[Scene]:
    """The scenes of `split` (one of SPLITS, the module docstring's table), sorted by prompt."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use one of {', '.join(SPLITS)}")
    held = split == "heldout"
    scenes = sorted((s for s in all_scenes() if is_heldout(s) == held), key=lambda s: s.prompt)
    if split in ("rl", "unseen"):
        unseen = rl_unseen(scenes)
        scenes = [s for s in scenes if (s.prompt in unseen) == (split == "unseen")]
    return scenes


def world_prompts(split: str) -> list[str]:
    """The prompts of `split` (one of SPLITS), sorted; heldout is disjoint from the rest, rl and unseen split train,
    and every split holds every category."""
    return [s.prompt for s in world_scenes(split)]
