"""The learning benchmark's summary, worked by hand on made-up curves: equal time, equal images, accuracy."""

from __future__ import annotations

import pytest

from treegrpo.bench.learning import step_value, summarise, time_to_reach
from treegrpo.bench.report import flat_metrics, learning_section
from treegrpo.cli import main


def _run(algo: str, points: list[tuple[float, float, float, float]]) -> dict:
    return {"algorithm": algo, "seed": 0, "iterations": len(points) - 1, "iteration_times": [1.0],
            "points": [{"time": t, "images": n, "iteration": i, "reward": r, "accuracy": a}
                       for i, (t, n, r, a) in enumerate(points)]}


# TreeGRPO samples 10 images a second, GRPO 5: in the same 20 s TreeGRPO sees 200 images, GRPO 100
TREE = _run("treegrpo", [(0, 0, 0.30, 0.00), (10, 100, 0.50, 0.10), (20, 200, 0.60, 0.20)])
GRPO = _run("grpo", [(0, 0, 0.30, 0.00), (10, 50, 0.35, 0.02), (20, 100, 0.40, 0.05)])


def test_step_value_holds_the_last_evaluation_of_any_figure():
    assert step_value(TREE["points"], 150, "images") == 0.50
    assert step_value(TREE["points"], 150, "images", "accuracy") == 0.10
    assert step_value(TREE["points"], 20, "time", "accuracy") == 0.20


def test_equal_images_reads_every_algorithm_where_the_fewest_images_stopped():
    summary = summarise([TREE, GRPO])
    assert summary["treegrpo"]["common_images"] == summary["grpo"]["common_images"] == 100
    assert summary["treegrpo"]["reward_at_common_images"] == 0.50  # its evaluation at 100 images
    assert summary["grpo"]["reward_at_common_images"] == 0.40  # its final
    assert summary["treegrpo"]["accuracy_at_common_images"] == 0.10
    assert (summary["treegrpo"]["start_accuracy"], summary["treegrpo"]["final_accuracy"]) == (0.0, 0.20)


def test_time_and_images_to_reach_the_baselines_final():
    summary = summarise([TREE, GRPO])
    # GRPO's final 0.40: TreeGRPO's curve first holds >= 0.40 at its 10 s / 100-image evaluation
    assert summary["treegrpo"]["time_to_baseline_final"] == pytest.approx(10.0)
    assert summary["treegrpo"]["images_to_baseline_final"] == pytest.approx(100.0)
    assert summary["grpo"]["images_to_baseline_final"] == pytest.approx(100.0)
    assert time_to_reach([TREE], 0.7, 20.0) is None  # never reached


def test_report_and_metrics_carry_equal_images_and_accuracy():
    part = {"summary": summarise([TREE, GRPO]), "size": "world", "device": {"device": "cpu", "cpu": "test"},
            "command": "c", "budget_s": 20.0, "seeds": [0], "eval_prompts": 93, "noises": 2, "reward": "composition"}
    text = "\n".join(learning_section(part))
    assert "At equal images sampled (100" in text
    assert "| treegrpo | 0.500 | 100 | 0.000 | 0.200 | 0.100 |" in text
    assert flat_metrics({"learning": part})["learning.grpo.final_accuracy"] == 0.05


def test_world_size_without_a_pretrained_model_names_the_stage_to_run(tmp_path, capsys):
    assert main(["bench", "--size", "world", "--parts", "learning", "--model-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "dvc repro pretrain" in err and str(tmp_path / "none") in err


def test_ablation_table_gains_an_accuracy_column_when_every_row_has_one():
    from treegrpo.bench.report import ablation_section

    row = {"label": "k=3 d=3", "eff_group": 27, "eff_steps": 13, "nfe_per_prompt_mean": 163,
           "iteration_time_median": 3.5, "train_reward_mean": 0.37, "heldout_start": 0.349, "heldout_final": 0.343,
           "heldout_accuracy_start": 0.022, "heldout_accuracy_final": 0.027}
    part = {"device": {"device": "cpu", "cpu": "test"}, "command": "c", "size": "world", "iterations": 6, "seed": 0,
            "reward": "composition"}
    text = "\n".join(ablation_section({**part, "tables": {"shape": [row]}}))
    assert "| k=3 d=3 | 27 | 13 | 163 | 3.50 | 0.370 | 0.349 → 0.343 | 0.022 → 0.027 |" in text
    bare = {k: v for k, v in row.items() if not k.startswith("heldout_accuracy")}
    assert "accuracy" not in "\n".join(ablation_section({**part, "tables": {"shape": [bare]}}))
