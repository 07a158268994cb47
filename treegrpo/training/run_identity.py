"""What makes two training runs the same run, said once (STYLE.md habit 16).

A training run is a trajectory and an end. The trajectory is `params_fingerprint`: every parameter that changes what
an iteration computes (`TRAINING_SECTIONS` but the `train` keys in `RESUMABLE_KEYS`), the training code
(`TRAINING_CODE` and the modules of the rewards it trains on), the prompts and the base model's content
(`model_identity`). Runs with one fingerprint compute the same iterations; `train.iterations` says where a run ends.
The three places that ask "is this the same run?" derive their answer from here:

- a checkpoint is resumed when it has the run's fingerprint and lies at or below its end (`RunIdentity.resumes`): a
  checkpoint at iteration i is the same whatever the end, but one past the end holds a longer run's model;
- an MLflow run is reopened when it is tagged with the same `RunIdentity.key` (fingerprint and end): its metric
  history and the LoRA registered from it describe exactly that many iterations, so one MLflow run per LoRA trained;
- `dvc.yaml`'s train stage lists at least what the fingerprint covers, so `dvc repro` re-runs training whenever the
  fingerprint may change (a test checks its `params:` and `deps:` against `TRAINING_SECTIONS` and the code).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treegrpo.config import Params, to_dict

# the sections that change what training computes (data reaches training as the prompt list; eval and tracking don't)
TRAINING_SECTIONS = ("model", "lora", "sampler", "reward", "train", "baselines")
# the train keys that change no iteration's result: where the run ends, how often it saves or draws grids, where
RESUMABLE_KEYS = frozenset({"iterations", "checkpoint_every", "keep_checkpoints", "sample_every", "output_dir"})
# the modules that decide what training computes (besides the rewards' own modules, see `training_code`)
TRAINING_CODE = ("treegrpo.recipes.trainer", "treegrpo.training.algorithms", "treegrpo.core.advantages",
                 "treegrpo.core.loss", "treegrpo.core.sde", "treegrpo.core.tree", "treegrpo.core.window",
                 "treegrpo.models.pipeline", "treegrpo.models.sd3", "treegrpo.models.policy", "treegrpo.models.lora")


def training_code(rewards: Mapping[str, Any] | Iterable[Any] = ()) -> tuple[str, ...]:
    """`TRAINING_CODE` and the project modules that define the given rewards (name -> reward, rewards or their
    classes)."""
    objects = rewards.values() if isinstance(rewards, Mapping) else rewards
    classes = [r if isinstance(r, type) else type(r) for r in objects]
    # a reward's own module, and the project modules it names as deciding its scores (`code_modules`)
    modules = {m for cls in classes for m in (cls.__module__, *getattr(cls, "code_modules", ()))}
    extra = sorted(m for m in modules if m.startswith("treegrpo."))
    return TRAINING_CODE + tuple(m for m in extra if m not in TRAINING_CODE)


def module_file(name: str) -> Path:
    """The source file of module `name` (imported to find it)."""
    return Path(importlib.import_module(name).__file__)


def folder_digest(folder: str | Path, head_above: int | None = None) -> str:
    """sha256 (hex) over a folder's files in sorted order: each file's relative path and bytes; a file larger than
    `head_above` bytes (None: none is) by its size and its first MiB instead. The one folder hasher: a LoRA's identity
    in the registry (`registry.lora_digest`, every byte) and the base model's in the fingerprint (`model_identity`)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        size = path.stat().st_size
        if head_above is not None and size > head_above:
            with open(path, "rb") as f:
                digest.update(f"{size}\0".encode() + f.read(2**20))
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def model_identity(pretrained: str) -> str:
    """What identifies the base model's content. A local folder: `folder_digest` with files above 64 MiB read by their
    size and first MiB (configs, tokenizers and a tiny model's weights whole; SD3.5's multi-GB weights by the
    safetensors header). A hub id: "" (the id and `model.revision` are params already)."""
    folder = Path(pretrained).expanduser()
    return folder_digest(folder, head_above=64 * 2**20) if folder.is_dir() else ""


def fingerprinted_params(params: Params) -> dict[str, Any]:
    """The part of params.yaml the fingerprint hashes: `TRAINING_SECTIONS`, without the `RESUMABLE_KEYS` of train."""
    plain = {k: v for k, v in to_dict(params).items() if k in TRAINING_SECTIONS}
    plain["train"] = {k: v for k, v in plain["train"].items() if k not in RESUMABLE_KEYS}
    return plain


def params_fingerprint(params: Params, prompts: Sequence[str] = (), model: str = "",
                       code: Sequence[str] = TRAINING_CODE) -> str:
    """A 16-hex hash of the trajectory: `fingerprinted_params`, the source of the `code` modules, the prompts and the
    base model's identity (`model_identity`). After a change to any of them training starts over."""
    digest = hashlib.sha256(json.dumps({"params": fingerprinted_params(params), "prompts": list(prompts),
                                        "model": model}, sort_keys=True).encode())
    for name in code:
        digest.update(module_file(name).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    """One training run: its trajectory (`fingerprint`) and where it ends (`iterations`)."""

    fingerprint: str
    iterations: int

    @classmethod
    def of(cls, params: Params, prompts: Sequence[str], rewards: Mapping[str, Any] | Iterable[Any] = ()
           ) -> RunIdentity:
        """The identity of training `params` on `prompts` with `rewards` (name -> reward object)."""
        model = model_identity(params.model.pretrained)
        return cls(params_fingerprint(params, prompts, model, training_code(rewards)), params.train.iterations)

    @property
    def key(self) -> str:
        """What the MLflow run is tagged with (`tracking.RUN_KEY_TAG`): the same key, the same LoRA."""
        return f"{self.fingerprint}-{self.iterations}"

    def resumes(self, fingerprint: str | None, iteration: int) -> bool:
        """Whether a checkpoint written by run `fingerprint` at `iteration` is a resume point of this run."""
        return fingerprint == self.fingerprint and iteration <= self.iterations

