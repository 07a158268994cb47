"""`treegrpo train`: TreeGRPO on the validated training prompts (resumes from the last checkpoint if killed)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from treegrpo.cli import quiet_loading_bars

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the LoRA with TreeGRPO (resumes from the newest checkpoint after a crash)",
        description="Train a LoRA on the transformer with TreeGRPO on {data.validated_dir}/train.parquet, scored by "
        "reward.weights. Writes {train.output_dir}/lora (diffusers LoRA format), metrics.json, history.json, "
        "checkpoints/, samples/ (leaf-image grids every train.sample_every iterations, also MLflow artifacts) and "
        "mlflow_run.json (the MLflow run, in tracking.uri, that every iteration is logged to); "
        "started again with the same params it resumes from the newest complete checkpoint at or below "
        "train.iterations (and its MLflow run). "
        "Multi-GPU: `accelerate launch -m treegrpo train`.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--prompts", metavar="FILE", help="training prompts from FILE (.parquet, or text one per line) "
                   "instead of {data.validated_dir}/train.parquet")
    p.set_defaults(func=run)


def read_train_prompts(validated_dir: str, override: str | None) -> list[str]:
    from treegrpo.data import load_prompts
    from treegrpo.utils.errors import UserError

    if override and not override.endswith(".parquet"):
        path = Path(override)
        if not path.is_file():
            raise UserError(f"--prompts {override}: no such file")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return load_prompts(override or Path(validated_dir) / "train.parquet")


def logs_above_the_bar():
    """Log lines written to the terminal during training print above the progress bar instead of breaking it
    (tqdm's redirect, only when the root logger writes to the terminal: `treegrpo` configures it so)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    console = any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
                  for h in logging.root.handlers)
    return logging_redirect_tqdm() if console else contextlib.nullcontext()


def run(args: argparse.Namespace) -> int:
    from treegrpo.config import load_params
    from treegrpo.recipes.trainer import TreeGRPOTrainer
    from treegrpo.rewards.registry import build_rewards
    from treegrpo.training.tracking import training_run

    quiet_loading_bars()
    params = load_params(args.params)
    prompts = read_train_prompts(params.data.validated_dir, args.prompts)
    rewards = build_rewards(params.reward)

    mlflow = {"log": None}  # the MLflow run's logger once the run is open; the trainer sees nothing but log_fn

    def log_fn(metrics: dict[str, float], iteration: int) -> None:
        # every figure, as one line, only with `treegrpo -v`: the progress bar shows reward, loss, s/it and the ETA;
        # history.json and MLflow keep the full records
        log.debug("iteration %d: %s", iteration, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
        if mlflow["log"] is not None:
            mlflow["log"](metrics, iteration)

    def artifact_fn(path: Path, iteration: int) -> None:
        if mlflow["log"] is not None:
            mlflow["log"].log_file(path, iteration)

    trainer = TreeGRPOTrainer(params, prompts, rewards, log_fn=log_fn, artifact_fn=artifact_fn)
    # model, LoRA and resume point first: a start that fails here (an unreachable model.pretrained) opens no MLflow
    # run and leaves mlflow_run.json naming the run a resume reopens
    trainer.setup()
    # the MLflow run of this training run (main process only)
    with training_run(params, trainer.identity.key) as logger, logs_above_the_bar():
        mlflow["log"] = logger
        last = trainer.train()
    lora = Path(params.train.output_dir) / "lora"
    if last:
        print(f"trained {params.train.iterations} iterations; reward_mean {last['reward_mean']:.4f}; LoRA at {lora}")
    else:  # resumed from this run's final checkpoint (at exactly train.iterations): nothing left to run
        print(f"already trained ({params.train.iterations} iterations: the checkpoint at iteration "
              f"{params.train.iterations} resumed); LoRA at {lora}")
    return 0
