"""The MLflow model registry: the trained LoRA as a registered pyfunc model, aliases `candidate` and `champion`.

- `register_lora` logs the LoRA folder as a pyfunc model (`serving.LoraText2Image`: prompts in, images out) in the
  training run and registers it under `tracking.model_name`, tagged with the run, the evaluation means, the
  eval-set key and the params hash; alias `candidate` moves to it. The LoRA's content hash is a version tag, so
  registering the same weights again finds that version instead of making a second one. Its description
  (`version_description`) says at a glance what it is: the algorithm and its shape, the base model, the reward, the
  iterations, the eval table.
- `promote` moves alias `champion` to a version only if its evaluation beats the current champion's on
  `tracking.primary_reward` (same eval set) -- the first champion must beat the base model's evaluation (same
  prompts and seeds) -- or when forced with a reason; the decision is recorded as version tags.

Aliases, not the deprecated stages. Load the champion with `mlflow.pyfunc.load_model("models:/NAME@champion")`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from treegrpo.config import Params, to_dict
from treegrpo.training.run_identity import folder_digest
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
BASE_TAG = "eval_base"  # version tags eval_base.REWARD: the base model's evaluation mean
# the pyfunc's code, written next to the model ("models from code": nothing pickled)
MODEL_CODE = ("import mlflow\n\nfrom treegrpo.recipes.serving import LoraText2Image\n\n"
              "mlflow.models.set_model(LoraText2Image())\n")


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    created: bool  # False: these weights were registered before (that version is returned)


@dataclass(frozen=True)
class Decision:
    promoted: bool
    version: str
    previous: str | None  # the champion before this call
    message: str


def lora_digest(lora_dir: str | Path) -> str:
    """sha256 over the LoRA folder's files (names and bytes), the identity of a version."""
    from treegrpo.models.lora import LORA_FILE  # here: that module imports torch, which the registry does not need

    lora_dir = Path(lora_dir)
    if not (lora_dir / LORA_FILE).is_file():
        raise UserError(f"{lora_dir}: no {LORA_FILE}; train first (`dvc repro train`)")
    return folder_digest(lora_dir)


def eval_key(params: Params, prompts: list[str]) -> str:
    """What makes two evaluations comparable: the prompts, seeds, sampling and reward set (real or stand-in)."""
    e, s = params.eval, params.sampler
    parts = [*prompts, f"seed={e.seed}", f"steps={s.num_inference_steps}", f"cfg={s.guidance_scale}",
             f"res={params.model.resolution}", f"rewards={','.join(e.rewards)}",
             f"stand_ins={params.reward.stand_in_dir is not None}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def version_tags(params: Params, run_id: str, digest: str, metrics: dict, key: str, provenance: dict) -> dict:
    """Tags of a registered version: the run, the weights, the evaluation (trained means), the params hash."""
    provenance = {k: v for k, v in provenance.items() if not k.startswith("mlflow.")}
    tags = {"run_id": run_id, "lora_sha256": digest, "eval_key": key, "base_model": params.model.pretrained,
            "n_eval_prompts": str(metrics.get("n_prompts", "")), **provenance}
    for reward, stat in metrics["trained"].items():
        tags[f"eval.{reward}"] = repr(float(stat["mean"]))
        if stat.get("sem") is not None:
            tags[f"eval.{reward}.sem"] = repr(float(stat["sem"]))
    for reward, stat in metrics.get("base", {}).items():  # the base model, same prompts and seeds: the first bar
        tags[f"{BASE_TAG}.{reward}"] = repr(float(stat["mean"]))
    return tags


DESCRIPTION_LIMIT = 5000  # characters MLflow's SQL stores keep of a version's description


def version_description(params: Params, metrics: dict, table: str | None = None) -> str:
    """Markdown for a registered version's page: what was trained, on what, how long, and the evaluation table.

    Args:
        params: all of params.yaml.
        metrics: the evaluation's metrics.json.
        table: the evaluation's table.md (its first tables kept when the whole would not fit `DESCRIPTION_LIMIT`).
    """
    t, s, m = params.train, params.sampler, params.model
    shape = (f"k={s.branching}, d={s.depth}, window {s.window.strategy}" if t.algorithm == "treegrpo"
             else f"group {params.baselines.group_size}")
    reward = ", ".join(f"{name} ({weight:g})" for name, weight in params.reward.weights.items())
    lines = [f"**{t.algorithm}** LoRA (rank {params.lora.rank}) on `{m.pretrained}`, {m.resolution} px, "
             f"{s.num_inference_steps} steps, CFG {s.guidance_scale:g}; {shape}.",
             "",
             f"- reward: {reward}",
             f"- {t.iterations} iterations of {t.prompts_per_iteration} prompts, learning rate {t.learning_rate:g}",
             f"- evaluated on {metrics.get('n_prompts', '?')} prompts; promotion compares "
             f"`{params.tracking.primary_reward}`"]
    head = "\n".join(lines) + "\n"
    if not table:
        return head
    room = DESCRIPTION_LIMIT - len(head) - 100
    body = re.sub(r"^#+ (.+)$", r"**\1**", table.strip(), flags=re.M)  # its title in bold, not a page heading
    if len(body) > room:  # whole tables only: cut at the last blank line that fits
        cut = body.rfind("\n\n", 0, room)
        body = body[: cut if cut > 0 else room].rstrip() + "\n\n(the rest: the run's eval/table.md artifact)"
    return f"{head}\n{body}\n"


def find_version(client, name: str, digest: str):
    """The version of `name` whose LoRA has this content hash, or None."""
    found = client.search_model_versions(f"name = '{name}' and tags.lora_sha256 = '{digest}'")
    return found[0] if found else None


def model_config(params: Params) -> dict[str, Any]:
    """What the pyfunc needs to rebuild the pipeline: the base model (a local folder made absolute) and sampling."""
    model = to_dict(params.model)
    if Path(model["pretrained"]).is_dir():
        model["pretrained"] = str(Path(model["pretrained"]).resolve())
    return {"model": model, "num_inference_steps": params.sampler.num_inference_steps,
            "guidance_scale": params.sampler.guidance_scale}


def pip_requirements() -> list[str]:
    """The installed versions of what the pyfunc imports (MLflow would otherwise load the model to infer them)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "sentencepiece"):
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return reqs


def signature():
    """Input: prompts (one string column); params: seed and sampling overrides; output: uint8 images (N, H, W, 3)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("num_inference_steps", "long", 0),
                            ParamSpec("guidance_scale", "double", -1.0)]),
    )


def log_model(params: Params, run_id: str, lora_dir: Path):
    """Log the LoRA as a pyfunc model in run `run_id`; returns its `ModelInfo` (model_uri, model_id)."""
    from treegrpo.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(params.tracking))
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)  # it would run predict
        code = Path(tmp) / "treegrpo_lora_model.py"
        code.write_text(MODEL_CODE)
        info = mlflow.pyfunc.log_model(name="lora", python_model=str(code), artifacts={"lora": str(lora_dir)},
                                       model_config=model_config(params), signature=signature(),
                                       pip_requirements=pip_requirements())
    return info


def register_lora(client, params: Params, run_id: str, metrics: dict, prompts: list[str],
                  table: str | None = None) -> Registered:
    """Register `eval.lora` (the trained LoRA) with its evaluation; move alias `candidate` to it.

    Args:
        client: an `MlflowClient` on the tracking URI.
        params: all of params.yaml (`tracking.model_name`, the eval conditions, the model).
        run_id: the training run (the model is logged in it).
        metrics: the evaluation's metrics.json (with a `trained` entry).
        prompts: the eval prompts, in order (they key the eval set).
        table: the evaluation's table.md, for the version's description.
    Returns:
        the version; `created` is False when these weights were registered before.
    """
    from treegrpo.training.tracking import provenance_tags

    if "trained" not in metrics:
        raise UserError("the evaluation has no trained model (eval.lora: null?); nothing to register")
    lora_dir = Path(params.eval.lora or Path(params.train.output_dir) / "lora")
    name, digest = params.tracking.model_name, lora_digest(lora_dir)
    tags = version_tags(params, run_id, digest, metrics, eval_key(params, prompts), provenance_tags(params))
    description = version_description(params, metrics, table)
    exists = bool(client.search_registered_models(f"name = '{name}'"))
    existing = find_version(client, name, digest) if exists else None
    if existing is not None:
        version, created = str(existing.version), False
        for key, value in tags.items():  # same weights: the newest evaluation of them
            if key != "run_id":
                client.set_model_version_tag(name, version, key, value)
        client.update_model_version(name, version, description=description)
        log.info("registry: %s version %s already holds these weights (sha256 %s)", name, version, digest[:12])
    else:
        info = log_model(params, run_id, lora_dir)
        if not exists:
            client.create_registered_model(name, description="A TreeGRPO LoRA on the base model named in each "
                                           f"version's base_model tag: mlflow.pyfunc.load_model('models:/{name}@"
                                           f"{CHAMPION}').predict(['a red cat']) returns images")
        mv = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id,
                                         description=description)
        version, created = str(mv.version), True
        log.info("registry: registered %s version %s", name, version)
    client.set_registered_model_alias(name, CANDIDATE, version)
    return Registered(name, version, run_id, created)


def _score(mv, reward: str, prefix: str = "eval") -> float | None:
    value = mv.tags.get(f"{prefix}.{reward}")
    return float(value) if value is not None else None


def champion(client, name: str):
    """The version with alias `champion`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _gate(mv, current, reward: str, margin: float) -> tuple[bool, str]:
    """Whether version `mv` beats `current` on `reward`, and why (or why not)."""
    new = _score(mv, reward)
    if new is None:
        return False, f"version {mv.version} has no eval.{reward} tag (registered without that reward)"
    if current is None:
        return _beats_base(mv, new, reward, margin)
    old = _score(current, reward)
    if old is None:
        return False, f"champion version {current.version} has no eval.{reward} tag; compare by hand and --force"
    if mv.tags.get("eval_key") != current.tags.get("eval_key"):
        return False, (f"versions {mv.version} and {current.version} were evaluated on different eval sets "
                       f"(eval_key {mv.tags.get('eval_key')} vs {current.tags.get('eval_key')}); evaluate both on "
                       "the same prompts, or --force")
    if new > old + margin:
        return True, f"{reward} {new:.6g} beats champion version {current.version}'s {old:.6g}"
    return False, (f"{reward} {new:.6g} does not beat champion version {current.version}'s {old:.6g}"
                   + (f" by more than tracking.min_improvement={margin:g}" if margin else ""))


def _beats_base(mv, new: float, reward: str, margin: float) -> tuple[bool, str]:
    """The first champion's gate: the base model's evaluation on the same prompts and seeds (tag eval_base.REWARD)."""
    base = _score(mv, reward, BASE_TAG)
    if base is None:
        return False, (f"version {mv.version} has no {BASE_TAG}.{reward} tag (the base model's evaluation), so there "
                       "is nothing to compare the first champion with; register it again from an evaluation that "
                       "scores the base model, or --force --reason")
    if new > base + margin:
        return True, f"first champion: {reward} {new:.6g} beats the base model's {base:.6g}"
    return False, (f"{reward} {new:.6g} does not beat the base model's {base:.6g}"
                   + (f" by more than tracking.min_improvement={margin:g}" if margin else "")
                   + " (no champion yet: the first must beat the base model, or --force --reason)")


def promote(client, params: Params, version: str | None = None, force: bool = False,
            reason: str | None = None) -> Decision:
    """Move alias `champion` to `version` (default: the `candidate`) if it passes the gate, or if forced.

    The gate: its `tracking.primary_reward` evaluation mean beats the champion's by more than
    `tracking.min_improvement`, on the same eval set; with no champion yet, the base model's mean from the same
    evaluation. A promotion tags the version with when, why, whether it was
    forced and the previous champion.
    """
    from mlflow.exceptions import MlflowException

    name, reward = params.tracking.model_name, params.tracking.primary_reward
    if force and not (reason and reason.strip()):
        raise UserError("--force needs --reason TEXT: the reason is recorded on the version")
    try:
        mv = (client.get_model_version(name, version) if version is not None
              else client.get_model_version_by_alias(name, CANDIDATE))
    except MlflowException as err:
        raise UserError(f"registered model {name!r} has no version {version or '@' + CANDIDATE}; register one with "
                        "`treegrpo register` (`dvc repro`)") from err
    current = champion(client, name)
    previous = str(current.version) if current is not None else None
    if previous == str(mv.version):
        return Decision(False, previous, previous, f"version {previous} is already the champion")
    ok, why = _gate(mv, current, reward, params.tracking.min_improvement)
    if not ok and not force:
        return Decision(False, str(mv.version), previous, f"not promoted: {why}")
    tags = {"promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "promotion_gate": why,
            "promotion_forced": str(bool(force and not ok)), "promotion_reason": reason or why,
            "previous_champion": previous or "none", "primary_reward": reward}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(mv.version), key, value)
    client.set_registered_model_alias(name, CHAMPION, str(mv.version))
    how = "forced" if force and not ok else "promoted"
    return Decision(True, str(mv.version), previous, f"{how}: version {mv.version} is now {CHAMPION} ({why})")
