"""`treegrpo register`: log the evaluation onto the training run in MLflow and register the LoRA (alias candidate).

The last stage of the pipeline, so it ends `make run` / `dvc repro` with the run's summary on stdout
(`format_run_summary`): base against trained on the headline figures, where the outputs are, and how to open the run
in the MLflow UI.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from treegrpo.cli import quiet_loading_bars

log = logging.getLogger(__name__)

# the embedded default's headline figures (the world's strict accuracy, then the constraints met); any other
# evaluation's is tracking.primary_reward
HEADLINE = ("composition_accuracy", "composition")
LOCAL_STORE = "sqlite:///mlruns/mlflow.db"  # the store `make mlflow-ui` opens


def add_parser(sub) -> None:
    p = sub.add_parser(
        "register",
        help="log the evaluation to the training's MLflow run and register the LoRA (alias candidate)",
        description="Log {eval.output_dir} (metrics, table, grid, scores) and the training history onto the MLflow "
        "run of `treegrpo train` ({train.output_dir}/mlflow_run.json), draw the reward curves to "
        "{tracking.output_dir}/reward_curve.png, and register the LoRA as a pyfunc model under tracking.model_name "
        "with alias `candidate`. The same weights registered twice keep one version. The store is tracking.uri, or "
        "MLFLOW_TRACKING_URI when set. Writes {tracking.output_dir}/registered.json.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=run)


def read_outputs(params) -> tuple[dict, list[dict], list[str]]:
    """metrics.json of the evaluation, history.json of training, and the evaluated prompts (in order)."""
    from treegrpo.recipes.evaluation import read_scores, scored_prompts
    from treegrpo.utils.errors import UserError

    eval_dir, train_dir = Path(params.eval.output_dir), Path(params.train.output_dir)
    for path in (eval_dir / "metrics.json", eval_dir / "scores.jsonl", train_dir / "history.json"):
        if not path.is_file():
            raise UserError(f"{path}: missing; run the pipeline up to evaluate first (`dvc repro evaluate`)")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    history = json.loads((train_dir / "history.json").read_text())
    prompts = scored_prompts(read_scores(eval_dir / "scores.jsonl"))
    return metrics, history, prompts


def run(args: argparse.Namespace) -> int:
    from treegrpo.config import load_params
    from treegrpo.recipes.registry import register_lora
    from treegrpo.training import tracking
    from treegrpo.training.curves import plot_history

    quiet_loading_bars()
    params = load_params(args.params)
    metrics, history, prompts = read_outputs(params)
    out_dir = Path(params.tracking.output_dir)
    curve = plot_history(history, out_dir / "reward_curve.png")
    client = tracking.get_client(params.tracking)
    run_id = tracking.ensure_run(client, params)
    tracking.backfill_history(client, run_id, history)
    tracking.log_outputs(client, run_id, params, curve)
    table = Path(params.eval.output_dir) / "table.md"
    reg = register_lora(client, params, run_id, metrics, prompts, table.read_text() if table.is_file() else None)
    if params.tracking.primary_reward not in metrics["trained"]:
        log.warning("tracking.primary_reward=%s is not in eval.rewards: `treegrpo promote` cannot compare this "
                    "version", params.tracking.primary_reward)
    record = {"model_name": reg.name, "version": reg.version, "alias": "candidate", "run_id": reg.run_id,
              "new_version": reg.created, "tracking_uri": tracking.redact(tracking.tracking_uri(params.tracking)),
              "model_uri": f"models:/{reg.name}/{reg.version}"}
    (out_dir / "registered.json").write_text(json.dumps(record, indent=1) + "\n")
    uri = tracking.redact(tracking.tracking_uri(params.tracking))
    link = tracking.ui_url(params.tracking, client.get_run(reg.run_id).info.experiment_id, reg.run_id)
    paths = {"table": str(table), "image grid": str(Path(params.eval.output_dir) / "grid.png"),
             "reward curve": str(curve) if curve else None,
             "LoRA": str(params.eval.lora or Path(params.train.output_dir) / "lora")}
    print(format_run_summary(metrics, record, paths, headline_rewards(metrics, params.tracking.primary_reward),
                             mlflow_ui_hint(uri, link), str(out_dir / "registered.json")), end="")
    return 0


def headline_rewards(metrics: Mapping, primary_reward: str) -> list[str]:
    """The rewards the summary leads with: the world's accuracy and constraints met when evaluated, else
    `primary_reward` (what promotion compares), else the first evaluated reward."""
    scored = metrics["trained"]
    names = [n for n in HEADLINE if n in scored]
    if primary_reward in scored and primary_reward not in names:
        names.append(primary_reward)
    return names or list(scored)[:1]


def mlflow_ui_hint(uri: str, link: str) -> str:
    """How to open `link` (a run in the MLflow UI) for the store at `uri` (credentials already redacted)."""
    if uri.startswith(("http://", "https://")):
        return f"open {link}"
    if uri == LOCAL_STORE:
        return f"`make mlflow-ui`, then open {link}"
    return f"`mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000`, then open {link}"


def _figure(stat: Mapping) -> str:
    sem = stat.get("sem")
    return f"{stat['mean']:.3f}" + (f" ± {sem:.3f}" if sem is not None else "")


def format_run_summary(metrics: Mapping, registered: Mapping, paths: Mapping[str, str | None],
                       headline: Sequence[str], mlflow_ui: str, registered_file: str) -> str:
    """What the run produced, in a few lines: the end of `make run`.

    Args:
        metrics: the evaluation's metrics.json: `base` and `trained` map each reward to {mean, sem}; `eval_set`,
            `n_prompts`, `samples_per_prompt` and `sets` (each extra set's figures) when present.
        registered: registered.json's record (`model_name`, `version`, `alias`, `new_version`).
        paths: label -> path of each output to point at (None: left out), in the order to print them.
        headline: the rewards to compare, in order (`headline_rewards`).
        mlflow_ui: how to open the run in the MLflow UI (`mlflow_ui_hint`).
        registered_file: where registered.json is.
    Returns:
        the summary, one item per line, ending with a newline.
    """
    from treegrpo.recipes.evaluation import DISPLAY

    each = metrics.get("samples_per_prompt")
    sets = {metrics.get("eval_set", "eval"): metrics, **metrics.get("sets", {})}
    width = max(len(DISPLAY.get(n, n)) for n in headline)
    lines = ["", "treegrpo: the run in one screen", "  base -> trained (mean over prompts ± standard error):"]
    for name, figures in sets.items():
        lines.append(f"    {name}: {figures['n_prompts']} prompts" + (f" x {each} images" if each else ""))
        for reward in headline:
            if reward in figures.get("trained", {}):
                base, trained = figures["base"][reward], figures["trained"][reward]
                change = trained["mean"] - base["mean"]
                lines.append(f"      {DISPLAY.get(reward, reward):<{width}}  {_figure(base)} -> {_figure(trained)}"
                             f"  ({change:+.3f})")
    state = "registered" if registered.get("new_version", True) else "already registered (same weights)"
    items = {**{k: v for k, v in paths.items() if v},
             state: f"{registered['model_name']} version {registered['version']} "
                    f"(alias {registered.get('alias', 'candidate')}), in {registered_file}",
             "MLflow UI": mlflow_ui,
             "promote": "`treegrpo promote` moves alias champion to it if it beats the champion"}
    label = max(len(k) for k in items)
    lines += [f"  {k:<{label}}  {v}" for k, v in items.items()]
    return "\n".join(lines) + "\n"
