"""`composition`: does the image show what a prompt of the world says? (GenEval's checks, on the world's shapes.)

The prompt is parsed with the world's own grammar (`treegrpo.world.grammar.parse_prompt`; a prompt outside it raises
`UserError`, never a silent 0). The detector, with scipy.ndimage, finds objects first and names their colour second,
as GenEval does (instance segmentation, then a colour classifier on each object):
1. object pixels: HSV saturation >= `MIN_SATURATION` and value >= `MIN_VALUE` (the world's backgrounds are light and
   nearly grey, its objects saturated);
2. objects: the connected components (8-connected) of the object pixels, whatever their colour; components under
   `MIN_AREA_FRACTION` of the image are discarded;
3. colour: each object pixel takes the palette colour of nearest hue, if within `MAX_HUE_DISTANCE` degrees; the
   object's colour is the one most of its pixels take, when they are at least `MIN_COLOUR_SHARE` of its pixels, else
   None (a two-tone or in-between object, such as teal, is no colour of the palette);
4. shape: the IoU of the component with each shape's template placed at its centroid and sized to its area (circle:
   a disc; square: axis-aligned; triangle: upright, as wide as tall), so a stray pixel on the border barely moves the
   fit and an elongated or ragged blob fits none. The shape is the best template when its IoU is >= `MIN_SHAPE_IOU`;
   otherwise the component is a blob of no shape (it still counts as something in the image). Clean renders fit
   their own template with IoU >= 0.9; equal-area circle and square overlap by ~0.84.

Segmenting by colour first would split a generated object whose edge or half drifts to a neighbouring hue into
several shapeless objects: on the pretrained world model's samples of the held-out prompts it found 3.1 objects an
image where the prompts ask for 2.2 (42% of them shapeless); objects first finds 2.2 (22% shapeless).

Constraints (each met or not; the score is the fraction met, `strict` is all met), per group of the prompt:
- `<shape>: present`: at least one object of that shape;
- `<shape>: count N`: exactly N of them (N = 1 for 'a circle');
- `<shape>: <colour>` when the prompt names one: present, and every object of that shape has that colour;
then, for a relation, `<a> <relation> <b>`: the centroids of the largest object of each shape are apart along the
relation's axis by more than `RELATION_MARGIN` of the image, and more along it than across it (the dominant axis);
and always `nothing else`: every object found has a shape the prompt names.

| category | constraints | example: one constraint broken -> fraction |
|---|---|---|
| single_object | present, count, nothing else (3) | 'a circle' on two circles -> 2/3 |
| colour | present, count, colour, nothing else (4) | 'a red circle' on a blue circle -> 3/4 |
| counting | present, count, [colour], nothing else (3 or 4) | 'two red circles' on three red circles -> 3/4 |
| two_objects | present and count per shape, nothing else (5) | 'a circle and a triangle' on a circle alone -> 3/5 |
| colour_attribution | present, count, colour per shape, nothing else (7) | colours swapped -> 5/7 |
| position | present and count per shape, relation, nothing else (6) | positions swapped -> 5/6 |

Weight-free and deterministic (numpy and scipy on the CPU). Notation: H x W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import Tensor

from treegrpo.rewards.base import Images, check_batch
from treegrpo.world.grammar import COLOURS, INVERSE, SHAPES, Scene, parse_prompt

MIN_SATURATION = 0.45  # object pixels: the world's objects have >= 0.8, its backgrounds <= 0.08
MIN_VALUE = 0.25  # darker pixels have no reliable hue
MAX_HUE_DISTANCE = 35.0  # degrees from the nearest palette hue (the palette's hues are >= 29 apart)
MIN_AREA_FRACTION = 0.004  # of the image: smaller components are noise (the smallest drawn object is ~0.014)
MIN_SHAPE_IOU = 0.7  # a component is a shape when its best template overlaps it this well
MIN_COLOUR_SHARE = 0.6  # of an object's pixels: its colour when this many take it (clean renders: all of them)
RELATION_MARGIN = 0.05  # of the image side: centroids closer than this along the axis are not 'left of' etc.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class DetectedObject:
    """One component found: its shape (None: a blob of no shape), colour (None: no palette colour holds
    MIN_COLOUR_SHARE of its pixels), area in pixels, centroid in unit coordinates (x right, y down, in [0, 1])."""

    shape: str | None
    colour: str | None
    area: int
    cx: float
    cy: float


@dataclass(frozen=True)
class Constraint:
    name: str
    met: bool


@dataclass(frozen=True)
class CompositionScore:
    """The fraction of the prompt's constraints met, whether all are met, the prompt's category and each check."""

    fraction: float
    strict: bool
    category: str
    constraints: tuple[Constraint, ...]


def _hues(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of (M, 3) RGB in [0, 1] (HSV's hexcone hue; grey gets 0)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    high, low = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    delta = np.where(high > low, high - low, 1.0)
    hue = np.where(high == r, ((g - b) / delta) % 6, np.where(high == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return hue * 60.0


_NAMES = tuple(COLOURS)
_PALETTE_HUES = _hues(np.array([COLOURS[n] for n in _NAMES], dtype=np.float32) / 255)  # (colours,)


def object_pixels(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels saturated and bright enough to belong to an object.

    Args:
        rgb: (H, W, 3) float in [0, 1].
    """
    high = rgb.max(axis=-1)  # (H, W)
    low = rgb.min(axis=-1)
    return (high >= MIN_VALUE) & (high - low >= MIN_SATURATION * high)  # saturation >= MIN_SATURATION


def colour_classes(rgb: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int8: the index in COLOURS of each object pixel's colour, -1 for background and unclassed pixels.

    Args:
        rgb: (H, W, 3) float in [0, 1].
        ok: (H, W) bool, `object_pixels(rgb)` when the caller has it already.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    ok = object_pixels(rgb) if ok is None else ok  # (H, W)
    distance = np.abs(_hues(rgb[ok])[:, None] - _PALETTE_HUES)  # (M, colours), M object pixels
    distance = np.minimum(distance, 360 - distance)
    classes = np.full(ok.shape, -1, dtype=np.int8)
    classes[ok] = np.where(distance.min(-1) <= MAX_HUE_DISTANCE, distance.argmin(-1), -1)
    return classes


def object_colour(classes: np.ndarray) -> str | None:
    """The colour of one object from its pixels' `colour_classes` ((n,) int8, -1 unclassed): the most common one,
    when it holds at least MIN_COLOUR_SHARE of the n pixels, else None."""
    counts = np.bincount(classes.astype(np.int64) + 1, minlength=len(_NAMES) + 1)[1:]  # (colours,)
    best = int(counts.argmax())
    return _NAMES[best] if counts[best] >= MIN_COLOUR_SHARE * len(classes) else None


# the share of its box each shape fills: circle pi/4, square 1, upright triangle 1/2
FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}


def _templates(x: np.ndarray, y: np.ndarray, cx: float, cy: float, area: float) -> dict[str, np.ndarray]:
    """Each shape's mask at pixel centres (x (1, w), y (h, 1)), with the component's centroid and area."""
    masks = {}
    for shape, fill in FILL.items():
        half = np.sqrt(area / fill) / 2  # half the side of the box the shape would fill with that area
        if shape == "circle":
            masks[shape] = (x - cx) ** 2 + (y - cy) ** 2 <= half**2
        elif shape == "square":
            masks[shape] = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
        else:  # the centroid of an upright triangle lies 2/3 of the way down from its apex
            top = cy - 4 * half / 3
            masks[shape] = (y >= top) & (y <= top + 2 * half) & (np.abs(x - cx) <= (y - top) / 2)
    return masks


def classify_shape(mask: np.ndarray) -> str | None:
    """The shape of one component ((h, w) bool, cropped to its bounding box), or None for a blob of no shape.

    Each shape's template is placed at the component's centroid and sized to its area (region moments, so a stray
    pixel on the border barely moves it); the best IoU names the shape when it is >= MIN_SHAPE_IOU.
    """
    h, w = mask.shape
    pad = max(h, w) // 2 + 1  # room for a template larger than the box
    padded = np.pad(mask, pad)  # (h + 2 pad, w + 2 pad)
    ys, xs = np.nonzero(padded)
    area = float(len(ys))
    x = np.arange(padded.shape[1])[None, :] + 0.0  # (1, W') pixel centres in the crop's frame
    y = np.arange(padded.shape[0])[:, None] + 0.0  # (H', 1)
    ious = {}
    for shape, template in _templates(x, y, xs.mean(), ys.mean(), area).items():
        inter = float((padded & template).sum())
        ious[shape] = inter / (area + float(template.sum()) - inter)
    best = max(SHAPES, key=ious.__getitem__)
    return best if ious[best] >= MIN_SHAPE_IOU else None


def detect_objects(rgb: np.ndarray) -> list[DetectedObject]:
    """The objects in one image, in raster order of their first pixel (as scipy labels them).

    Args:
        rgb: (H, W, 3) float in [0, 1].
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    height, width = rgb.shape[:2]
    ok = object_pixels(rgb)  # (H, W)
    classes = colour_classes(rgb, ok)  # (H, W)
    min_area = MIN_AREA_FRACTION * height * width
    labels, _ = ndimage.label(ok, structure=_EIGHT)  # (H, W)
    found = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[box] == label  # (h, w)
        area = int(mask.sum())
        if area < min_area:
            continue
        ys, xs = np.nonzero(mask)
        cy = (box[0].start + ys.mean() + 0.5) / height
        cx = (box[1].start + xs.mean() + 0.5) / width
        found.append(DetectedObject(classify_shape(mask), object_colour(classes[box][mask]), area, float(cx),
                                    float(cy)))
    return found


def _relation_met(a: DetectedObject, b: DetectedObject, relation: str) -> bool:
    """'a <relation> b' by the dominant-axis rule (module docstring)."""
    if relation in ("right of", "below"):
        a, b, relation = b, a, INVERSE[relation]
    along, across = (b.cx - a.cx, b.cy - a.cy) if relation == "left of" else (b.cy - a.cy, b.cx - a.cx)
    return along > RELATION_MARGIN and along > abs(across)


def check_scene(scene: Scene, objects: Sequence[DetectedObject]) -> tuple[Constraint, ...]:
    """The scene's constraints (module docstring), each checked against the detected objects."""
    checks = []
    for group in scene.groups:
        mine = [o for o in objects if o.shape == group.shape]
        checks.append(Constraint(f"{group.shape}: present", len(mine) >= 1))
        checks.append(Constraint(f"{group.shape}: count {group.count}", len(mine) == group.count))
        if group.colour is not None:
            ok = bool(mine) and all(o.colour == group.colour for o in mine)
            checks.append(Constraint(f"{group.shape}: {group.colour}", ok))
    if scene.relation is not None:
        first, second = (max((o for o in objects if o.shape == g.shape), key=lambda o: o.area, default=None)
                         for g in scene.groups)
        ok = first is not None and second is not None and _relation_met(first, second, scene.relation)
        checks.append(Constraint(f"{scene.groups[0].shape} {scene.relation} {scene.groups[1].shape}", ok))
    named = {g.shape for g in scene.groups}
    checks.append(Constraint("nothing else", all(o.shape in named for o in objects)))
    return tuple(checks)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return np.asarray(image, dtype=np.float32)


def score_composition(image: Image.Image | np.ndarray, prompt: str) -> CompositionScore:
    """Score one image against one prompt of the world.

    Args:
        image: a PIL image, or an (H, W, 3) float array in [0, 1].
        prompt: a prompt of the world's grammar.
    Returns:
        `CompositionScore(fraction, strict, category, constraints)`.
    Raises:
        UserError: the prompt is outside the grammar.
    """
    scene = parse_prompt(prompt)
    checks = check_scene(scene, detect_objects(_as_array(image)))
    met = sum(c.met for c in checks)
    return CompositionScore(met / len(checks), met == len(checks), scene.category, checks)


def _arrays(images: Images) -> list[np.ndarray]:
    """Each image as (H, W, 3) float32 in [0, 1]."""
    if isinstance(images, Tensor):
        pixels = images.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
        return list(pixels)
    return [_as_array(img) for img in images]


class Composition:
    """The fraction of the prompt's constraints the image meets (module docstring); `UserError` for a prompt outside
    the world's grammar."""

    stand_in = False
    strict = False
    code_modules = ("treegrpo.world.grammar",)  # the parser decides the constraints (training's fingerprint)

    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor:
        check_batch(images, prompts)
        scores = [score_composition(a, p) for a, p in zip(_arrays(images), prompts, strict=True)]
        values = [float(s.strict) if self.strict else s.fraction for s in scores]
        return torch.tensor(values, dtype=torch.float32)  # (N,)

    def category(self, prompt: str) -> str:
        """The prompt's GenEval category (evaluation reports accuracy per category)."""
        return parse_prompt(prompt).category


class CompositionAccuracy(Composition):
    """1 when the image meets every constraint of its prompt, else 0 (what evaluation reports as accuracy)."""

    strict = True
