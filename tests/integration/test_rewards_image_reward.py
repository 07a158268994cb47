"""ImageReward via image-reward 1.5 on transformers 5 (the compatibility layer), on a tiny BLIP from local files."""

import json
import pickle

import pytest
import torch

from treegrpo.rewards import imagereward_compat as compat
from treegrpo.rewards import stand_ins
from treegrpo.rewards.base import to_pil_images
from treegrpo.rewards.image_reward import ImageRewardReward
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration
PROMPTS = ["a red car", "a blue house by the sea", "a cat"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return stand_ins.ensure_stand_in("image_reward", tmp_path_factory.mktemp("tiny-rewards"))


@pytest.fixture(scope="module")
def reward(files):
    return ImageRewardReward(**files, device="cpu")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_compat_layer_restores_the_removed_apis():
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    compat.install()
    compat.install()  # idempotent
    assert modeling_utils.apply_chunking_to_forward is pytorch_utils.apply_chunking_to_forward
    assert modeling_utils.find_pruneable_heads_and_indices is compat.find_pruneable_heads_and_indices
    from ImageReward.models.BLIP import med

    assert med.BertPreTrainedModel.get_head_mask is compat.get_head_mask
    assert med.BertPreTrainedModel.invert_attention_mask is compat.invert_attention_mask


def test_compat_layer_leaves_warnings_and_logging_alone():
    import warnings

    import transformers

    before_filters, before_level = list(warnings.filters), transformers.logging.get_verbosity()
    compat.image_reward_class()
    assert list(warnings.filters) == before_filters and transformers.logging.get_verbosity() == before_level


def test_blip_text_encoder_runs_with_cross_attention_and_masks(files):
    """The patched BERT: a padded prompt's masked positions do not change the [CLS] feature."""
    from ImageReward.models.BLIP import med

    compat.install()
    config = med.BertConfig.from_json_file(files["med_config"])
    config.encoder_width = 32
    torch.manual_seed(0)
    bert = med.BertModel(config, add_pooling_layer=False).eval()
    ids = torch.tensor([[2, 40, 41, 3, 0, 0]])
    image = torch.randn(1, 5, 32)
    with torch.no_grad():
        full = bert(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]]), encoder_hidden_states=image,
                    encoder_attention_mask=torch.ones(1, 5, dtype=torch.long), return_dict=True)
        short = bert(ids[:, :4], attention_mask=torch.ones(1, 4, dtype=torch.long), encoder_hidden_states=image,
                     encoder_attention_mask=torch.ones(1, 5, dtype=torch.long), return_dict=True)
    torch.testing.assert_close(full.last_hidden_state[:, 0], short.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)


def test_local_tokenizer_matches_blips_setup(files):
    tok = compat.load_bert_tokenizer(files["bert_vocab"])
    words = open(files["bert_vocab"]).read().split()
    assert len(tok) == len(words) + 2 == json.load(open(files["med_config"]))["vocab_size"]
    assert tok.bos_token == "[DEC]" and tok.convert_ids_to_tokens(tok.enc_token_id) == "[ENC]"
    ids = tok("A Red car", padding="max_length", truncation=True, max_length=35).input_ids
    assert len(ids) == 35 and tok.convert_ids_to_tokens(ids[:4]) == ["[CLS]", "a", "red", "car"]


def test_contract(reward, images):
    x = images.clone().requires_grad_(True)
    scores = reward(x, PROMPTS)
    assert scores.shape == (3,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert not scores.requires_grad and scores.std() > 0
    torch.testing.assert_close(reward(images, PROMPTS), scores, rtol=0, atol=0)
    single = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, scores, rtol=0, atol=0)  # one image at a time by construction
    assert not torch.allclose(reward(images, ["a dog"] * 3), scores)  # the prompt matters
    copy = pickle.loads(pickle.dumps(reward))
    assert copy._model is None
    torch.testing.assert_close(copy(images, PROMPTS), scores, rtol=0, atol=0)


def test_scores_are_the_packages_score(reward, images):
    """Our numbers are image-reward's own `ImageReward.score(prompt, pil)`, pair by pair."""
    model = reward.model
    with torch.no_grad():
        theirs = [model.score(p, img) for p, img in zip(PROMPTS, to_pil_images(images), strict=True)]
    assert reward(images, PROMPTS).tolist() == pytest.approx(theirs, abs=1e-6)


def test_pt_checkpoint_loads_with_weights_only(tmp_path, files, images, reward):
    """The release format (torch.save of the state dict, as ImageReward.pt) loads through the same path."""
    pt = stand_ins.build_tiny_image_reward(tmp_path, stand_ins.SEEDS["image_reward"], "ImageReward.pt")
    assert pt["checkpoint"].endswith(".pt")
    torch.testing.assert_close(ImageRewardReward(**pt, device="cpu")(images, PROMPTS), reward(images, PROMPTS))


def test_mismatched_checkpoint_and_missing_files(tmp_path, files, images):
    torch.save({"mlp.layers.0.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not fit this model"):
        ImageRewardReward(**{**files, "checkpoint": str(tmp_path / "bad.pt")}, device="cpu")(images[:1], PROMPTS[:1])
    torch.save({"mlp.layers.0.weight": torch.zeros(1024, 768)}, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="lacks .* weights of this model"):
        ImageRewardReward(**{**files, "checkpoint": str(tmp_path / "partial.pt")}, device="cpu")(
            images[:1], PROMPTS[:1])
    with pytest.raises(UserError, match=r"reward\.image_reward\.med_config.*med_config\.json \(1 kB\)"):
        ImageRewardReward(**{**files, "med_config": str(tmp_path / "med_config.json")}, device="cpu")(
            images[:1], PROMPTS[:1])
