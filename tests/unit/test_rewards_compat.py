"""The ImageReward compatibility layer's re-implemented transformers 4 helpers, against hand-worked values.

(Installing it into image-reward and running the model is in tests/integration/test_rewards_image_reward.py.)
"""

import json
from types import SimpleNamespace

import pytest
import torch

from treegrpo.rewards import imagereward_compat as compat
from treegrpo.utils.errors import UserError

MODEL = SimpleNamespace(dtype=torch.float32)


def test_find_pruneable_heads_and_indices():
    # 4 heads of size 2; prune head 1 -> keep weights 0,1 and 4..7
    heads, index = compat.find_pruneable_heads_and_indices([1], 4, 2, set())
    assert heads == {1} and index.tolist() == [0, 1, 4, 5, 6, 7]
    # head 0 already gone (3 heads left): pruning original head 2 removes what is now head 1
    heads, index = compat.find_pruneable_heads_and_indices([0, 2], 3, 2, {0})
    assert heads == {2} and index.tolist() == [0, 1, 4, 5]
    assert index.dtype == torch.long


def test_invert_attention_mask_2d_and_3d():
    low = torch.finfo(torch.float32).min
    out = compat.invert_attention_mask(MODEL, torch.tensor([[1, 1, 0]]))
    assert out.shape == (1, 1, 1, 3) and out.flatten().tolist() == [0.0, 0.0, low]
    out = compat.invert_attention_mask(MODEL, torch.tensor([[[1, 0], [1, 1]]]))
    assert out.shape == (1, 1, 2, 2) and out.flatten().tolist() == [0.0, low, 0.0, 0.0]


def test_get_head_mask():
    assert compat.get_head_mask(MODEL, None, 3) == [None, None, None]
    mask = compat.get_head_mask(MODEL, torch.tensor([1.0, 0.0]), 3)  # (heads,) -> every layer
    assert mask.shape == (3, 1, 2, 1, 1) and mask[:, 0, :, 0, 0].tolist() == [[1.0, 0.0]] * 3
    mask = compat.get_head_mask(MODEL, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 2)  # (layers, heads)
    assert mask.shape == (2, 1, 2, 1, 1) and mask[1, 0, :, 0, 0].tolist() == [0.0, 1.0]


def test_vit_config(tmp_path):
    assert compat.read_vit_config("large") is None
    good = tmp_path / "vit.json"
    good.write_text(json.dumps({"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16}))
    assert compat.read_vit_config(str(good))["depth"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 32}))
    with pytest.raises(UserError, match="needs exactly the keys"):
        compat.read_vit_config(str(bad))
    with pytest.raises(UserError, match="'large'"):
        compat.read_vit_config("huge")
