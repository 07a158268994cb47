"""Image grids: which leaves a sample grid shows, and the PNG's layout."""

import pytest
import torch
from PIL import Image

from treegrpo.training.grids import save_image_grid, spread


def test_spread_takes_best_worst_and_even_ranks_between():
    assert spread(torch.tensor([0.0, 5.0, 2.0, 9.0]), 3) == [3, 2, 0]  # ranks 0, 2, 3 of [9, 5, 2, 0]
    assert spread(torch.tensor([0.0, 5.0, 2.0, 9.0]), 2) == [3, 0]
    assert spread(torch.tensor([0.0, 5.0, 2.0, 9.0]), 1) == [3]
    assert spread(torch.tensor([1.0, 3.0]), 8) == [1, 0]  # fewer than asked: all, best first
    scores = torch.arange(27.0)
    picks = spread(scores, 8)
    assert len(set(picks)) == 8 and picks[0] == 26 and picks[-1] == 0
    assert all(scores[a] > scores[b] for a, b in zip(picks, picks[1:], strict=False))


def test_grid_png_has_a_row_per_prompt_and_blank_cells_for_missing_images(tmp_path):
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    path = save_image_grid([[red, red, red], [red]], ["a red car", "a red boat"], tmp_path / "g" / "grid.png",
                           captions=[["1", "2", "3"], ["4"]])
    image = Image.open(path)
    width, height = image.size
    assert width > height > 0  # 3 columns by 2 rows
    pixels = image.convert("RGB").getdata()
    assert sum(1 for r, g, b in pixels if r > 200 and g < 50 and b < 50) > 100  # the red images are drawn
    with pytest.raises(ValueError, match="2 rows of images but 1 row labels"):
        save_image_grid([[red], [red]], ["only one"], tmp_path / "bad.png")
