"""params.yaml as typed, frozen, validated sections (STYLE.md habit 13).

`load_params("params.yaml")` parses the file and builds every section strictly: unknown, missing or mistyped keys and
out-of-range values fail here, with the dotted key in the message, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treegrpo.config.base import ParamsError, build, check, to_dict
from treegrpo.config.baselines import BaselineParams
from treegrpo.config.data import DataParams
from treegrpo.config.eval import EvalParams
from treegrpo.config.model import LoraParams, ModelParams, TinyModelParams
from treegrpo.config.pretrain import PretrainParams
from treegrpo.config.reward import RewardParams
from treegrpo.config.sampler import SamplerParams, WindowParams
from treegrpo.config.tracking import TrackingParams
from treegrpo.config.train import TrainParams
from treegrpo.config.world import WorldParams

__all__ = [
    "BaselineParams", "DataParams", "EvalParams", "LoraParams", "ModelParams", "Params", "ParamsError",
    "PretrainParams", "RewardParams", "SamplerParams", "TinyModelParams", "TrackingParams", "TrainParams",
    "WindowParams", "WorldParams", "build", "check", "load_params", "to_dict",
]


@dataclass(frozen=True)
class Params:
    """Every section of params.yaml."""

    tiny_model: TinyModelParams
    world: WorldParams
    model: ModelParams
    pretrain: PretrainParams
    lora: LoraParams
    sampler: SamplerParams
    reward: RewardParams
    train: TrainParams
    baselines: BaselineParams
    data: DataParams
    eval: EvalParams
    tracking: TrackingParams


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
    return parse_params(read_yaml(path.read_text(), str(path)), str(path))


def read_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parse params.yaml as YAML 1.2, the way DVC reads and rewrites it: `dvc exp run -S` writes `no` unquoted,
    which YAML 1.1 (PyYAML) would read as false."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML ({err})") from None
