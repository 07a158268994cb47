"""`treegrpo check`: params.yaml and the cheap facts around it, checked before any stage that owns outputs runs.

DVC deletes a stage's outputs before it runs the stage, so a bad value found by `treegrpo train` itself would first
cost the trained LoRA, metrics.json and history.json. The DVC stage `check` runs first (the other stages depend on
its output): it loads params.yaml with the strict loader (every section, every range), then checks what needs no
model loading and no network:
- `model.pretrained`: a local folder exists and is a diffusers pipeline; a hub id is in the Hugging Face cache when
  the hub is offline (HF_HUB_OFFLINE=1); `tiny_model.path` and `pretrain.output` are left to the stages that make them;
- the weight files of the rewards that `reward.weights` and `eval.rewards` name (real weights only, not the stand-ins
  of `reward.stand_in_dir`): local files exist, `hf://` files are cached when the hub is offline;
- `data.path` (and `data.eval_path` for `eval_source: local`) exist when the source is local.
On success it writes a small file whose content never depends on the params, so downstream stages do not re-run
because of it; a failure removes that file and exits 2 with the bad key and the fix.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from treegrpo.utils.errors import UserError

PASSED = "outputs/check/passed.json"  # the DVC output of the stage `check`
CHECKS = ("params", "base model", "reward files", "prompt sources")
# the keys of each reward's params section that name a file (a local path or hf://owner/repo/file)
REWARD_FILES = {"hpsv2": ("checkpoint",), "clip_score": ("checkpoint",), "aesthetic": ("clip_checkpoint", "head"),
                "image_reward": ("checkpoint", "med_config", "bert_vocab")}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="check params.yaml (strictly) and the model and data paths it names, before any stage runs",
        description=__doc__,
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--out", default=PASSED, help=f"the file written on success (default: {PASSED})")
    p.set_defaults(func=run)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached(repo: str, filename: str, revision: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo, filename, revision=revision), str)
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError): nothing of it can be cached
        return False


def check_base_model(params) -> None:
    """`model.pretrained`: a diffusers folder, a cached hub id when offline, or a folder a later stage makes
    (`build_model`: tiny_model.path; `pretrain`: pretrain.output)."""
    from treegrpo.models.pipeline import local_folder

    source = params.model.pretrained
    if Path(source) in (Path(params.tiny_model.path), Path(params.pretrain.output)):
        return  # the build_model or pretrain stage (downstream of this one) makes it
    if local_folder(source) is None and _offline() and not _cached(source, "model_index.json",
                                                                   params.model.revision):
        raise UserError(f"model.pretrained={source!r}: no such local folder, and no hub model of that id in the "
                        "Hugging Face cache while HF_HUB_OFFLINE=1; point it at a diffusers folder (tiny_model.path "
                        f"is {params.tiny_model.path}), or fetch the hub model first (`treegrpo fetch` with network)")


def check_reward_files(params) -> None:
    """The weight files of the rewards in use (real weights only; stand-ins are built when first needed)."""
    from treegrpo.recipes.fetch import reward_names
    from treegrpo.rewards.base import HF_PREFIX

    if params.reward.stand_in_dir is not None:
        return
    for name in reward_names(params):
        for key in REWARD_FILES.get(name, ()):
            spec, where = getattr(getattr(params.reward, name), key), f"reward.{name}.{key}"
            if not spec.startswith(HF_PREFIX):
                if not Path(spec).expanduser().is_file():
                    raise UserError(f"{where}={spec!r}: no such file; put it there, or set {where} to its path "
                                    "(or hf://owner/repo/file)")
                continue
            parts = spec[len(HF_PREFIX):].split("/")
            repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
            if _offline() and not _cached(repo, filename):
                raise UserError(f"{where}={spec!r}: not in the Hugging Face cache while HF_HUB_OFFLINE=1; download it "
                                f"with network (`treegrpo fetch`, or `hf download {repo} {filename}`)")


def check_prompt_sources(params) -> None:
    """The local prompt file or folder that `treegrpo ingest` reads (unless the `world` stage writes it)."""
    d = params.data
    paths = [("data.path", d.path)] if d.source == "local" else []
    if d.eval_source == "local":
        paths.append(("data.eval_path", d.eval_path))
    paths += [(f"eval.extra_sets.{name}", path) for name, path in params.eval.extra_sets.items()]
    made = Path(params.world.output_dir).resolve()  # the world stage (downstream of this one) writes these
    for where, path in paths:
        if made in Path(path).expanduser().resolve().parents:
            continue
        if not Path(path).expanduser().exists():
            raise UserError(f"{where}={path!r}: no such file or folder (a local prompt source); "
                            "data/sample/prompts.jsonl is the bundled sample")


def run(args: argparse.Namespace) -> int:
    from treegrpo.config import load_params

    out = Path(args.out)
    out.unlink(missing_ok=True)  # a failed check leaves no output behind (DVC keeps it: persist, no run cache)
    params = load_params(args.params)
    check_base_model(params)
    check_reward_files(params)
    check_prompt_sources(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": "passed", "checks": list(CHECKS)}, indent=1) + "\n")
    print(f"{args.params}: {', '.join(CHECKS)} checked -> {out}")
    return 0
