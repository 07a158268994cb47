"""The Prefect flow `treegrpo` (deployment `treegrpo/train` in prefect.yaml): the DVC pipeline as tasks on a GPU pool.

Each task runs one stage of dvc.yaml with `dvc repro --single-item STAGE` in the flow's working directory (a clone
of this repository): the same `treegrpo` command, the same dependency check, the same dvc.lock as `dvc repro`, not a
second implementation. Before training, `treegrpo fetch` downloads the base model and the reward models into the
Hugging Face cache and loads each once (it writes nothing DVC tracks). Tasks pass file paths, never tensors. Retries
only where repeating is safe: fetching and pushing the DVC cache, ingest (it downloads prompt sets), fetch (model
downloads and reward-model loading), register (registry calls; the same weights never make a second version). Never
around training. A Markdown artifact sums up each run: the evaluation table and the registered version.

    prefect deployment run treegrpo/train --param overrides='{"train.iterations": 2}'

`overrides` are dotted params.yaml keys, validated like params.yaml and written into it the way `treegrpo profile`
writes (only the changed values' lines; the working copy then shows them, and nothing else, in `git diff params.yaml`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from treegrpo.config import Params, load_params, parse_params, read_yaml

DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"
# retries per stage: idempotent I/O only (ingest downloads, register calls the registry); training never
RETRIES = {"ingest": 2, "register": 3}
FETCH_BEFORE = "train"  # the stage whose models `treegrpo fetch` downloads and loads first
FETCH_RETRIES = 3


def _env() -> dict[str, str]:
    """The environment of the stage commands: this interpreter's bin first (`dvc`, `treegrpo`), no telemetry."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key, value in (("DO_NOT_TRACK", "1"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
                       ("PREFECT_SERVER_ANALYTICS_ENABLED", "false")):
        env.setdefault(key, value)
    return env


def run_command(args: list[str], what: str) -> None:
    """Run `args` in the working directory, streaming its output into the Prefect log; raise if it fails."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(args))
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                logger.info(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); last lines:\n" + "\n".join(tail))


def _dvc(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


def _treegrpo(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "treegrpo"), *args]


def set_params(text: str, overrides: dict[str, Any]) -> str:
    """params.yaml's `text` with dotted `overrides` set, validated; raises on an unknown key.

    The writer `treegrpo profile` uses (`treegrpo.config.edit`): only the lines of values that change are rewritten
    (their comments, which described the old values, dropped), so `git diff params.yaml` shows exactly the overrides.
    """
    from treegrpo.config.edit import parse_entries, set_values

    known = parse_entries(text)
    for dotted in overrides:
        if dotted not in known:
            raise ValueError(f"overrides: {dotted!r} is not a params.yaml key; dotted keys, e.g. train.iterations")
    out = set_values(text, overrides)
    parse_params(read_yaml(out), "params.yaml with the flow's overrides")
    return out


@task(name="apply overrides")
def apply_overrides(overrides: dict[str, Any]) -> str:
    """Write `overrides` into params.yaml (validated first). Returns the params file's path."""
    path = Path("params.yaml")
    if overrides:
        path.write_text(set_params(path.read_text(), overrides))
        get_run_logger().info("params.yaml: set %s", json.dumps(overrides))
    return str(path)


@task(name="dvc pull", retries=2, retry_delay_seconds=10)
def pull_cache() -> None:
    """Fetch what the DVC remote already has, so unchanged stages are restored instead of recomputed."""
    run_command(_dvc("pull", "--allow-missing"), "dvc pull")


@task(name="fetch models", retries=FETCH_RETRIES, retry_delay_seconds=30)
def fetch_models(params_path: str) -> str:
    """`treegrpo fetch`: the base model and every reward model downloaded (Hugging Face cache) and loaded once, so
    a flaky hub or file system is retried here, never inside training. Returns the params file's path."""
    run_command(_treegrpo("fetch", "--params", params_path), "treegrpo fetch")
    return params_path


@task(name="dvc push", retries=2, retry_delay_seconds=10)
def push_cache() -> None:
    """Send the stages' outputs to the default DVC remote (.dvc/config)."""
    run_command(_dvc("push"), "dvc push")


def dvc_stages(dvc_yaml: Path = DVC_YAML) -> dict[str, Any]:
    """dvc.yaml's stages, name -> definition, in the order the pipeline runs them (the one list of stages)."""
    return read_yaml(dvc_yaml.read_text(), str(dvc_yaml))["stages"]


def _interpolate(text: str, params: Params) -> str:
    """dvc.yaml's `${section.key}` references, resolved against `params`."""
    import re

    from treegrpo.config import to_dict

    plain = to_dict(params)

    def value(match: re.Match) -> str:
        node: Any = plain
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def stage_output(stage: str, params: Params, dvc_yaml: Path = DVC_YAML) -> str:
    """The path a stage's result is read from downstream: the first of its `outs` in dvc.yaml, resolved."""
    first = dvc_stages(dvc_yaml)[stage]["outs"][0]
    return _interpolate(first if isinstance(first, str) else next(iter(first)), params)


def run_stage(stage: str, params_path: str) -> str:
    """`dvc repro --single-item STAGE` (DVC skips it when nothing it depends on changed). Returns its output path."""
    run_command(_dvc("repro", "--single-item", stage), f"stage {stage}")
    return stage_output(stage, load_params(params_path))


def stage_task(stage: str):
    return task(run_stage, name=f"dvc repro {stage}", retries=RETRIES.get(stage, 0), retry_delay_seconds=15)


@task(name="summary")
def summarize(registered_path: str, table_path: str, overrides: dict[str, Any], primary_reward: str) -> str:
    """The run's Markdown artifact (its id): the registered version, how to promote it, the evaluation table."""
    registered = json.loads(Path(registered_path).read_text())
    new = "new version" if registered["new_version"] else "same weights as before: no new version"
    lines = [
        "# treegrpo run", "",
        f"- overrides: `{json.dumps(overrides)}`" if overrides else "- overrides: none (params.yaml as committed)",
        f"- registered: **{registered['model_name']} version {registered['version']}** (alias `candidate`, {new})",
        f"- MLflow run: `{registered['run_id']}` at `{registered['tracking_uri']}`",
        f"- promote: `treegrpo promote --version {registered['version']}` (moves `champion` only if better on "
        f"`{primary_reward}`)",
        "", Path(table_path).read_text(),
    ]
    artifact = create_markdown_artifact(markdown="\n".join(lines), key="treegrpo-run",
                                        description="evaluation table and registered model version")
    return str(artifact)


@flow(name="treegrpo", log_prints=True)
def treegrpo(overrides: dict[str, Any] | None = None, pull: bool = True, push: bool = True) -> str:
    """Run the DVC pipeline stage by stage, push its outputs, register the LoRA; returns registered.json's path.

    Args:
        overrides: dotted params.yaml keys to set first, e.g. {"train.iterations": 2}.
        pull: fetch the DVC remote's cache first (a fresh container restores unchanged stages).
        push: send the outputs to the DVC remote at the end.
    """
    overrides = dict(overrides or {})
    if not Path("dvc.yaml").is_file():
        raise RuntimeError(f"{Path.cwd()}: no dvc.yaml; the deployment's working directory must be a treegrpo "
                           "clone (prefect.yaml's pull step, or the process pool's working_dir)")
    params_path = apply_overrides(overrides)
    if pull:
        state = pull_cache(return_state=True)
        if not state.is_completed():
            get_run_logger().warning("dvc pull failed; every stage whose outputs are missing will run")
    outputs = {}
    for stage in dvc_stages():
        if stage == FETCH_BEFORE:
            fetch_models(params_path)
        outputs[stage] = stage_task(stage)(stage, params_path)
    if push:
        push_cache()
    summarize(outputs["register"], outputs["evaluate"], overrides, load_params(params_path).tracking.primary_reward)
    return outputs["register"]


if __name__ == "__main__":
    treegrpo()
