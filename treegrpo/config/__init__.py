"""params.yaml as typed, frozen, validated sections (STYLE.md habit 13).

`load_params("params.yaml")` parses the file and builds every section strictly: unknown, missing or mistyped keys and
out-of-range values fail here, with the dotted key in the message, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from treegrpo.config.base import ParamsError, build, check, to_dict
from treegrpo.config.baselines import BaselineParams
from treegrpo.config.data import DataParams
from treegrpo.config.eval import EvalParams
from treegrpo.config.model import LoraParams, ModelParams, TinyModelParams
from treegrpo.config.reward import RewardParams
from treegrpo.config.sampler import SamplerParams, WindowParams
from treegrpo.config.train import TrainParams

__all__ = [
    "BaselineParams", "DataParams", "EvalParams", "LoraParams", "ModelParams", "Params", "ParamsError", "RewardParams",
    "SamplerParams", "TinyModelParams", "TrainParams", "WindowParams", "build", "check", "load_params", "to_dict",
]


@dataclass(frozen=True)
class Params:
    """Every section of params.yaml."""

    tiny_model: TinyModelParams
    model: ModelParams
    lora: LoraParams
    sampler: SamplerParams
    reward: RewardParams
    train: TrainParams
    baselines: BaselineParams
    data: DataParams
    eval: EvalParams


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Build `Params` from an already-parsed mapping; errors are prefixed with `source`."""
    try:
        return build(Params, raw, "")
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Args:
        path: the YAML file.
    Returns:
        the validated `Params`.
    Raises:
        ParamsError: a missing or unparsable file, or any bad key or value; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file; run from the repository root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None
    return parse_params(raw, str(path))
