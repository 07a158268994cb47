"""`treegrpo pretrain` on a shortened schedule: deterministic in its seed, losses go down, the saved folder loads."""

import dataclasses
import json

import pytest
import torch
import yaml

from tests.conftest import REPO
from treegrpo.cli.pretrain import render_prompt
from treegrpo.config.pretrain import PretrainParams
from treegrpo.world.split import world_prompts

pytestmark = pytest.mark.integration

SHORT = PretrainParams(
    seed=0, output="unused", report="unused.json", images_per_prompt=1, vae_steps=3, vae_batch_size=4, vae_crop=32,
    vae_learning_rate=3e-3, vae_kl_weight=1e-6, steps=3, batch_size=4, learning_rate=2e-3, weight_decay=0.01,
    caption_dropout=0.1, logit_mean=0.0, logit_std=1.0, ema_decay=0.0, scheduler_shift=1.0,
)
PROMPTS = world_prompts("train")[::25]  # 9 prompts across the categories


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from treegrpo.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "world-sd3", size="world", seed=0)


def _pretrained(world_dir, params=SHORT):
    from diffusers import StableDiffusion3Pipeline

    from treegrpo.models.pretrain import pretrain

    pipe = StableDiffusion3Pipeline.from_pretrained(world_dir, dtype=torch.float32)
    result = pretrain(pipe, PROMPTS, render_prompt, params, resolution=64, max_sequence_length=32)
    return pipe, result


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in ("vae", "transformer") for k, v in getattr(pipe, name).state_dict().items()}


def test_world_transformer_has_a_token_per_8x8_pixels(world_dir):
    """A 64 px image has 16x16 latents of 4 channels (the world's VAE downsamples 4x; SD3.5's 16 channels drew
    specks, tiny.py); patch size 2 makes 64 tokens of 8x8 px, and the transformer reads and writes 4 channels."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    from treegrpo.models.tiny import SPECS

    vae = AutoencoderKL.from_pretrained(world_dir / "vae")
    latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean  # (1, C, h, w)
    assert latents.shape == (1, 4, 16, 16)
    transformer = SD3Transformer2DModel.from_pretrained(world_dir / "transformer")
    assert transformer.config.in_channels == transformer.config.out_channels == 4
    tokens = transformer.pos_embed(latents)  # (1, tokens, inner)
    assert tokens.shape == (1, 64, SPECS["world"].heads * SPECS["world"].head_dim)


def test_the_pretrained_scheduler_has_the_shift_and_its_sigmas(world_dir):
    """sigma = shift * t / (1 + (shift - 1) * t), the 10 t evenly spaced from 1 to the end of diffusers' table (its
    1000 training timesteps, already shifted: shift(1/1000) = 0.0005 / 0.9995 at shift 0.5); sigma(0.5) = 1/3."""
    from treegrpo.models.sd3 import scheduler_sigmas

    pipe, _ = _pretrained(world_dir, dataclasses.replace(SHORT, vae_steps=0, steps=1, scheduler_shift=0.5))
    assert pipe.scheduler.config.shift == 0.5
    shifted = lambda t: 0.5 * t / (1 + (0.5 - 1) * t)  # noqa: E731
    t = torch.linspace(1.0, shifted(0.001), 10, dtype=torch.float64)
    expected = shifted(t).float()
    sigmas = scheduler_sigmas(pipe, 10)
    torch.testing.assert_close(sigmas[:-1], expected, atol=2e-4, rtol=0)
    assert sigmas[-1] == 0.0


def test_ema_weights_are_the_moving_average_of_the_steps():
    """With decay d the saved weights are d^3 w1 + d^2 (1 - d) w2 + d (1 - d) w3 + (1 - d) w4 after 4 steps (torch's
    AveragedModel copies the first step's weights, then averages), w_i the weights after step i of the same run
    without EMA (EMA never changes the trajectory)."""
    from treegrpo.models.pretrain import PromptCache, train_transformer

    class Scale(torch.nn.Module):
        """A one-parameter 'transformer' that records the weight each step's forward sees."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(1.0))
            self.seen = []

        def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, return_dict):
            self.seen.append(self.w.detach().clone())
            return (hidden_states * self.w,)

    n, latents = 6, (torch.randn(6, 2, 2, 2, generator=torch.Generator().manual_seed(1)), torch.zeros(6, 2, 2, 2))
    cache = PromptCache(torch.zeros(1, 3, 4), torch.zeros(1, 4), torch.zeros(3, 4), torch.zeros(4))
    index = torch.zeros(n, dtype=torch.long)

    def run(decay):
        model = Scale()
        params = dataclasses.replace(SHORT, steps=4, batch_size=2, learning_rate=0.1, ema_decay=decay)
        train_transformer(model, latents, index, cache, params, 1.0, torch.Generator().manual_seed(0))
        return model

    plain, averaged, d = run(0.0), run(0.5), 0.5
    w1, w2, w3, w4 = *plain.seen[1:], plain.w.detach()
    assert torch.equal(torch.stack(averaged.seen), torch.stack(plain.seen))  # the same trajectory
    expected = d**3 * w1 + d**2 * (1 - d) * w2 + d * (1 - d) * w3 + (1 - d) * w4
    torch.testing.assert_close(averaged.w.detach(), expected, rtol=1e-6, atol=1e-7)
    assert abs(float(expected - w4)) > 1e-3  # the average is not the last step's weight


def test_same_seed_same_weights_other_seed_other_weights(world_dir):
    (a, ra), (b, _) = _pretrained(world_dir), _pretrained(world_dir)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c, _ = _pretrained(world_dir, dataclasses.replace(SHORT, seed=1))
    wc = _weights(c)
    changed = [k for k in wa if not torch.equal(wa[k], wc[k])]
    assert "transformer.proj_out.weight" in changed and "vae.decoder.conv_out.weight" in changed
    assert a.vae.config.scaling_factor == ra.scaling_factor != 1.5035  # set from the latents, not SD3.5's


def test_losses_go_down_on_a_short_schedule(world_dir):
    """Measured (9 prompts x 4 renders, seeds 0, 1, 2): VAE MSE 0.47, 0.45, 0.47 over the first 5 steps -> 0.14,
    0.15, 0.16 over the last 5 of 40 (ratio <= 0.35); flow loss 1.76, 2.11, 1.93 over the first 10 steps -> 0.97,
    1.36, 1.15 over the last 10 of 80 (ratio 0.55-0.65). Asserted with margins: ratios below 0.6 and 0.85."""
    params = dataclasses.replace(SHORT, images_per_prompt=4, vae_steps=40, vae_learning_rate=1e-2, steps=80,
                                 batch_size=16, learning_rate=3e-3)
    _, r = _pretrained(world_dir, params)
    vae_first, vae_last = sum(r.vae_losses[:5]) / 5, sum(r.vae_losses[-5:]) / 5
    flow_first, flow_last = sum(r.losses[:10]) / 10, sum(r.losses[-10:]) / 10
    assert vae_last < 0.6 * vae_first, (vae_first, vae_last)
    assert flow_last < 0.85 * flow_first, (flow_first, flow_last)


def test_cli_saves_a_folder_that_from_pretrained_and_the_loader_read(world_dir, tmp_path, capsys):
    from diffusers import StableDiffusion3Pipeline

    from treegrpo.cli import main
    from treegrpo.config import load_params
    from treegrpo.models.pipeline import load_pipeline

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tiny_model"].update(size="world", path=str(world_dir))
    raw["pretrain"] = {**dataclasses.asdict(SHORT), "output": str(tmp_path / "pretrained"),
                       "report": str(tmp_path / "report" / "pretrain.json")}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", "--params", str(params_file)]) == 0
    err = capsys.readouterr().err  # a bar per phase, run to its end (they are updated every 50 steps)
    assert "pretrain VAE: 100%" in err and "pretrain transformer: 100%" in err and "3/3" in err
    out = tmp_path / "pretrained"
    summary = json.loads((tmp_path / "report" / "pretrain.json").read_text())
    assert summary["prompts"] == len(world_prompts("train")) and summary["images"] == summary["prompts"]
    pipe = StableDiffusion3Pipeline.from_pretrained(out, dtype=torch.float32)
    assert pipe.vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])
    params = load_params(params_file)
    loaded = load_pipeline(dataclasses.replace(params.model, pretrained=str(out)), device="cpu")
    image = loaded("a red circle", num_inference_steps=2, guidance_scale=4.5, height=64, width=64,
                   max_sequence_length=32, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_cli_twice_gives_the_same_model_folder_bytes(world_dir, tmp_path):
    """The model folder holds only what the seed reproduces (its DVC hash, and so the stages after it, stay when
    pretraining re-runs); the run's times go to pretrain.report. Before, pretrain.json with wall times sat inside."""
    from treegrpo.cli import main
    from treegrpo.training.run_identity import folder_digest

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tiny_model"].update(size="world", path=str(world_dir))
    digests, reports = [], []
    for run in ("a", "b"):
        raw["pretrain"] = {**dataclasses.asdict(SHORT), "output": str(tmp_path / run / "model"),
                           "report": str(tmp_path / run / "pretrain.json")}
        params_file = tmp_path / f"{run}.yaml"
        params_file.write_text(yaml.safe_dump(raw))
        assert main(["pretrain", "--params", str(params_file)]) == 0
        digests.append(folder_digest(tmp_path / run / "model"))
        reports.append(json.loads((tmp_path / run / "pretrain.json").read_text()))
    assert digests[0] == digests[1]
    assert reports[0]["loss_last"] == reports[1]["loss_last"] and "wall_s" in reports[0]
    assert all("wall_s" not in f.read_text() for f in (tmp_path / "a" / "model").rglob("*.json"))


def test_cli_bad_pretrain_value_exits_2_naming_the_key(world_dir, tmp_path, capsys):
    from treegrpo.cli import main

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["pretrain"] = {**dataclasses.asdict(SHORT), "caption_dropout": 1.5}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", "--params", str(params_file)]) == 2
    assert "pretrain.caption_dropout=1.5" in capsys.readouterr().err
