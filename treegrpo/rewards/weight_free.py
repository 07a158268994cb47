"""Rewards that need no weights: they run anywhere, give the embedded default a real objective, and can be checked
by hand.

- `JpegCompressibility` (DDPO's): minus the size in kB of the image saved as a JPEG at quality 95. Smooth,
  low-detail images score higher.
- `ColorFraction`: a soft fraction of the pixels that have the colour the prompt names ("a red car" -> red): a
  pixel counts `max(0, 1 - d / RADIUS)`, d its RGB distance to the colour's anchor. Soft, so that every image of a
  random-weight model gets a graded score (a hard nearest-colour count is 0 for most colours there), yet checkable
  by hand: an all-red image scores 1 for "a red car", 0 for "a blue car" (d = sqrt 2), 0.5 for "an orange car"
  (d = 0.5), and a uniform mid-gray image 1 - sqrt(0.75) = 0.134 for "a red car".

Notation: N images, H x W pixels.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from treegrpo.rewards.base import Images, check_batch, to_float_images, to_pil_images

JPEG_QUALITY = 95  # DDPO's setting

RADIUS = 1.0  # RGB distance at which a pixel stops counting (the cube's diagonal is sqrt 3)
# Anchor colours in sRGB [0, 1].
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "orange": (1.0, 0.5, 0.0),
    "yellow": (1.0, 1.0, 0.0),
    "green": (0.0, 0.7, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "purple": (0.5, 0.0, 0.5),
    "pink": (1.0, 0.6, 0.8),
    "brown": (0.55, 0.3, 0.1),
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "gray": (0.5, 0.5, 0.5),
}
SYNONYMS = {"grey": "gray", "silver": "gray", "violet": "purple", "crimson": "red", "scarlet": "red",
            "golden": "yellow", "gold": "yellow", "azure": "blue", "navy": "blue", "emerald": "green"}
_WORD = re.compile(r"[a-z]+")


def named_color(prompt: str) -> str | None:
    """The first palette colour the prompt names (synonyms mapped, e.g. grey -> gray), or None."""
    for word in _WORD.findall(prompt.lower()):
        word = SYNONYMS.get(word, word)
        if word in PALETTE:
            return word
    return None


def color_membership(images: Tensor, color: str) -> Tensor:
    """(N, H, W) how much each pixel has `color`: 1 at the anchor, falling linearly to 0 at distance RADIUS.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        color: a key of PALETTE.
    """
    anchor = torch.tensor(PALETTE[color], dtype=torch.float32).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    dist = (images.float() - anchor).square().sum(1).sqrt()  # (N, H, W)
    return (1 - dist / RADIUS).clamp(min=0)


class ColorFraction:
    """Soft fraction of the pixels that have the colour the prompt names (module docstring); 0 for every image of a
    prompt that names no colour (a constant score gives that prompt zero advantage: it neither helps nor hurts)."""

    stand_in = False

    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor:
        check_batch(images, prompts)
        with torch.no_grad():
            pixels = to_float_images(images)  # (N, 3, H, W)
            scores = torch.zeros(pixels.shape[0], dtype=torch.float32)  # (N,)
            for i, prompt in enumerate(prompts):
                color = named_color(prompt)
                if color is not None:
                    scores[i] = color_membership(pixels[i : i + 1], color).mean()
        return scores


class JpegCompressibility:
    """Minus the JPEG size in kB (quality 95) of the 8-bit image (DDPO's `jpeg_compressibility`)."""

    stand_in = False

    def __call__(self, images: Images, prompts: Sequence[str]) -> Tensor:
        check_batch(images, prompts)
        sizes = []
        for img in to_pil_images(images):
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
            sizes.append(buffer.tell() / 1000)
        return -torch.tensor(sizes, dtype=torch.float32)  # (N,)
