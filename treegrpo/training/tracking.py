"""MLflow tracking: one run per training run, fed by the trainer's `log_fn`; the evaluation logged onto it.

The trainer never sees MLflow: `treegrpo train` wraps it in `training_run(params, run_key)`, which opens the run (or
reopens the one of the same training run: the same `run_identity.RunIdentity.key`, after a crash or when
`dvc repro` re-runs a finished training), logs every params.yaml key flattened (`train.learning_rate`), tags it with
the run key, the git commit, the `dvc.lock` hash and a params hash, and hands back a `MetricLogger` to call from
`log_fn`. The run id goes to `{train.output_dir}/mlflow_run.json`, where `treegrpo register` finds it to log the
evaluation and the model. Only the main process (RANK 0 under `accelerate launch`) talks to MLflow. The experiment
is tagged as a model-training one (`EXPERIMENT_KIND`); MLflow 3.17's UI opens experiments on its GenAI (traces)
overview all the same unless its switch says "Model training", so `treegrpo train` logs a link that does (`ui_url`).

Names: history.json keeps the trainer's figure names (DVC and the benchmark read them); MLflow gets them grouped by
prefix (`metric_name`: `reward/...`, `rl/...`, `tree/...`, `time/...`, `sampler/...`, `system/...`), so a run's
charts come in sections, reward first. The figures fixed by the run's shape (`CONSTANT`: images, EffGrp, edges
trained, ...) are logged once, as `shape.*` params, not as flat charts; an iteration where one differs logs it as a
`shape/...` metric, so nothing is lost.

Nothing here runs at import: the tracking URI is chosen per call (`tracking_uri`), never set globally at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from treegrpo.config import Params, to_dict
from treegrpo.config.tracking import TrackingParams
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

ENV_URI = "MLFLOW_TRACKING_URI"
RUN_FILE = "mlflow_run.json"
REDACTED = "<redacted>"
RUN_KEY_TAG = "treegrpo.run_key"  # `RunIdentity.key`: which training run an MLflow run records
# the tag MLflow 3 records an experiment's kind in (custom_model_development | genai_development). MLflow 3.17's UI
# does not read it: its "GenAI | Model training" switch (default GenAI) or a link's `workflowType` decides (`ui_url`)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# the trainer's figures that its shape fixes for the whole run: logged once, as params `shape.KEY`
CONSTANT = ("images", "eff_group", "eff_steps", "parents_trained", "edges_trained", "backward_passes")
CONSTANT_PARAM = "shape."
# MLflow's run page charts a run's metrics in one section per prefix, sections in alphabetical order (checked in the
# 3.17 UI): `reward/` first, then `rl/` (the policy update), `sampler/`, `test/` (the evaluation), `time/`, `tree/`;
# memory goes to `system/`, which MLflow shows on its "System metrics" tab. The trainer's names not set by a rule in
# `metric_name`:
NAMES = {"reward_mean": "reward/mean", "loss": "rl/loss", "grad_norm": "rl/grad_norm",
         "clip_fraction": "rl/clip_fraction", "approx_kl": "rl/approx_kl", "ratio_min": "rl/ratio_min",
         "ratio_mean": "rl/ratio_mean", "ratio_max": "rl/ratio_max", "first_step_ratio_dev": "rl/first_step_ratio_dev",
         "skipped_steps": "rl/skipped_steps", "skipped": "rl/skipped", "nfe": "sampler/nfe",
         "window_start": "sampler/window_start"}


def tracking_uri(params: TrackingParams) -> str:
    """`MLFLOW_TRACKING_URI` when set (a worker's environment), else `tracking.uri`."""
    return os.environ.get(ENV_URI) or params.uri


def redact(uri: str) -> str:
    """`uri` without credentials: `postgresql://user:pw@host/db` -> `postgresql://<redacted>@host/db`."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return uri
    return f"{scheme}://{REDACTED}@{rest.split('@', 1)[1]}"


def get_client(params: TrackingParams):
    """An `MlflowClient` on the tracking URI (also the registry URI). A local SQLite file's folder is created."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(params)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client, name: str) -> str:
    """The id of experiment `name`, created if missing, tagged a model-training experiment (`EXPERIMENT_KIND`)
    unless it already says what kind it is."""
    key, kind = EXPERIMENT_KIND
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, tags={key: kind})
    if key not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, key, kind)
    return experiment.experiment_id


UI = "http://127.0.0.1:5000"  # `make mlflow-ui` on the local store


def ui_url(params: TrackingParams, experiment: str, run_id: str | None = None) -> str:
    """A link to the experiment (or a run's charts) in the MLflow UI, on its model-training view: MLflow 3.17's UI
    opens every experiment on the GenAI view unless its "GenAI | Model training" switch, or this link, says
    otherwise (the `EXPERIMENT_KIND` tag records the kind, but that UI does not read it)."""
    uri = redact(tracking_uri(params))
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) and "@" not in uri else UI
    page = f"runs/{run_id}/model-metrics" if run_id else "runs"
    return f"{base}/#/experiments/{experiment}/{page}?workflowType=machine_learning"


def metric_name(key: str) -> str:
    """The MLflow name of a trainer figure (a history.json key): grouped by prefix, so the UI charts them in sections.

    `reward_hpsv2_mean` -> `reward/hpsv2_mean`, `time_sampling` -> `time/sampling`, `peak_memory_mb` ->
    `system/peak_memory_mb`, `loss` -> `rl/loss` (`NAMES`); names with a prefix already (`tree/tie_fraction`) stay;
    any other figure goes to `rl/`.
    """
    if "/" in key:
        return key
    if key in NAMES:
        return NAMES[key]
    for prefix in ("reward", "time"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key.removeprefix(prefix + '_')}"
    if key.endswith("_memory_mb"):
        return f"system/{key}"
    if key in CONSTANT:
        return f"shape/{key}"
    return f"rl/{key}"


def split_figures(figures: Mapping[str, Any], constants: dict[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """One iteration's figures -> (MLflow metrics by `metric_name`, new `shape.*` params to log once).

    Args:
        figures: the trainer's figures (a history.json record; `iteration` and non-numbers are left out).
        constants: the run's `shape.*` params logged so far; updated in place with the new ones.
    Returns:
        the metrics, and the params to log now. A `CONSTANT` figure equal to its param is not a metric; one that
        differs from it is (`shape/KEY`), at this iteration.
    """
    metrics, new = {}, {}
    for key, value in figures.items():
        if key == "iteration" or not _is_number(value):
            continue
        if key in CONSTANT:
            param, text = CONSTANT_PARAM + key, _param_text(value)
            if param not in constants:
                constants[param] = new[param] = text
                continue
            if constants[param] == text:
                continue
        metrics[metric_name(key)] = float(value)
    return metrics, new


def _param_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted params.yaml keys -> string values: {"train": {"seed": 42}} -> {"train.seed": "42"}; lists as JSON."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not dotted.endswith("reward.weights"):
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, list | tuple | Mapping):
            out[dotted] = json.dumps(value, sort_keys=True)
        else:
            out[dotted] = str(value)
    return out


def flat_params(params: Params) -> dict[str, str]:
    """Every params.yaml key, flattened; the tracking URI is redacted of credentials (none are logged)."""
    flat = flatten(to_dict(params))
    flat["tracking.uri"] = redact(tracking_uri(params.tracking))
    return flat


def params_hash(params: Params) -> str:
    """A short hash of every section but `tracking` (where results are recorded does not change them)."""
    plain = {k: v for k, v in to_dict(params).items() if k != "tracking"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def file_md5(path: str | Path) -> str | None:
    path = Path(path)
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def provenance_tags(params: Params) -> dict[str, str]:
    """git commit (and whether tracked files differ from it), the dvc.lock hash and the params hash."""
    tags = {"params_hash": params_hash(params), "dvc_lock_md5": file_md5("dvc.lock") or "none"}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit  # what the MLflow UI shows as the run's source version
        tags["git_dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    return tags


def is_main_process() -> bool:
    """True unless this is a non-zero rank of `accelerate launch`/`torchrun` (which set RANK)."""
    return os.environ.get("RANK", "0") in ("", "0")


class MetricLogger:
    """`log_fn(metrics, iteration)` for the trainer: one `log_batch` per iteration, step = iteration.

    A tracking server that stops answering must not stop training: a failed call is logged as a warning and the
    metrics stay in history.json, from which `treegrpo register` backfills the run.
    """

    def __init__(self, params: TrackingParams, run_id: str, constants: Mapping[str, str] | None = None):
        self.params, self.run_id = params, run_id
        self.constants = dict(constants or {})  # the run's `shape.*` params (a reopened run has some)
        self._client = None
        self.failures = 0

    def __call__(self, figures: Mapping[str, float], iteration: int) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        before = dict(self.constants)
        metrics, new = split_figures(figures, self.constants)
        batch = [Metric(k, v, now, iteration) for k, v in metrics.items()]
        if not self._send(lambda client: client.log_batch(self.run_id, metrics=batch,
                                                          params=[Param(k, v) for k, v in new.items()]),
                          f"log iteration {iteration}", "history.json keeps it"):
            self.constants = before  # logged with a later iteration, or by `treegrpo register`'s backfill

    def log_file(self, path: str | Path, iteration: int, folder: str = "samples") -> None:
        """The trainer's `artifact_fn`: a file written during training (a sample grid) as an artifact in
        `folder`/. A failure is a warning, like metrics: the file stays in the training output."""
        self._send(lambda client: client.log_artifact(self.run_id, str(path), artifact_path=folder),
                   f"log {path} at iteration {iteration}", "it stays on disk")

    def _send(self, call, what: str, kept: str) -> bool:
        """`call(client)`; any tracking failure is counted and warned about, never raised (training goes on).
        Returns whether the call went through."""
        try:
            if self._client is None:
                self._client = get_client(self.params)
            call(self._client)
        except Exception as err:  # noqa: BLE001 - any tracking failure: keep training, warn
            self.failures += 1
            log.warning("MLflow: could not %s (%s); %s", what, err, kept)
            return False
        return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_run_file(train_dir: str | Path) -> dict[str, str] | None:
    path = Path(train_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _reusable_run(client, record: dict | None, run_key: str, experiment: str) -> str | None:
    """The recorded run's id if it exists here, is not deleted, lives in `experiment` and records the training run
    `run_key` (its `RUN_KEY_TAG`), finished or not."""
    from mlflow.exceptions import MlflowException

    if not record:
        return None
    try:
        run = client.get_run(record["run_id"])
    except MlflowException:
        return None
    if run.info.lifecycle_stage == "deleted" or run.data.tags.get(RUN_KEY_TAG) != run_key:
        return None
    if run.info.experiment_id != experiment_id(client, experiment):
        return None
    return run.info.run_id


def _note_changed_params(client, run_id: str, params: Params) -> None:
    """Params that changed without changing the training run (how often to save, the eval settings, ...) cannot be
    logged again (MLflow params are immutable): tag them `resumed_with.KEY` with their new value."""
    logged = client.get_run(run_id).data.params
    changed = {k: v for k, v in flat_params(params).items() if logged.get(k) != v}
    for key, value in sorted(changed.items()):
        client.set_tag(run_id, f"resumed_with.{key}", value)
    if changed:
        log.info("MLflow: run %s reopened with other values of %s (tagged resumed_with.*)", run_id,
                 ", ".join(sorted(changed)))


def start_run(params: Params, source: str, tags: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """A new run in `tracking.experiment` with every param, the provenance tags and `tags`. Returns
    (client, run_id)."""
    from mlflow.entities import Param

    client = get_client(params.tracking)
    try:
        exp = experiment_id(client, params.tracking.experiment)
    except Exception as err:  # noqa: BLE001 - name the store and the fix, whatever the driver raised
        raise UserError(f"MLflow: cannot use tracking URI {redact(tracking_uri(params.tracking))} ({err}); start the "
                        f"server, or unset {ENV_URI} to use tracking.uri") from err
    tags = {**provenance_tags(params), "mlflow.source.name": source, "base_model": params.model.pretrained,
            **(tags or {})}
    run = client.create_run(exp, tags=tags)
    items = [Param(k, v) for k, v in sorted(flat_params(params).items())]
    for lo in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[lo : lo + 100])
    return client, run.info.run_id


@contextlib.contextmanager
def training_run(params: Params, run_key: str) -> Iterator[MetricLogger | None]:
    """The MLflow run of one training run, as a context: yields the trainer's metric logger (None off rank 0).

    Args:
        params: all of params.yaml.
        run_key: the training run's `RunIdentity.key` (its trajectory and end).

    Reopens the run recorded in `{train.output_dir}/mlflow_run.json` when it records the same `run_key` (a killed
    `dvc repro` resuming from a checkpoint, or a re-run that resumes the final one); otherwise starts a new one.
    On success, the iterations in `history.json` the run lacks are logged (a run opened for a resume point another
    MLflow run trained to). The run ends FINISHED, or FAILED/KILLED with the exception, which propagates.
    """
    if not is_main_process():
        yield None
        return
    out_dir = Path(params.train.output_dir)
    client = get_client(params.tracking)
    run_id = _reusable_run(client, read_run_file(out_dir), run_key, params.tracking.experiment)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        _note_changed_params(client, run_id, params)
        log.info("MLflow: reopening run %s (the same training run)", run_id)
    else:
        client, run_id = start_run(params, "treegrpo train", tags={RUN_KEY_TAG: run_key})
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "experiment": params.tracking.experiment,
              "tracking_uri": redact(tracking_uri(params.tracking))}
    (out_dir / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
    log.info("MLflow: run %s at %s; its charts: %s", run_id, record["tracking_uri"],
             ui_url(params.tracking, experiment_id(client, params.tracking.experiment), run_id))
    status = "FAILED"
    try:
        yield MetricLogger(params.tracking, run_id, logged_constants(client, run_id))
        _backfill_from_file(client, run_id, out_dir / "history.json")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status)


def _backfill_from_file(client, run_id: str, path: Path) -> None:
    """`backfill_history` from a history.json, if there is one; a tracking failure is a warning (register retries)."""
    if not path.is_file():
        return
    try:
        added = backfill_history(client, run_id, json.loads(path.read_text()))
    except Exception as err:  # noqa: BLE001 - the training is done; `treegrpo register` backfills again
        log.warning("MLflow: could not log the iterations of %s (%s); `treegrpo register` retries", path, err)
        return
    if added:
        log.info("MLflow: logged %d iterations from %s (trained before this run's resume point)", added, path)


def ensure_run(client, params: Params) -> str:
    """The training run recorded in `{train.output_dir}/mlflow_run.json`, or, when this store lacks it (outputs
    restored from a DVC cache, another tracking URI), a new run tagged `restored_outputs`."""
    from mlflow.exceptions import MlflowException

    record = read_run_file(params.train.output_dir)
    if record:
        try:
            return client.get_run(record["run_id"]).info.run_id
        except MlflowException:
            log.warning("MLflow: run %s is not in %s; logging to a new run", record["run_id"],
                        redact(tracking_uri(params.tracking)))
    _, run_id = start_run(params, "treegrpo register")
    client.set_tag(run_id, "restored_outputs", "true")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def logged_constants(client, run_id: str) -> dict[str, str]:
    """The run's `shape.*` params (the figures logged once)."""
    return {k: v for k, v in client.get_run(run_id).data.params.items() if k.startswith(CONSTANT_PARAM)}


def backfill_history(client, run_id: str, history: list[dict[str, float]]) -> int:
    """Log the iterations of history.json the run lacks (the tracking store was down, or a new run), named and
    split as `MetricLogger` logs them.

    Returns:
        how many iterations were logged.
    """
    from mlflow.entities import Metric, Param

    logged = {m.step for m in client.get_metric_history(run_id, metric_name("reward_mean"))}
    constants = logged_constants(client, run_id)
    now = int(time.time() * 1000)
    missing = [r for r in history if r["iteration"] not in logged]
    for record in missing:
        metrics, new = split_figures(record, constants)
        client.log_batch(run_id, metrics=[Metric(k, v, now, int(record["iteration"])) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in new.items()])
    return len(missing)


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluation's metrics.json flattened for MLflow: `test/trained.hpsv2.mean`, `test/delta.hpsv2`, ... (the
    held-out evaluation; a `test/` section sorts after `reward/` on MLflow's run page)."""
    flat = {}
    for model in ("base", "trained"):
        for reward, stat in metrics.get(model, {}).items():
            for key in ("mean", "sem"):
                if _is_number(stat.get(key)) and math.isfinite(stat[key]):
                    flat[f"test/{model}.{reward}.{key}"] = float(stat[key])
    for reward, value in metrics.get("delta", {}).items():
        flat[f"test/delta.{reward}"] = float(value)
    return flat


def log_outputs(client, run_id: str, params: Params, reward_curve: Path | None) -> None:
    """The evaluation (metrics, table, grid, scores) and the training history onto the run, as metrics and files."""
    from mlflow.entities import Metric

    eval_dir, train_dir = Path(params.eval.output_dir), Path(params.train.output_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in eval_metrics(metrics).items()])
    for name in ("metrics.json", "table.md", "grid.png", "scores.jsonl"):
        if (eval_dir / name).is_file():
            client.log_artifact(run_id, str(eval_dir / name), "eval")
    for name in ("metrics.json", "history.json"):
        if (train_dir / name).is_file():
            client.log_artifact(run_id, str(train_dir / name), "train")
    if reward_curve is not None and reward_curve.is_file():
        client.log_artifact(run_id, str(reward_curve), "train")
