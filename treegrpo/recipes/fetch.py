"""Fetch (download into the Hugging Face cache) and load once every model a configured run needs.

What the Prefect flow retries before training: downloads and reward-model loading are safe to repeat (the cache
turns a second run into a check), training is not. Nothing here changes an output of the DVC pipeline.

- the base pipeline: a hub id is downloaded with diffusers' `DiffusionPipeline.download` (only the files a
  pipeline loads); a local folder must be a diffusers folder (the tiny one is built by the `build_model` stage);
- the rewards that `reward.weights` trains with and `eval.rewards` reports: their files resolved (`hf://` ones
  downloaded) and their models loaded once, so a corrupt or missing file fails here, with its params key, and not
  an hour into training. Weight-free rewards have nothing to fetch.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

import torch

from treegrpo.config import ModelParams, Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    """One model: what it is (`base model`, `reward hpsv2`), where it came from, and what was done."""

    what: str
    source: str
    status: str


def fetch_base_model(params: ModelParams) -> Fetched:
    """The base pipeline's files: downloaded when `model.pretrained` is a hub id, checked when a folder.

    Raises:
        UserError: a folder that is not a diffusers pipeline, or a hub id that cannot be downloaded.
    """
    from treegrpo.models.pipeline import hub_error, local_folder

    source = params.pretrained
    if local_folder(source) is not None:
        return Fetched("base model", source, "local folder")
    from diffusers import DiffusionPipeline

    try:
        path = DiffusionPipeline.download(source, revision=params.revision)
    except Exception as err:  # noqa: BLE001 - offline, gated, missing, network: the same fix
        raise hub_error(source, err) from None
    return Fetched("base model", source, f"in the Hugging Face cache ({path})")


def reward_names(params: Params) -> list[str]:
    """The rewards training and evaluation use, each once, training's first."""
    return list(dict.fromkeys([*params.reward.weights, *params.eval.rewards]))


def fetch_rewards(params: Params) -> list[Fetched]:
    """Resolve and load once every reward of `reward_names(params)`; their models are freed after.

    Raises:
        UserError: a missing file or one that can't be downloaded (the message names the params key).
    """
    from treegrpo.rewards.base import LazyModelReward
    from treegrpo.rewards.registry import build_reward

    done = []
    for name in reward_names(params):
        reward = build_reward(name, params.reward)
        if not isinstance(reward, LazyModelReward):
            done.append(Fetched(f"reward {name}", "-", "weight-free: nothing to fetch"))
            continue
        reward.model  # noqa: B018 - resolves (downloads) the files and loads the weights
        kind = "tiny random-weight stand-in" if reward.stand_in else "weights"
        source = params.reward.stand_in_dir if reward.stand_in else "reward." + name
        done.append(Fetched(f"reward {name}", str(source), f"loaded ({kind})"))
        del reward
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return done


def fetch(params: Params, base_model: bool = True, rewards: bool = True) -> list[Fetched]:
    """Everything a run of `params` loads; see the module docstring."""
    done = [fetch_base_model(params.model)] if base_model else []
    return done + (fetch_rewards(params) if rewards else [])
