"""The world's prompt grammar: shapes, colours, counts and spatial relations in GenEval's six categories.

A `Scene` is one or two `Group`s (a shape, a count, a colour or None) and maybe a relation between the two; its
`category` follows from that structure and its `prompt` is the canonical English for it. `parse_prompt` is the
grammar's own parser, the inverse of `Scene.prompt`: `parse_prompt(s.prompt) == s` for every scene.

| category | structure | example |
|---|---|---|
| single_object | one shape, count 1, no colour | a circle |
| colour | one shape, count 1, a colour | a red circle |
| counting | one shape, count 2-4, colour or not | two circles, three red squares |
| two_objects | two different shapes, no colours | a circle and a square |
| colour_attribution | two different shapes, two different colours | a red circle and a blue square |
| position | two different shapes, no colours, a relation | a circle to the left of a square |

Shapes are drawn upright and axis-aligned (a circle, a square, an upright triangle as wide as it is tall): at 64 px
they fill 79%, 100% and 50% of their bounding box, which tells them apart. Colours are saturated hues at least 28
degrees apart, so a nearest-hue rule separates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from treegrpo.utils.errors import UserError

SHAPES = ("circle", "square", "triangle")
# sRGB 0-255; hues (HSV) 357, 27, 56, 129, 223, 281 degrees; saturation >= 0.8
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 45),
    "orange": (240, 120, 20),
    "yellow": (230, 215, 20),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "purple": (150, 50, 200),
}
RELATIONS = ("left of", "right of", "above", "below")
CATEGORIES = ("single_object", "colour", "two_objects", "counting", "position", "colour_attribution")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_COUNT = 4
# the words a relation is written with in a prompt
RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

ACCEPTS = (
    "it accepts 'a circle', 'a red circle', 'two circles', 'three red squares', 'a circle and a square', "
    "'a red circle and a blue square', 'a circle to the left of a square' (shapes: " + ", ".join(SHAPES)
    + "; colours: " + ", ".join(COLOURS) + "; counts: a, two, three, four; relations: "
    + ", ".join(RELATION_PHRASES.values()) + ")"
)


@dataclass(frozen=True)
class Group:
    """`count` objects of one shape, all of `colour` (None: the prompt names no colour; the renderer picks one)."""

    shape: str
    count: int = 1
    colour: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"Group.shape={self.shape!r}: not a shape of the world; use one of {', '.join(SHAPES)}")
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"Group.count={self.count!r}: must be 1 to {MAX_COUNT}")
        if self.colour is not None and self.colour not in COLOURS:
            raise ValueError(f"Group.colour={self.colour!r}: not a colour of the world; use None or one of "
                             f"{', '.join(COLOURS)}")

    @property
    def phrase(self) -> str:
        """'a red circle', 'an orange square', 'three triangles'."""
        noun = self.shape if self.count == 1 else self.shape + "s"
        words = [self.colour, noun] if self.colour else [noun]
        if self.count > 1:
            return " ".join([NUMBERS[self.count], *words])
        return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


@dataclass(frozen=True)
class Scene:
    """What a prompt describes: one or two groups and, for two, maybe a relation ('first <relation> second')."""

    groups: tuple[Group, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        groups = self.groups
        if not isinstance(groups, tuple) or not 1 <= len(groups) <= 2:
            raise ValueError(f"Scene.groups={groups!r}: must be a tuple of one or two Groups")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"Scene.relation={self.relation!r}: use None or one of {', '.join(RELATIONS)}")
        if len(groups) == 1:
            if self.relation is not None:
                raise ValueError(f"Scene.relation={self.relation!r}: a relation needs two groups")
            return
        first, second = groups
        if first.shape == second.shape:
            raise ValueError(f"Scene: two groups of the same shape ({first.shape}); two-object scenes name two "
                             "different shapes")
        if first.count != 1 or second.count != 1:
            raise ValueError("Scene: two-object scenes have one object of each shape (count 1)")
        if (first.colour is None) != (second.colour is None):
            raise ValueError("Scene: name a colour for both objects or for neither")
        if first.colour is not None and first.colour == second.colour:
            raise ValueError(f"Scene: both objects are {first.colour}; colour attribution names two different colours")
        if first.colour is not None and self.relation is not None:
            raise ValueError("Scene: a relation scene names no colours")

    @property
    def category(self) -> str:
        """One of CATEGORIES, from the scene's structure (module docstring)."""
        if len(self.groups) == 2:
            if self.relation is not None:
                return "position"
            return "colour_attribution" if self.groups[0].colour else "two_objects"
        group = self.groups[0]
        if group.count > 1:
            return "counting"
        return "colour" if group.colour else "single_object"

    @property
    def prompt(self) -> str:
        """The canonical prompt: 'a red circle and a blue square', 'a circle to the left of a square'."""
        if len(self.groups) == 1:
            return self.groups[0].phrase
        joint = RELATION_PHRASES[self.relation] if self.relation else "and"
        return f"{self.groups[0].phrase} {joint} {self.groups[1].phrase}"


_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_PHRASE = re.compile(
    r"(?P<count>" + "|".join(_COUNT_WORDS) + r") (?:(?P<colour>" + "|".join(COLOURS) + r") )?"
    r"(?P<shape>" + "|".join(SHAPES) + r")(?P<plural>s?)"
)
_JOINTS = {phrase: relation for relation, phrase in RELATION_PHRASES.items()} | {"and": None}
_SCENE = re.compile(
    r"(?P<first>[a-z ]+?)(?: (?P<joint>" + "|".join(_JOINTS) + r") (?P<second>[a-z ]+))?"
)


def _parse_group(text: str, prompt: str) -> Group:
    m = _PHRASE.fullmatch(text)
    if m is None:
        raise UserError(f"prompt {prompt!r}: {text!r} is not a noun phrase of the world's grammar; {ACCEPTS}")
    count = _COUNT_WORDS[m["count"]]
    if (count > 1) != bool(m["plural"]):
        raise UserError(f"prompt {prompt!r}: {text!r} mixes a count of {count} with a "
                        f"{'plural' if m['plural'] else 'singular'} noun; {ACCEPTS}")
    return Group(m["shape"], count, m["colour"])


def parse_prompt(prompt: str) -> Scene:
    """The scene a prompt of the world describes (case, surrounding spaces and a final full stop are ignored).

    Args:
        prompt: e.g. 'a red circle and a blue square'.
    Returns:
        the `Scene`; `parse_prompt(scene.prompt) == scene`.
    Raises:
        UserError: the prompt is outside the grammar (the message names it and what the grammar accepts).
    """
    if not isinstance(prompt, str):
        raise UserError(f"prompt {prompt!r}: not a string; {ACCEPTS}")
    text = " ".join(prompt.lower().split()).removesuffix(".").strip()
    m = _SCENE.fullmatch(text)
    if m is None:
        raise UserError(f"prompt {prompt!r}: outside the world's grammar; {ACCEPTS}")
    groups = tuple(_parse_group(part, prompt) for part in (m["first"], m["second"]) if part is not None)
    try:
        return Scene(groups, _JOINTS[m["joint"]] if m["joint"] else None)
    except ValueError as err:
        raise UserError(f"prompt {prompt!r}: {err}; {ACCEPTS}") from None


def all_scenes() -> list[Scene]:
    """Every scene the grammar describes, in a fixed order (categories in CATEGORIES order)."""
    singles = [Scene((Group(s),)) for s in SHAPES]
    coloured = [Scene((Group(s, 1, c),)) for s in SHAPES for c in COLOURS]
    counting = [Scene((Group(s, n, c),)) for s in SHAPES for n in range(2, MAX_COUNT + 1) for c in (None, *COLOURS)]
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    two = [Scene((Group(a), Group(b))) for a, b in pairs]
    position = [Scene((Group(a), Group(b)), r) for a, b in pairs for r in RELATIONS]
    attribution = [Scene((Group(a, 1, ca), Group(b, 1, cb))) for a, b in pairs for ca in COLOURS for cb in COLOURS
                   if ca != cb]
    return singles + coloured + two + counting + position + attribution
