"""The benchmark harness's bookkeeping on the tiny pipeline: what it counts, what it writes (no timing assertions)."""

import json
import math

import pytest
import torch
import yaml

from tests.conftest import REPO
from treegrpo.bench.ablations import run_ablation
from treegrpo.bench.harness import BenchSetup, bench_params, measure_cost
from treegrpo.bench.learning import summarise, train_for_budget
from treegrpo.bench.report import signal_section, targets, write_outputs
from treegrpo.core.tree import tree_nfe

pytestmark = pytest.mark.integration
PROMPTS = ["a red car", "a blue boat", "a green tree", "a yellow flower"]
# a small tree keeps each iteration quick: k = d = 2, one tree, so G = 4 trajectories for the baselines
SMALL_TREE = {"sampler.branching": 2, "sampler.depth": 2, "sampler.trees_per_prompt": 1}


@pytest.fixture(scope="module")
def setup(tiny_pipeline_dir):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    threads = torch.get_num_threads()
    yield BenchSetup("tiny", tiny_pipeline_dir, base, device="cpu", prompts_per_iteration=1, overrides=SMALL_TREE,
                     threads=1)  # one thread: quick on a CPU shared with other work
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cost(setup, tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    return {algo: measure_cost(setup, algo, PROMPTS, iterations=1, warmup=0, limit_repeats=1, work_dir=work,
                               overrides=over)
            for algo, over in (("treegrpo", {"sampler.window.start": 2}), ("grpo", {}))}


def test_baselines_get_the_same_images_per_prompt(setup, tmp_path):
    params = bench_params(setup, "grpo", tmp_path)
    assert params.baselines.group_size == 4  # k^d * T = 2^2 * 1
    assert params.train.algorithm == "grpo" and params.reward.weights == {"jpeg_compressibility": 1.0}


def test_treegrpo_counts_match_spec_formula(cost):
    r = cost["treegrpo"]
    m = r["median"]
    # SPEC §4: s + (1 + k) + k^d (N - s - d) = 2 + 3 + 4 * 6 = 29 evaluations, counted by the hooks
    assert m["nfe_counted"] == m["nfe_trainer"] == m["nfe_expected"] == tree_nfe(10, 2, 2, 2) == 29
    # one forward with gradients per window parent: 1 + k = 3
    assert m["grad_forwards"] == m["parents_trained"] == 3 and m["edges_trained"] == 6
    assert m["images"] == m["eff_group"] == 4 and m["eff_steps"] == 3 and m["window_start"] == 2
    # 2 ODE steps on the root, window steps at 1 then 2 nodes, 6 suffix steps on the 4 leaves
    assert r["batch_histogram"] == {1: 3, 2: 1, 4: 6} and m["transformer_calls"] == 10
    assert m["extra_forwards"] == 0  # no recomputation, no KL reference pass with the defaults
    assert r["sampler_limit_s"] > 0 and r["sampler_ratio"] > 0 and m["peak_memory_mb"] > 0


def test_grpo_counts_every_step_and_trains_a_fraction(cost):
    m = cost["grpo"]["median"]
    # G = 4 trajectories, all N = 10 steps each: G * N; trained: ceil(0.6 * (N - 1)) = 6 SDE steps per trajectory
    assert m["nfe_counted"] == m["nfe_trainer"] == m["nfe_expected"] == 4 * 10
    assert m["grad_forwards"] == m["parents_trained"] == math.ceil(0.6 * 9) * 4 == 24
    assert m["images"] == 4 and m["eff_steps"] == 24


def test_report_has_the_ratio_to_grpo_and_writes_its_files(cost, tmp_path):
    tree, grpo = cost["treegrpo"]["median"], cost["grpo"]["median"]
    part = {"size": "tiny", "device": {"device": "cpu", "cpu": "test", "cpu_cores": 2, "torch_threads": 2,
                                       "torch": "x"},
            "command": "treegrpo bench --size tiny", "iterations": 1, "warmup": 0,
            "results": [cost["treegrpo"], cost["grpo"]]}
    written = write_outputs({"cost": part}, tmp_path)
    assert {p.name for p in written} == {"results.json", "metrics.json", "report.md"}
    report = (tmp_path / "report.md").read_text()
    speedup = grpo["time_iteration"] / tree["time_iteration"]
    assert f"| {speedup:.2f}× /" in report and "| 1.00× / 1.00× |" in report  # wall / CPU time
    assert "29 (29)" in report and "40 (40)" in report and "treegrpo bench --size tiny" in report
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["cost.treegrpo.nfe"] == 29 and metrics["target.speedup"] == pytest.approx(speedup)
    assert json.loads((tmp_path / "results.json").read_text())["cost"]["results"][1]["algorithm"] == "grpo"


def test_learning_runs_evaluate_and_plot(setup, tmp_path):
    setup.apply_threads()
    runs = [train_for_budget(setup, algo, 0, PROMPTS, PROMPTS[:2], budget_s=1e-3, eval_points=1, noises=1,
                             work_dir=tmp_path) for algo in ("treegrpo", "grpo")]
    for run in runs:  # a tiny budget: one iteration, evaluated before and after
        assert run["iterations"] == 1 and [p["iteration"] for p in run["points"]] == [0, 1]
        assert run["points"][1]["images"] == 4 and run["points"][1]["time"] > 0
    summary = summarise(runs)
    assert summary["grpo"]["time_to_baseline_final"] is not None  # GRPO reaches its own final by its end
    learning = {"size": "tiny", "device": {"device": "cpu", "cpu": "test"}, "command": "c", "budget_s": 1e-3,
                "seeds": [0], "eval_prompts": 2, "noises": 1, "reward": "jpeg_compressibility", "runs": runs,
                "summary": summary}
    names = {p.name for p in write_outputs({"learning": learning}, tmp_path / "out")}
    assert {"learning.png", "pareto.png", "curves.json", "report.md"} <= names
    assert (tmp_path / "out" / "learning.png").stat().st_size > 1000


def test_ablation_reports_effgrp_and_effsteps(setup, tmp_path):
    setup.apply_threads()
    over = {"sampler.branching": 2, "sampler.depth": 2, "sampler.trees_per_prompt": 2,
            "sampler.window.strategy": "shifting", "sampler.window.start": 0, "sampler.window.stride": 1,
            "sampler.window.every": 1}
    r = run_ablation(setup, "k=2 d=2 T=2 shifting", over, PROMPTS, PROMPTS[:1], iterations=2, noises=1,
                     work_dir=tmp_path)
    assert (r["eff_group"], r["eff_steps"]) == (8, 6)  # T k^d = 2 * 4; T (1 + k) = 2 * 3
    assert r["window_starts"] == [0, 1]  # the shifting window moves one step per iteration
    assert r["nfe_per_prompt_mean"] == (2 * tree_nfe(10, 2, 2, 0) + 2 * tree_nfe(10, 2, 2, 1)) / 2
    # the tree's signal figures, one row per window start the shifting window visited
    assert [(row["window_start"], row["iterations"]) for row in r["signal"]] == [(0, 1), (1, 1)]
    assert all(0.0 <= row["tree/tie_fraction"] <= 1.0 for row in r["signal"])
    text = "\n".join(signal_section({"ablations": {"tables": {"window": [r]}}}))
    assert "| ablation (window): k=2 d=2 T=2 shifting | 0 | 1 |" in text
    assert "| ablation (window): k=2 d=2 T=2 shifting | 1 | 1 |" in text


def test_targets_report_missing_parts_as_not_measured():
    rows = targets({})
    assert [r["met"] for r in rows] == [None, None, None, None, None]


def test_flops_are_counted_per_call_and_the_same_per_node_for_every_algorithm(cost):
    """torch's counter on each call shape: a call's FLOPs are linear in its rows (every matmul is), so a node costs
    the same in TreeGRPO's batches of 1, 2 and 4 nodes as in GRPO's batches of 4 trajectories, and a trained
    parent (forward + backward) the same in either's micro-batches."""
    tree, grpo = cost["treegrpo"]["median"], cost["grpo"]["median"]
    per_node = tree["flops_sampling"] / tree["nfe_counted"]
    assert per_node > 0 and grpo["flops_sampling"] / grpo["nfe_counted"] == pytest.approx(per_node, rel=1e-9)
    per_parent = tree["flops_training"] / tree["grad_forwards"]
    assert per_parent == pytest.approx(grpo["flops_training"] / grpo["grad_forwards"], rel=1e-9)
    # a backward costs about twice a forward (activation gradients everywhere, weight gradients of LoRA only)
    assert 2 * per_node < per_parent < 4 * per_node
    for r in cost["treegrpo"]["iterations"]:
        assert r["tflops_sampling"] == pytest.approx(r["flops_sampling"] / r["time_sampling"] / 1e12)
        assert r["tflops_total"] == pytest.approx((r["flops_sampling"] + r["flops_training"])
                                                  / (r["time_sampling"] + r["time_training"]) / 1e12)


def test_cost_keeps_the_tree_signal_of_its_window_start(cost):
    (row,) = cost["treegrpo"]["signal"]  # one measured iteration, window fixed at s = 2
    assert (row["window_start"], row["iterations"]) == (2, 1)
    assert {"tree/reward_std_mean", "tree/tie_fraction", "tree/adv_std_level_0", "tree/adv_std_level_1"} <= set(row)
    assert 1.0 <= row["tree/backup_ess_min"] <= row["tree/backup_ess_mean"] <= 2.0  # k = 2


def _cost_part(cost, device):
    return {"size": "tiny", "device": device, "command": "treegrpo bench --size tiny", "iterations": 1, "warmup": 0,
            "results": [cost["treegrpo"], cost["grpo"]]}


def test_report_has_tflops_columns_and_mfu_only_with_a_gpu_peak(cost, tmp_path):
    cpu = {"device": "cpu", "cpu": "test", "cpu_cores": 2, "torch_threads": 1, "torch": "x"}
    report = (tmp_path / "report.md")
    write_outputs({"cost": _cost_part(cost, cpu)}, tmp_path)
    text = report.read_text()
    assert "## How close to the hardware" in text and "| sampling TFLOP/s | update TFLOP/s |" in text
    assert "MFU sampling" not in text
    tree = cost["treegrpo"]["median"]
    assert f"| treegrpo | {tree['flops_sampling'] / 1e12:.3g} | {tree['flops_training'] / 1e12:.3g} |" in text
    # the tree signal, per window start
    assert "## Is the tree carrying signal?" in text and "| cost: treegrpo, window fixed | 2 | 1 |" in text

    gpu = {**cpu, "device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_gib": 79.2}
    part = {**_cost_part(cost, gpu), "peak_bf16_tflops": 989.4, "peak_source": "NVIDIA H100 datasheet"}
    write_outputs({"cost": part}, tmp_path / "gpu")
    text = (tmp_path / "gpu" / "report.md").read_text()
    assert "| MFU sampling | MFU update | MFU sampling + update |" in text and "989.4 TFLOP/s" in text
    mfu = tree["tflops_total"] / 989.4
    (row,) = [r for r in targets({"cost": part}) if r["key"] == "mfu"]
    assert row["value"] == pytest.approx(mfu) and row["met"] is False  # a CPU-sized model on an H100's peak
    metrics = json.loads((tmp_path / "gpu" / "metrics.json").read_text())
    assert metrics["cost.treegrpo.tflops_total"] == pytest.approx(tree["tflops_total"])


def test_bench_is_a_subcommand_with_help(capsys):
    from treegrpo.cli import make_parser

    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--parts", "--size", "--iterations", "--seeds", "--budget", "--out", "--device"):
        assert option in out


# ---------------------------------------------------------------- the gradient part (treegrpo.bench.gradient)
class _Flat:
    """Every leaf scores the same: every advantage is 0, so every group's gradient is exactly 0."""

    def __call__(self, images, prompts):
        return torch.ones(len(images))


class _Bright:
    """The mean pixel value: a score that depends on the image alone (no randomness, no prompt)."""

    def __call__(self, images, prompts):
        return images.float().mean(dim=(1, 2, 3))


class _Coin:
    """A score drawn independently of the image: the true expected gradient is exactly 0 (no signal)."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, images, prompts):
        return torch.rand(len(images), generator=self.gen)


def _grad_trainer(tiny_pipeline_dir, tmp_path, prompts, b, reward):
    from tests.conftest import make_params
    from treegrpo.recipes.trainer import TreeGRPOTrainer

    params, _ = make_params(tiny_pipeline_dir, tmp_path, sampler__branching=2, sampler__depth=1,
                            sampler__trees_per_prompt=2, train__prompts_per_iteration=b)
    trainer = TreeGRPOTrainer(params, prompts, {"jpeg_compressibility": reward})
    trainer.setup()
    return trainer


def test_gradient_part_rows_and_report(setup, tmp_path):
    from treegrpo.bench.gradient import gradient_section, run_gradient

    setup.apply_threads()
    colour = BenchSetup("tiny", setup.model_dir, setup.base_params, device="cpu", reward="color_fraction",
                        prompts_per_iteration=2, overrides=SMALL_TREE, threads=1)
    (row,) = run_gradient(colour, PROMPTS, [("k=2 d=1", {"sampler.depth": 1})], groups=7, work_dir=tmp_path)
    assert row["prompts_per_iteration"] == 2 and row["iterations"] == 4 and row["groups"] == 8  # ceil(7 / 2) = 4
    assert row["parameters"] > 0 and row["seconds_per_group"] > 0 and len(row["window_starts"]) == 4
    assert row["noise"] > 0 and -1.0 <= row["split_half_cos"] <= 1.0 and row["zero_gradient_groups"] == 0
    assert row["snr_per_second"] == pytest.approx(row["snr_per_group"] / row["seconds_per_group"])
    assert row["snr_per_group"] == pytest.approx((row["signal"]) / row["noise"])
    part = {"size": "tiny", "device": {"device": "cpu", "cpu": "test"}, "command": "c", "reward": "color_fraction",
            "groups": 7, "seed": 0, "rows": [row]}
    text = "\n".join(gradient_section(part))
    assert "| k=2 d=1 | 8 |" in text and "(this run used B = 2)" in text
    write_outputs({"gradient": part}, tmp_path / "out")
    assert "## Does the gradient point uphill?" in (tmp_path / "out" / "report.md").read_text()


def test_gradients_are_one_row_per_prompt_group_and_each_its_own(tiny_pipeline_dir, tmp_path):
    """Prompt "a red car" is key 0 in both runs, so it gets the same noise, window and (per-prompt) advantages with
    or without "a blue boat" beside it: its row must be the same, or another group's edges leaked into it (or a
    gradient was not zeroed between groups)."""
    from treegrpo.bench.gradient import group_gradients

    torch.set_num_threads(1)
    pair_trainer = _grad_trainer(tiny_pipeline_dir, tmp_path / "a", PROMPTS[:2], 2, _Bright())
    # an iteration whose batch puts key 0 second: a gradient left over from the first group would show in its row
    it = next(i for i in range(20) if pair_trainer.prompt_batch(i) == [1, 0])
    pair = group_gradients(pair_trainer, it)
    alone = group_gradients(_grad_trainer(tiny_pipeline_dir, tmp_path / "b", PROMPTS[:1], 1, _Bright()), it)
    assert pair.grads.shape[0] == 2 and alone.grads.shape == (1, pair.grads.shape[1])
    assert pair.seconds > 0 and all(p.grad is None for p in pair_trainer.model.parameters())  # zeroed after
    assert pair.grads[1].norm() > 0 and not torch.allclose(pair.grads[0], pair.grads[1])
    assert torch.allclose(alone.grads[0], pair.grads[1], rtol=1e-3, atol=1e-4 * float(pair.grads[1].abs().max()))


def test_gradient_snr_on_known_rewards(tiny_pipeline_dir, tmp_path):
    """Tied leaves give exactly 0 gradients; a score independent of the image has no signal (true SNR 0; the
    estimate's spread here is ~0.02, and a version without the -noise/M correction would read ~1/M = 0.125)."""
    from treegrpo.bench.gradient import group_gradients
    from treegrpo.core.signal import gradient_snr

    torch.set_num_threads(1)
    flat = _grad_trainer(tiny_pipeline_dir, tmp_path / "flat", PROMPTS, 4, _Flat())
    tied = gradient_snr(torch.cat([group_gradients(flat, it).grads for it in range(2)]))
    assert tied.zero_groups == 8 and tied.noise == 0.0 and math.isnan(tied.snr_per_group)
    coin = _grad_trainer(tiny_pipeline_dir, tmp_path / "coin", PROMPTS, 4, _Coin())
    grads = torch.cat([group_gradients(coin, it).grads for it in range(2)])  # (8, D)
    none = gradient_snr(grads)
    assert none.zero_groups == 0 and none.noise > 0 and abs(none.snr_per_group) < 0.06
