"""`treegrpo register`: log the evaluation onto the training run in MLflow and register the LoRA (alias candidate)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from treegrpo.cli import quiet_loading_bars

log = logging.getLogger(__name__)


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
    verb = "registered" if reg.created else "already registered (same weights)"
    print(f"{verb}: {reg.name} version {reg.version} (alias candidate), run {reg.run_id}")
    return 0
