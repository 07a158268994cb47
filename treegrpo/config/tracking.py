"""The `tracking` section: MLflow tracking, the model registry and the promotion gate.

`uri` is where runs and registered models live: a local SQLite file by default (nothing to start), or a shared
`mlflow server` (`http://host:5000`). The environment variable `MLFLOW_TRACKING_URI`, when set, wins over `uri`
(a worker's job variables set it; credentials belong there, never in params.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

from treegrpo.config.base import check
from treegrpo.config.reward import check_reward_names

SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg2://", "mysql://", "mysql+pymysql://", "http://",
           "https://", "databricks", "file:")


@dataclass(frozen=True)
class TrackingParams:
    uri: str
    experiment: str
    model_name: str
    primary_reward: str
    min_improvement: float
    output_dir: str

    def __post_init__(self) -> None:
        check(self.uri.startswith(SCHEMES), "tracking.uri", self.uri,
              "must be an MLflow tracking URI: sqlite:///mlruns/mlflow.db (local) or http://127.0.0.1:5000 (a server)")
        check("@" not in self.uri.split("://", 1)[-1].split("/", 1)[0], "tracking.uri", "<redacted>",
              "must not carry credentials; put the URI in the MLFLOW_TRACKING_URI environment variable instead")
        check(bool(self.experiment.strip()), "tracking.experiment", self.experiment, "must be an experiment name")
        check(bool(self.model_name.strip()) and "'" not in self.model_name and '"' not in self.model_name,
              "tracking.model_name", self.model_name, "must be a registered model name without quotes")
        check_reward_names([self.primary_reward], "tracking.primary_reward")
        check(self.min_improvement >= 0.0, "tracking.min_improvement", self.min_improvement,
              "must be >= 0 (how much a candidate must beat the champion's primary reward by)")
        check(bool(self.output_dir.strip()), "tracking.output_dir", self.output_dir, "must be a folder path")
