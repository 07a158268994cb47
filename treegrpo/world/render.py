"""The renderer: the image a scene describes, with seeded variation of object size, position, colour and background.

Layout is drawn in unit coordinates (the image is [0, 1]^2) from `numpy.random.default_rng(seed)`, then scaled, so a
seed gives the same picture at 64 and at 512 px. Objects never overlap (their boxes keep a gap of `GAP`) and stay
`MARGIN` away from the border. A relation 'A left of B' puts A's centre left of B's by more than the two half-widths
plus the gap, with the vertical offset at most half the horizontal one, so the relation reads at a glance (and the
detector's dominant-axis rule sees it). The background is a gentle gradient between two light, low-saturation colours,
so colour segmentation by saturation stays clean. Shapes are anti-aliased by drawing their masks at 4x (2x above
128 px) and averaging down.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from treegrpo.world.grammar import COLOURS, INVERSE, Scene

MARGIN = 0.04  # unit distance from an object's box to the border
GAP = 0.05  # unit distance kept between two objects' boxes
# object box side (unit) by the number of objects in the scene: (low, high)
SIZE_RANGE = {1: (0.30, 0.46), 2: (0.22, 0.34), 3: (0.19, 0.27), 4: (0.17, 0.24)}
BG_SATURATION = 0.08  # the most saturated a background gets (objects have >= 0.8)
BG_VALUE = (0.84, 0.97)
_ATTEMPTS = 200


@dataclass(frozen=True)
class Placed:
    """One object of a layout, in unit coordinates: centre (cx, cy), box side `side`, its shape and RGB colour."""

    shape: str
    colour: str
    cx: float
    cy: float
    side: float


def _apart(a: Placed, b: Placed) -> bool:
    """Whether two boxes are at least GAP apart along x or y."""
    dx = abs(a.cx - b.cx) - (a.side + b.side) / 2
    dy = abs(a.cy - b.cy) - (a.side + b.side) / 2
    return max(dx, dy) >= GAP


def _centre(rng: np.random.Generator, side: float) -> tuple[float, float]:
    low, high = MARGIN + side / 2, 1 - MARGIN - side / 2
    return float(rng.uniform(low, high)), float(rng.uniform(low, high))


def _relation_holds(a: Placed, b: Placed, relation: str) -> bool:
    """'a <relation> b' drawn clearly: separated along the relation's axis, the other axis offset at most half that."""
    if relation in ("right of", "below"):
        a, b, relation = b, a, INVERSE[relation]
    along, across = (b.cx - a.cx, b.cy - a.cy) if relation == "left of" else (b.cy - a.cy, b.cx - a.cx)
    return along >= (a.side + b.side) / 2 + GAP and abs(across) <= along / 2


def _colours(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Each group's colour: the named one, else one drawn from the seed (different groups get different ones)."""
    names = list(COLOURS)
    picks = rng.permutation(len(names))
    return [g.colour or names[picks[i]] for i, g in enumerate(scene.groups)]


def layout(scene: Scene, seed: int) -> list[Placed]:
    """The objects of `scene` placed in unit coordinates, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    colours = _colours(scene, rng)
    wanted = [(g.shape, c) for g, c in zip(scene.groups, colours, strict=True) for _ in range(g.count)]
    low, high = SIZE_RANGE[len(wanted)]
    sides = [float(rng.uniform(low, high)) for _ in wanted]
    scale = 1.0
    while True:  # shrink the objects a little whenever the seed's draws cannot fit them
        placed: list[Placed] = []
        for (shape, colour), side in zip(wanted, sides, strict=True):
            for _ in range(_ATTEMPTS):
                obj = Placed(shape, colour, *_centre(rng, side * scale), side * scale)
                if all(_apart(obj, other) for other in placed) and (
                        scene.relation is None or not placed or _relation_holds(placed[0], obj, scene.relation)):
                    placed.append(obj)
                    break
            else:
                break
        if len(placed) == len(wanted):
            return placed
        scale *= 0.9


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float in [0, 1]: a linear gradient between two light, low-saturation colours."""
    hue = rng.uniform()
    ends = [colorsys.hsv_to_rgb((hue + rng.uniform(-0.05, 0.05)) % 1, rng.uniform(0, BG_SATURATION),
                                rng.uniform(*BG_VALUE)) for _ in range(2)]
    angle = rng.uniform(0, 2 * np.pi)
    axis = (np.arange(size) + 0.5) / size - 0.5
    t = np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]  # (size, size) in [-0.71, 0.71]
    t = (t / np.sqrt(0.5) + 1) / 2  # (size, size) in [0, 1]
    start, end = np.array(ends[0]), np.array(ends[1])
    return start + t[..., None] * (end - start)  # (size, size, 3)


def _mask(obj: Placed, size: int) -> np.ndarray:
    """(size, size) float coverage in [0, 1] of one object, anti-aliased by supersampling."""
    ss = 4 if size <= 128 else 2
    big = size * ss
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    half = obj.side * big / 2
    x0, y0, x1, y1 = obj.cx * big - half, obj.cy * big - half, obj.cx * big + half, obj.cy * big + half
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=255)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=255)
    else:  # an upright triangle as wide as it is tall
        draw.polygon([(obj.cx * big, y0), (x1, y1), (x0, y1)], fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float64) / 255


def render(scene: Scene, size: int, seed: int) -> Image.Image:
    """Draw `scene`.

    Args:
        scene: what to draw (`treegrpo.world.grammar.parse_prompt(prompt)`).
        size: the side in pixels (64 for the embedded default; up to 512 and beyond).
        seed: every random choice (sizes, positions, unnamed colours, background) derives from it.
    Returns:
        an RGB image, size x size; the same (scene, size, seed) gives the same bytes.
    """
    if size < 16:
        raise ValueError(f"size={size}: the world's shapes need at least 16 px")
    objects = layout(scene, seed)
    rng = np.random.default_rng([seed, 1])  # the background's own stream: the layout is the same at every size
    image = _background(rng, size)  # (size, size, 3)
    for obj in objects:
        alpha = _mask(obj, size)[..., None]  # (size, size, 1)
        colour = np.array(COLOURS[obj.colour], dtype=np.float64) / 255
        image = image * (1 - alpha) + colour * alpha
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
