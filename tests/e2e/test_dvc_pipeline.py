"""`dvc repro` from a fresh clone: every stage runs, a model version with alias candidate and PNG plots are left,
and a second `dvc repro` does nothing; param changes invalidate only the stages that read them; a bad value stops
the pipeline before any stage deletes its outputs; validating the same prompts again changes nothing."""

import json

import pytest

from tests.e2e.conftest import set_params, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _mlflow(repo):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _stale_stages(repo) -> set[str]:
    return set(json.loads(sh(["dvc", "status", "--json"], repo).stdout or "{}"))


def test_repro_leaves_a_candidate_and_plots_and_a_second_repro_does_nothing(pipeline_repo):
    repo = pipeline_repo
    registered = json.loads((repo / "outputs/register/registered.json").read_text())
    assert registered["model_name"] == "treegrpo-lora" and registered["alias"] == "candidate"
    for png in ("outputs/eval/grid.png", "outputs/register/reward_curve.png"):
        assert (repo / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "| trained (LoRA" in (repo / "outputs/eval/table.md").read_text()

    client = _mlflow(repo)
    mv = client.get_model_version_by_alias("treegrpo-lora", "candidate")
    assert str(mv.version) == registered["version"]
    run = client.get_run(mv.run_id)
    assert run.data.params["train.iterations"] == "2" and run.info.status == "FINISHED"
    assert "git_commit" in run.data.tags and run.data.tags["dvc_lock_md5"] != "none"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")] == [0, 1]
    assert "test/trained.jpeg_compressibility.mean" in run.data.metrics
    assert {"eval/table.md", "eval/grid.png"} <= {a.path for a in client.list_artifacts(run.info.run_id, "eval")}

    again = sh(["dvc", "repro"], repo)
    assert "Data and pipelines are up to date" in again.stdout
    assert len(client.search_model_versions("name = 'treegrpo-lora'")) == 1  # nothing registered again
    assert _stale_stages(repo) == set()
    assert "reward_mean" in sh(["dvc", "metrics", "show"], repo).stdout


def test_a_param_invalidates_only_the_stages_that_read_it(pipeline_repo):
    repo = pipeline_repo
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"eval.seed": 1})
        # train, and everything before it, stay valid (`check` reads every param, and its output does not change)
        assert _stale_stages(repo) == {"check", "evaluate"}
        (repo / "params.yaml").write_text(original)
        set_params(repo, {"train.learning_rate": 0.02})
        assert _stale_stages(repo) == {"check", "train"}
    finally:
        (repo / "params.yaml").write_text(original)
    assert _stale_stages(repo) == set()


def _folder(path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_bad_value_stops_the_pipeline_before_it_deletes_the_trained_outputs(pipeline_repo):
    """DVC deletes a stage's outputs before running it: the bad value must fail in `check`, before train."""
    repo = pipeline_repo
    original = (repo / "params.yaml").read_text()
    train = repo / "outputs" / "train"
    before = {"lora": _folder(train / "lora"),
              **{name: (train / name).read_bytes() for name in ("metrics.json", "history.json", "mlflow_run.json")}}
    assert before["lora"], "the pipeline trained no LoRA"
    bad = {"sampler.branching": ("  branching: 2 ", "  branching: 0 "),
           "model.pretrained": ("  pretrained: models/world-sd3 ", "  pretrained: models/no-such-model ")}
    try:
        for key, (good, wrong) in bad.items():
            assert original.count(good) == 1, good
            (repo / "params.yaml").write_text(original.replace(good, wrong))
            failed = sh(["dvc", "repro"], repo, check=False)
            assert failed.returncode != 0 and key in failed.stderr + failed.stdout, failed.stdout[-2000:]
            assert "Running stage 'train'" not in failed.stdout
            after = {"lora": _folder(train / "lora"),
                     **{name: (train / name).read_bytes() for name in before if name != "lora"}}
            assert after == before, key
    finally:
        (repo / "params.yaml").write_text(original)
    again = sh(["dvc", "repro"], repo)
    assert "Running stage 'check'" in again.stdout and "Running stage 'train'" not in again.stdout
    assert _stale_stages(repo) == set()


def test_validating_the_same_prompts_again_changes_no_stage_output(pipeline_repo):
    """GX's Data Docs carry the time of each run; they stay out of DVC's hash of data.validated_dir (.dvcignore), so
    the same prompts give the same dvc.lock and nothing downstream re-runs."""
    repo = pipeline_repo
    lock = (repo / "dvc.lock").read_text()
    sh(["dvc", "repro", "--force", "--single-item", "validate"], repo)
    assert (repo / "data" / "validated" / "data_docs" / "index.html").is_file()  # still written, for people
    assert (repo / "dvc.lock").read_text() == lock
    assert _stale_stages(repo) == set()


def test_params_rewritten_by_dvc_exp_run_set_param_still_load(tmp_path):
    """`dvc exp run -S k=v` rewrites params.yaml in YAML 1.2 (`mixed_precision: "no"` loses its quotes); the
    params must load the same, or every experiment fails at its first stage."""
    import shutil

    from dvc.utils.hydra import apply_overrides  # what `dvc exp run --set-param` calls

    from tests.conftest import REPO
    from treegrpo.config import load_params

    path = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", path)
    apply_overrides(str(path), ["train.iterations=3", "train.algorithm=grpo"])
    assert 'mixed_precision: "no"' not in path.read_text()
    p, before = load_params(path), load_params(REPO / "params.yaml")
    assert (p.train.iterations, p.train.algorithm) == (3, "grpo")
    assert p.train.mixed_precision == "no" and p.tracking == before.tracking and p.lora == before.lora
