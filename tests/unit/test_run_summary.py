"""The summary `treegrpo register` prints at the end of `make run`, from hand-made evaluations: the headline figures
(base -> trained and the change), every prompt set, the outputs' paths, the registered version and the MLflow link."""

from treegrpo.cli.register import format_run_summary, headline_rewards, mlflow_ui_hint

LINK = "http://127.0.0.1:5000/#/experiments/1/runs/abc/model-metrics?workflowType=machine_learning"
RECORD = {"model_name": "treegrpo-lora", "version": "3", "alias": "candidate", "new_version": True}
PATHS = {"table": "outputs/eval/table.md", "image grid": "outputs/eval/grid.png", "reward curve": None,
         "LoRA": "outputs/train/lora"}


def stats(accuracy: float, met: float, hps: float = 0.2) -> dict:
    return {"composition_accuracy": {"mean": accuracy, "sem": 0.019}, "composition": {"mean": met, "sem": 0.013},
            "hpsv2": {"mean": hps, "sem": None}}


def world_metrics() -> dict:
    """The embedded default's metrics.json: the eval set, then two extra sets."""
    return {"eval_set": "unseen", "samples_per_prompt": 4, "n_prompts": 41,
            "base": stats(0.038, 0.369), "trained": stats(0.046, 0.381),
            "sets": {"heldout": {"n_prompts": 93, "base": stats(0.020, 0.300), "trained": stats(0.010, 0.350)},
                     "rl": {"n_prompts": 160, "base": stats(0.100, 0.400), "trained": stats(0.125, 0.500)}}}


def test_the_world_leads_with_accuracy_then_constraints_met_whatever_the_primary_reward():
    assert headline_rewards(world_metrics(), "composition") == ["composition_accuracy", "composition"]
    assert headline_rewards(world_metrics(), "hpsv2") == ["composition_accuracy", "composition", "hpsv2"]
    paper = {"base": {"hpsv2": {}, "clip_score": {}}, "trained": {"hpsv2": {}, "clip_score": {}}}
    assert headline_rewards(paper, "clip_score") == ["clip_score"]
    assert headline_rewards(paper, "aesthetic") == ["hpsv2"]  # primary not evaluated: the first reward


def test_the_summary_gives_base_trained_and_the_change_for_every_set():
    text = format_run_summary(world_metrics(), RECORD, PATHS, ["composition_accuracy", "composition"],
                              f"`make mlflow-ui`, then open {LINK}", "outputs/register/registered.json")
    lines = text.splitlines()
    # unseen: 0.038 -> 0.046 is +0.008; constraints met 0.369 -> 0.381 is +0.012
    unseen = lines.index("    unseen: 41 prompts x 4 images")
    assert lines[unseen + 1].split() == ["Accuracy", "(all", "constraints)", "0.038", "±", "0.019", "->", "0.046",
                                         "±", "0.019", "(+0.008)"]
    assert lines[unseen + 2].split()[-5:] == ["->", "0.381", "±", "0.013", "(+0.012)"]
    heldout = lines.index("    heldout: 93 prompts x 4 images")
    assert lines[heldout + 1].endswith("(-0.010)")  # 0.020 -> 0.010: a loss is shown as one
    assert lines.index("    rl: 160 prompts x 4 images") == heldout + 3
    assert "hpsv2" not in text and "HPS" not in text  # only the headline rewards
    items = [" ".join(line.split()) for line in lines]  # the labels' column width aside
    assert "table outputs/eval/table.md" in items and "LoRA outputs/train/lora" in items
    assert "reward curve" not in text  # a path of None is left out
    assert "registered treegrpo-lora version 3 (alias candidate), in outputs/register/registered.json" in items
    assert f"MLflow UI `make mlflow-ui`, then open {LINK}" in items


def test_the_same_weights_again_and_a_reward_without_standard_error():
    metrics = {"n_prompts": 2, "base": {"hpsv2": {"mean": 0.25, "sem": None}},
               "trained": {"hpsv2": {"mean": 0.2725, "sem": None}}}
    text = format_run_summary(metrics, {**RECORD, "new_version": False}, {}, ["hpsv2"], "open x", "r.json")
    assert "    eval: 2 prompts" in text.splitlines()  # no eval_set name, no samples_per_prompt: the defaults
    assert "HPS-v2.1  0.250 -> 0.273  (+0.023)" in text  # 0.2725 - 0.25 = 0.0225, rounded to 3 places
    assert "already registered (same weights) treegrpo-lora version 3" in " ".join(text.split())


def test_how_to_open_the_mlflow_ui_depends_on_the_store():
    assert mlflow_ui_hint("sqlite:///mlruns/mlflow.db", LINK) == f"`make mlflow-ui`, then open {LINK}"
    assert mlflow_ui_hint("http://mlflow.lab:5000", "http://mlflow.lab:5000/#/x") == "open http://mlflow.lab:5000/#/x"
    other = mlflow_ui_hint("sqlite:////srv/mlflow.db", LINK)
    assert other.startswith("`mlflow ui --backend-store-uri sqlite:////srv/mlflow.db --host 127.0.0.1")
