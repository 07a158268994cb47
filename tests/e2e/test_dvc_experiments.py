"""`dvc exp run -S ...` twice, then `dvc exp show`: each experiment's row carries its train and eval metrics (the
metrics files are in DVC's cache, which the experiment's dvc.lock names), and the two can be compared."""

import json
import shutil

import pytest

from tests.e2e.conftest import sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
METRICS = ("outputs/train/metrics.json", "outputs/eval/metrics.json")


def _rows(node, found=None) -> dict[str, dict]:
    """Every revision of `dvc exp show --json` that has a name (the experiments), by name: its `data`."""
    found = {} if found is None else found
    if isinstance(node, list):
        for item in node:
            _rows(item, found)
    elif isinstance(node, dict):
        if node.get("name") and isinstance(node.get("data"), dict):
            found[node["name"]] = node["data"]
        for value in node.values():
            if isinstance(value, list | dict):
                _rows(value, found)
    return found


def test_dvc_exp_show_has_the_metrics_of_every_experiment(pipeline_repo, tmp_path):
    # a copy: experiments change the workspace, its MLflow store and registry, which the other e2e tests read
    repo = shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "the pipeline's dvc.lock"], repo)
    sh(["dvc", "exp", "run", "-n", "seed-1", "-S", "eval.seed=1"], repo, timeout=900)  # evaluate again only
    sh(["dvc", "exp", "run", "-n", "lr-0.02", "-S", "train.learning_rate=0.02"], repo, timeout=900)  # train again

    rows = _rows(json.loads(sh(["dvc", "exp", "show", "--json"], repo).stdout))
    assert {"seed-1", "lr-0.02"} <= set(rows), sorted(rows)
    for name in ("seed-1", "lr-0.02"):
        metrics = rows[name].get("metrics") or {}
        for path in METRICS:
            assert "error" not in metrics.get(path, {}) and metrics.get(path, {}).get("data"), (name, path, metrics)
    train = {n: rows[n]["metrics"]["outputs/train/metrics.json"]["data"] for n in ("seed-1", "lr-0.02")}
    assert "reward_mean" in train["seed-1"]
    assert train["seed-1"] != train["lr-0.02"]  # another learning rate trained another model
    shown = sh(["dvc", "exp", "show", "--no-pager", "--md"], repo).stdout
    assert "!" not in "".join(line for line in shown.splitlines() if "seed-1" in line or "lr-0.02" in line)
