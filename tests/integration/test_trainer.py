"""The TreeGRPO recipe on the tiny pipeline: on-policy first step, counts, NaN policy, learning direction."""

import json

import pytest
import torch

from tests.conftest import make_params
from treegrpo.core.tree import tree_nfe
from treegrpo.recipes.trainer import TrainingError, TreeGRPOTrainer
from treegrpo.rewards.weight_free import JpegCompressibility

pytestmark = pytest.mark.integration
PROMPTS = ["a red car", "a blue boat", "a green tree", "a yellow flower"]


def _trainer(tiny_pipeline_dir, tmp_path, rewards, **over):
    params, _ = make_params(tiny_pipeline_dir, tmp_path / "out", reward__weights={"jpeg_compressibility": 1.0},
                            model__device="cpu", **over)
    return TreeGRPOTrainer(params, PROMPTS, rewards)


def test_one_iteration_is_on_policy_and_counts_what_it_did(tiny_pipeline_dir, tmp_path):
    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": JpegCompressibility()},
                  train__iterations=1, train__prompts_per_iteration=2, sampler__window__strategy="fixed",
                  sampler__window__start=2, sampler__branching=3, sampler__depth=3)
    last = tr.train()
    # sampling and training forwards agree: the first update's ratio is 1 to float32 precision
    assert last["first_step_ratio_dev"] < 1e-5
    # k = d = 3, one tree per prompt, 2 prompts, window at step 2: SPEC §4's count, evaluated by the sampler
    assert last["nfe"] == 2 * tree_nfe(10, 3, 3, 2) == 2 * (2 + 13 + 27 * 5)
    assert last["images"] == 54 and last["parents_trained"] == 26 and last["edges_trained"] == 78
    assert (last["eff_group"], last["eff_steps"], last["window_start"]) == (27, 13, 2)
    out = tmp_path / "out"
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    history = json.loads((out / "history.json").read_text())
    assert [r["iteration"] for r in history] == [0]
    assert json.loads((out / "metrics.json").read_text())["iterations_done"] == 1
    for key in ("time_sampling", "time_decoding", "time_reward", "time_training", "peak_memory_mb",
                "start_memory_mb", "grad_norm",
                "clip_fraction", "approx_kl", "ratio_min", "ratio_max", "loss", "reward_jpeg_compressibility_std"):
        assert key in last, key
    # is the tree carrying signal: a ratio of stds within [0, 1], ESS between 1 and k = 3, one spread per level
    assert 0.0 <= last["tree/tie_fraction"] <= 1.0
    assert 0.0 < last["tree/reward_std_min"] <= last["tree/reward_std_mean"]
    assert 1.0 <= last["tree/backup_ess_min"] <= last["tree/backup_ess_mean"] <= 3.0 + 1e-9
    levels = sorted(k for k in last if k.startswith("tree/adv_std_level_"))
    assert levels == [f"tree/adv_std_level_{i}" for i in range(3)]
    assert history[0]["tree/tie_fraction"] == last["tree/tie_fraction"]


def test_sample_grids_every_sample_every_iterations_go_to_artifact_fn(tiny_pipeline_dir, tmp_path):
    handed = []
    params, _ = make_params(tiny_pipeline_dir, tmp_path / "out", reward__weights={"jpeg_compressibility": 1.0},
                            model__device="cpu", train__iterations=3, train__sample_every=2,
                            train__prompts_per_iteration=2, sampler__branching=2, sampler__depth=2)
    TreeGRPOTrainer(params, PROMPTS, {"jpeg_compressibility": JpegCompressibility()},
                    artifact_fn=lambda path, it: handed.append((path.name, it))).train()
    assert handed == [("iteration_000002.png", 1)]  # after iterations 2 (not 1 or 3)
    assert sorted(p.name for p in (tmp_path / "out" / "samples").iterdir()) == ["iteration_000002.png"]


def test_a_checkpoint_is_resumed_only_by_the_same_run(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Same params (but for iterations/grids), code, prompts and base model: resumed, with its figures; any of them
    changed: started over, the stale checkpoints removed."""
    import shutil

    from treegrpo.training import run_identity

    out = tmp_path / "out"

    def setup(prompts=PROMPTS, model=tiny_pipeline_dir, **over):
        params, _ = make_params(model, out, reward__weights={"jpeg_compressibility": 1.0}, model__device="cpu",
                                train__checkpoint_every=1, train__prompts_per_iteration=1, sampler__branching=2,
                                sampler__depth=1, **over)
        tr = TreeGRPOTrainer(params, prompts, {"jpeg_compressibility": JpegCompressibility()})
        tr.setup()
        return tr

    setup(train__iterations=2).train()
    for name in ("history.json", "metrics.json"):  # DVC deletes the stage's outputs before re-running it
        (out / name).unlink()
    done = setup(train__iterations=2)
    assert done.start_iteration == 2 and done.train() == {}  # nothing left to run ...
    assert [r["iteration"] for r in json.loads((out / "history.json").read_text())] == [0, 1]  # ... figures back
    assert json.loads((out / "metrics.json").read_text())["iterations_done"] == 2
    assert setup(train__iterations=3, train__sample_every=5).start_iteration == 2  # longer, other grids: resumed

    monkeypatch.setattr(run_identity, "TRAINING_CODE", (*run_identity.TRAINING_CODE, "treegrpo.training.grids"))
    assert setup(train__iterations=3).start_iteration == 0  # other training code: starts over
    assert not any((out / "checkpoints").iterdir())  # and the stale checkpoints are gone
    monkeypatch.undo()

    setup(train__iterations=2).train()
    assert setup(train__iterations=2, train__learning_rate=1e-3).start_iteration == 0  # other params
    setup(train__iterations=2).train()
    assert setup(prompts=PROMPTS[::-1], train__iterations=2).start_iteration == 0  # other prompts
    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    setup(model=model, train__iterations=2).train()
    tokenizer = model / "tokenizer_3" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")  # a rebuilt model under the same path
    assert setup(model=model, train__iterations=2).start_iteration == 0


def _lora_of(out):
    from safetensors.torch import load_file

    return load_file(out / "lora" / "pytorch_lora_weights.safetensors")


@pytest.mark.parametrize("keep", [5, 1])
def test_fewer_iterations_than_a_longer_run_give_the_shorter_runs_lora(tiny_pipeline_dir, tmp_path, keep, caplog):
    """After 4 iterations, `train.iterations: 2` never answers with the 4-iteration model: it resumes the same run's
    checkpoint at 2 (kept), or starts over (keep_checkpoints=1 deleted it); either way it makes the LoRA and the
    history of a fresh 2-iteration run, and the longer run's checkpoint stays."""

    def run(out, iterations):
        params, _ = make_params(tiny_pipeline_dir, out, reward__weights={"jpeg_compressibility": 1.0},
                                model__device="cpu", train__checkpoint_every=2, train__keep_checkpoints=keep,
                                train__prompts_per_iteration=1, sampler__branching=2, sampler__depth=1,
                                train__iterations=iterations)
        tr = TreeGRPOTrainer(params, PROMPTS, {"jpeg_compressibility": JpegCompressibility()})
        tr.train()
        return tr

    run(tmp_path / "fresh", 2)
    run(tmp_path / "out", 4)
    longer = _lora_of(tmp_path / "out")
    shorter = run(tmp_path / "out", 2)
    assert shorter.start_iteration == (2 if keep > 1 else 0)
    assert "ends before ckpt-000004" in caplog.text
    assert ("resuming ckpt-000002" if keep > 1 else "starting over") in caplog.text
    a, b = _lora_of(tmp_path / "fresh"), _lora_of(tmp_path / "out")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)
    assert any(not torch.equal(longer[k], a[k]) for k in a)  # the 4-iteration model differs: the check can fail
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r["iteration"] for r in history] == [0, 1]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["iterations_done"] == 2
    names = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert names == ["ckpt-000002", "ckpt-000004"]  # this run's final one, and the longer run's, kept


class Flaky:
    """A reward that returns NaN on the calls listed in `bad` (0-based), JPEG compressibility otherwise."""

    def __init__(self, bad):
        self.bad, self.calls, self.inner = set(bad), 0, JpegCompressibility()

    def __call__(self, images, prompts):
        call, self.calls = self.calls, self.calls + 1
        scores = self.inner(images, prompts)
        return torch.full_like(scores, float("nan")) if call in self.bad or "all" in self.bad else scores


def test_a_nan_reward_skips_the_step_and_the_run_goes_on(tiny_pipeline_dir, tmp_path):
    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": Flaky({1})}, train__iterations=3,
                  train__prompts_per_iteration=1)
    last = tr.train()
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r.get("skipped", 0.0) for r in history] == [0.0, 1.0, 0.0]
    assert last["skipped_steps"] == 1.0 and "loss" in last


def test_three_nan_steps_in_a_row_stop_with_the_last_checkpoint_intact(tiny_pipeline_dir, tmp_path):
    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": Flaky({1, 2, 3})}, train__iterations=6,
                  train__prompts_per_iteration=1, train__checkpoint_every=1)
    with pytest.raises(TrainingError, match="3 non-finite steps in a row"):
        tr.train()
    ckpts = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    # iterations 0 (good), 1 and 2 (skipped but finite weights) were checkpointed; the third bad one stopped the run
    assert ckpts[-1] == "ckpt-000003" and not any(n.endswith(".partial") for n in ckpts)


def test_training_on_jpeg_compressibility_makes_images_more_compressible(tiny_pipeline_dir, tmp_path):
    """Direction and size: the same seeds, base vs trained; the measured gain on the embedded default was ~0.4 kB."""
    reward = JpegCompressibility()
    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": reward}, train__iterations=20,
                  train__prompts_per_iteration=2, train__checkpoint_every=100, sampler__branching=3,
                  sampler__depth=3)  # the shape the gain was measured with
    tr.setup()

    def score():
        from treegrpo.core.tree import root_latents, sample_trees

        v = tr.policy.velocity(tr.policy.encode(PROMPTS))
        roots, prompt = root_latents(range(4), 4, tr.policy.latent_shape, seed=123, iteration=0)
        with torch.no_grad():  # ODE samples (noise 0) from fixed noise: the policy's mean behaviour
            s = sample_trees(v, roots, prompt, tr.policy.sigmas, 0, 1, 1, 0.0, None, max_batch=64)
        images = tr.policy.decode(s.leaf_latents)
        return reward(images, [PROMPTS[i] for i in s.leaf_prompt.tolist()]).mean().item()

    before = score()
    tr.train()
    after = score()
    assert after - before > 0.05, (before, after)  # kB saved per 64x64 image; noise across runs is ~0.01


@pytest.mark.parametrize("algorithm", ["grpo", "mixgrpo", "ddpo"])
def test_baselines_run_in_the_same_trainer_and_count_their_work(tiny_pipeline_dir, tmp_path, algorithm):
    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": JpegCompressibility()},
                  train__iterations=1, train__prompts_per_iteration=2, train__algorithm=algorithm,
                  baselines__group_size=4, baselines__timestep_fraction=0.5, baselines__mix_window=3)
    last = tr.train()
    # k = 1: every step evaluates each of the G trajectories once (2 prompts x 4 trajectories x 10 steps)
    assert last["nfe"] == 2 * 4 * 10 and last["images"] == 8 and last["eff_group"] == 4
    trained_steps = {"grpo": 5, "ddpo": 5, "mixgrpo": 3}[algorithm]  # ceil(0.5 * 9) or the whole 3-step window
    assert last["parents_trained"] == 8 * trained_steps and last["edges_trained"] == 8 * trained_steps
    assert last["first_step_ratio_dev"] < 1e-5


def test_grpo_edges_carry_their_trajectory_advantage_and_ddpo_normalises_over_the_batch(tiny_pipeline_dir, tmp_path):
    from treegrpo.core.tree import sample_trees

    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": JpegCompressibility()})
    roots = torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    samples = sample_trees(lambda x, t, p: -x, roots, torch.tensor([0, 0, 1, 1]), torch.linspace(1, 0, 11), 0, 9, 1,
                           0.7, torch.Generator().manual_seed(1), max_batch=8)
    rewards = torch.tensor([[1.0, 3.0, 10.0, 30.0]])  # (R=1, L=4): prompt 0 has leaves 0, 1; prompt 1 has 2, 3
    per_prompt = tr.advantages(samples, rewards, "prompt")  # (P, 1)
    # population z-scores within each prompt: (1, 3) -> (-1, 1) and (10, 30) -> (-1, 1)
    leaf_of_row = torch.arange(samples.num_parents) % 4  # k = 1: each level holds the 4 trajectories in order
    torch.testing.assert_close(per_prompt[:, 0], torch.tensor([-1.0, 1.0, -1.0, 1.0])[leaf_of_row])
    batch = tr.advantages(samples, rewards, "batch")
    z = (rewards[0] - rewards[0].mean()) / rewards[0].std(unbiased=False)  # over all 4 leaves
    torch.testing.assert_close(batch[:, 0], z[leaf_of_row], rtol=1e-5, atol=1e-6)


def test_learning_rate_warms_up_by_iteration_and_the_optimizer_steps_with_it(tiny_pipeline_dir, tmp_path):
    # warm-up over 4 iterations at peak 2e-3: the rates of iterations 0, 1, 2 are 5e-4, 1e-3, 1.5e-3, in the
    # history and in the optimizer; a function of the iteration alone, so a resumed run gets the same ones
    tr = _trainer(tiny_pipeline_dir, tmp_path, {"jpeg_compressibility": JpegCompressibility()},
                  train__iterations=3, train__prompts_per_iteration=2, train__learning_rate=2e-3,
                  train__warmup_iterations=4, sampler__branching=2, sampler__depth=1)
    tr.train()
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r["learning_rate"] for r in history] == pytest.approx([5e-4, 1e-3, 1.5e-3], rel=1e-9)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-3, rel=1e-9)
