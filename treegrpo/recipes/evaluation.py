"""The evaluation recipe (`treegrpo evaluate`): base model against trained LoRA, as the paper's Table 1.

Reads top to bottom: `sample()` both models on the same prompts and seeds with the ODE sampler (the pipeline's own
Euler call, noise 0), `eval.samples_per_prompt` images per prompt, `score()` them with every reward of
`eval.rewards`, `summarize()` to mean and standard error over prompts (a prompt's score is the mean of its images),
then `write_report()`: metrics.json (DVC metrics), table.md, grid.png and scores.jsonl (`read_scores` reads it back).
A reward that knows its prompts' categories (a `category(prompt)` method: the world's `composition`) also gets a
table per category, and the grid's rows are spread over the categories.

The eval set (the validated `eval.parquet`) comes first and is the one `metrics.json`'s top level, the registry and
the promotion gate read; `eval.extra_sets` are sampled and scored the same way and reported beside it, under
`metrics.json`'s `sets` (the embedded default: RL-unseen prompts first, then the held-out compositions and RL's own
prompts).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from treegrpo.config import Params
from treegrpo.rewards import PAPER_REWARDS
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)

# the paper's column names
DISPLAY = {"hpsv2": "HPS-v2.1", "image_reward": "ImageReward", "aesthetic": "Aesthetic", "clip_score": "CLIPScore",
           "jpeg_compressibility": "JPEG compressibility (-kB)", "color_fraction": "Colour fraction",
           "composition_accuracy": "Accuracy (all constraints)", "composition": "Constraints met"}
STAND_IN_NOTE = ("tiny random-weight stand-in (reward.stand_in_dir): exercises the pipeline, the numbers mean nothing "
                 "and are not comparable with the paper")


def read_prompts(params: Params, prompts_file: str | None = None) -> list[str]:
    """The eval prompts: `prompts_file` (text, one per line; or a Parquet prompt set) if given, else
    `{data.validated_dir}/eval.parquet`; the first `eval.num_prompts` of them (0: all)."""
    from treegrpo.data import load_prompts

    if prompts_file is not None:
        path = Path(prompts_file)
        if path.suffix == ".parquet":
            prompts = load_prompts(path)
        elif not path.is_file():
            raise UserError(f"--prompts {prompts_file}: no such file (text, one prompt per line, or .parquet)")
        else:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        prompts = load_prompts(Path(params.data.validated_dir) / "eval.parquet")
    if not prompts:
        raise UserError(f"no eval prompts in {prompts_file or params.data.validated_dir}")
    n = params.eval.num_prompts
    return prompts[:n] if n else prompts


def read_prompt_file(path: str | Path) -> list[str]:
    """The prompts of one file in any form `treegrpo.data.readers` reads (.txt, .json, .jsonl, .parquet)."""
    from treegrpo.data.readers import list_prompt_files, read_records

    prompts = [r.prompt for f in list_prompt_files(Path(path)) for r in read_records(f) if r.prompt]
    if not prompts:
        raise UserError(f"{path}: holds no prompts")
    return prompts


def read_extra_sets(params: Params) -> dict[str, list[str]]:
    """name -> prompts of every `eval.extra_sets` file (the first `eval.num_prompts` of each; 0: all)."""
    n = params.eval.num_prompts
    out = {}
    for name, path in params.eval.extra_sets.items():
        if not Path(path).exists():
            raise UserError(f"eval.extra_sets.{name}={path!r}: no such file; run `treegrpo world` (the embedded "
                            "default's prompt files) or point it at a prompt file")
        prompts = read_prompt_file(path)
        out[name] = prompts[:n] if n else prompts
    return out


def eval_set_name(params: Params) -> str:
    """The eval set's name in reports: its file's stem when read from a local file (the world: 'unseen'), else
    'eval'."""
    d = params.data
    return Path(d.eval_path).stem if d.eval_source == "local" and d.eval_path else "eval"


@torch.no_grad()
def sample(pipe, prompts: Sequence[str], params: Params) -> Tensor:
    """ODE samples, `eval.samples_per_prompt` (S) per prompt; sample j of prompt i draws its initial noise from a CPU
    generator seeded `eval.seed + i * S + j`.

    Returns:
        (N * S, 3, H, W) float32 images in [0, 1] on the CPU, prompt-major (prompt i's images at i*S .. i*S + S-1).
    """
    e, s, res = params.eval, params.sampler, params.model.resolution
    expanded = [p for p in prompts for _ in range(e.samples_per_prompt)]
    images = []
    for lo in range(0, len(expanded), e.batch_size):
        batch = expanded[lo : lo + e.batch_size]
        generators = [torch.Generator().manual_seed(e.seed + lo + j) for j in range(len(batch))]
        out = pipe(batch, num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, height=res,
                   width=res, generator=generators, max_sequence_length=params.model.max_sequence_length,
                   output_type="pt")
        images.append(out.images.float().clamp(0, 1).cpu())  # (b, 3, H, W)
    return torch.cat(images)


def score(rewards: Mapping, images: Tensor, prompts: Sequence[str]) -> dict[str, Tensor]:
    """name -> (N, S) float32 scores of the N prompts' S images each (`images` prompt-major, N * S of them)."""
    n = len(prompts)
    per_prompt = images.shape[0] // n
    expanded = [p for p in prompts for _ in range(per_prompt)]
    return {name: reward(images, expanded).float().reshape(n, per_prompt) for name, reward in rewards.items()}


def summarize(scores: Mapping[str, Tensor]) -> dict[str, dict[str, float | None]]:
    """name -> {mean, sem}: the mean over prompts of each prompt's mean score, and its standard error (sample std of
    the prompt means / sqrt n; null for n = 1)."""
    out = {}
    for name, values in scores.items():
        values = values.double().reshape(values.shape[0], -1).mean(dim=1)  # (N,) one score per prompt
        n = values.numel()
        sem = (values.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else None
        out[name] = {"mean": values.mean().item(), "sem": sem}
    return out


def by_category(rewards: Mapping, scores: Mapping[str, Tensor], prompts: Sequence[str]) -> dict[str, dict]:
    """reward -> category -> {mean, sem, n}, for the rewards that name their prompts' categories."""
    out = {}
    for name, reward in rewards.items():
        if not callable(getattr(reward, "category", None)):
            continue
        categories = [reward.category(p) for p in prompts]
        groups = {c: [i for i, ci in enumerate(categories) if ci == c] for c in dict.fromkeys(categories)}
        out[name] = {c: {**summarize({name: scores[name][rows]})[name], "n": len(rows)} for c, rows in groups.items()}
    return out


def _cell(stat: Mapping[str, float | None]) -> str:
    return f"{stat['mean']:.4f}" + (f" ± {stat['sem']:.4f}" if stat["sem"] is not None else "")


def markdown_table(metrics: Mapping, labels: Mapping[str, str], names: Sequence[str], stand_ins: set[str],
                   header: str) -> str:
    """Rows: the models; columns: the rewards (the paper's four first); stand-in columns marked with a dagger."""
    cols = [DISPLAY.get(n, n) + (" †" if n in stand_ins else "") for n in names]
    lines = [header, "", "| Model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(_cell(metrics[model][n]) for n in names) + " |")
    lines += ["", "Mean ± standard error over prompts (higher is better for every column)."]
    if stand_ins:
        lines.append(f"† {STAND_IN_NOTE}.")
    missing = [n for n in PAPER_REWARDS if n not in names]
    if missing:
        lines.append(f"Not evaluated (not in eval.rewards): {', '.join(DISPLAY[n] for n in missing)}.")
    return "\n".join(lines) + "\n"


def category_table(metrics: Mapping, labels: Mapping[str, str]) -> str:
    """One table per categorised reward: rows the models, columns the categories (with their prompt counts)."""
    lines = []
    categories = metrics.get("by_category", {})
    first = next(iter(labels))
    for name, cats in categories.get(first, {}).items():
        cols = [f"{c} ({cats[c]['n']})" for c in cats]
        lines += ["", f"{DISPLAY.get(name, name)} per category (prompts in brackets):", "",
                  "| Model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for model, label in labels.items():
            row = categories[model][name]
            lines.append(f"| {label} | " + " | ".join(_cell(row[c]) for c in cats) + " |")
    return "\n".join(lines) + ("\n" if lines else "")


def grid_rows(categories: Sequence[str | None], rows: int) -> list[int]:
    """Indices of `rows` prompts spread over their categories: the first prompt of each category in turn, then the
    second of each, ... (prompts with no category are one category)."""
    queues: dict[str | None, list[int]] = {}
    for i, c in enumerate(categories):
        queues.setdefault(c, []).append(i)
    order = []
    for depth in range(max((len(q) for q in queues.values()), default=0)):
        order += [q[depth] for q in queues.values() if depth < len(q)]
    return order[:rows]


def save_grid(columns: Mapping[str, Tensor], prompts: Sequence[str], path: Path, rows: Sequence[int]) -> None:
    """A PNG: one row per prompt index in `rows` (each prompt's first image), one column per model, the same seed
    across a row, the prompt beside it."""
    from treegrpo.training.grids import save_image_grid

    names = list(columns)
    per_prompt = columns[names[0]].shape[0] // len(prompts)
    save_image_grid([[columns[name][r * per_prompt] for name in names] for r in rows], [prompts[r] for r in rows],
                    path, column_titles=names)


def write_report(out_dir: Path, metrics: Mapping, table: str, images: Mapping[str, Tensor],
                 scores: Mapping[str, Mapping[str, Mapping[str, Tensor]]], sets: Mapping[str, Sequence[str]],
                 grid: Sequence[int], params: Params) -> None:
    """metrics.json, table.md, grid.png (the eval set's prompts `grid`) and scores.jsonl (one line per image, model
    and set) in `out_dir`. `scores`: set -> model -> reward -> (N, S); `images`: model -> the eval set's images."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "table.md").write_text(table)
    save_grid(images, next(iter(sets.values())), out_dir / "grid.png", grid)
    per_prompt = params.eval.samples_per_prompt
    offset = 0  # the sets were sampled one after the other: seeds continue across them
    with open(out_dir / "scores.jsonl", "w") as f:
        for name, prompts in sets.items():
            for model, by_reward in scores[name].items():
                for i, prompt in enumerate(prompts):
                    for j in range(per_prompt):
                        row = {"set": name, "model": model, "index": i, "sample": j,
                               "seed": params.eval.seed + offset + i * per_prompt + j, "prompt": prompt}
                        f.write(json.dumps(row | {n: v[i, j].item() for n, v in by_reward.items()}) + "\n")
            offset += len(prompts) * per_prompt


def read_scores(path: Path) -> list[dict]:
    """The rows of a scores.jsonl that `write_report` wrote (one per image and model)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def scored_prompts(rows: Sequence[Mapping]) -> list[str]:
    """The eval set's prompts (the first set's; the extra sets are not), in order, from `read_scores`' rows."""
    first = rows[0]["model"] if rows else None
    first_set = rows[0].get("set") if rows else None
    mine = sorted((r for r in rows if r["model"] == first and r.get("set") == first_set and r.get("sample", 0) == 0),
                  key=lambda r: r["index"])
    return [r["prompt"] for r in mine]


def set_metrics(rewards: Mapping, scores: Mapping[str, Mapping[str, Tensor]], prompts: Sequence[str]) -> dict:
    """One prompt set's figures: n_prompts, per model per reward {mean, sem}, by_category (rewards that name
    categories), and delta (trained minus base) when there is a trained model."""
    metrics = {"n_prompts": len(prompts), **{model: summarize(s) for model, s in scores.items()}}
    categories = {model: by_category(rewards, s, prompts) for model, s in scores.items()}
    if any(categories.values()):
        metrics["by_category"] = categories  # model -> reward -> category -> {mean, sem, n}
    if "trained" in scores:
        metrics["delta"] = {n: metrics["trained"][n]["mean"] - metrics["base"][n]["mean"] for n in rewards}
    return metrics


def evaluate(params: Params, prompts: Sequence[str], pipe=None, rewards: Mapping | None = None,
             extra_sets: Mapping[str, Sequence[str]] | None = None, name: str | None = None) -> dict:
    """Sample base (and trained, unless `eval.lora` is null), score, and write the report to `eval.output_dir`.

    Args:
        params: all of params.yaml (model, sampler steps and CFG, reward, eval, data for the eval set's name).
        prompts: the eval prompts.
        pipe: a loaded `StableDiffusion3Pipeline` (tests); loaded from `model` when None.
        rewards: name -> reward (tests); built from `reward` for `eval.rewards` when None.
        extra_sets: name -> prompts evaluated beside the eval set (`read_extra_sets(params)`); None: none.
        name: the eval set's name in the reports; None: `eval_set_name(params)`.
    Returns:
        the metrics written to metrics.json: the eval set's (`set_metrics`: n_prompts, per model per reward
        {mean, sem}, by_category, delta), its name (`eval_set`), samples_per_prompt, and `sets`: each extra set's.
    """
    from treegrpo.models.lora import load_lora
    from treegrpo.models.pipeline import load_pipeline
    from treegrpo.rewards.registry import build_rewards

    e = params.eval
    if e.lora is not None and not Path(e.lora).is_dir():
        raise UserError(f"eval.lora={e.lora!r}: no such folder; train first (`treegrpo train`, `dvc repro train`) "
                        "or set eval.lora: null to evaluate the base model alone")
    main = name or eval_set_name(params)
    sets = {main: list(prompts), **{name: list(ps) for name, ps in (extra_sets or {}).items() if name != main}}
    everything = [p for ps in sets.values() for p in ps]
    rewards = dict(rewards) if rewards is not None else build_rewards(params.reward, e.rewards)
    pipe = pipe if pipe is not None else load_pipeline(params.model)
    pipe.set_progress_bar_config(disable=True)
    labels = {"base": f"base ({params.model.pretrained})"}
    images = {"base": sample(pipe, everything, params)}  # (all N * S, 3, H, W), set after set
    if e.lora is not None:
        load_lora(pipe, e.lora)
        labels["trained"] = f"trained (LoRA {e.lora})"
        images["trained"] = sample(pipe, everything, params)
    del pipe  # free the pipeline's memory before the reward models load
    per_set_images, lo = {}, 0
    for name, ps in sets.items():
        hi = lo + len(ps) * e.samples_per_prompt
        per_set_images[name] = {model: imgs[lo:hi] for model, imgs in images.items()}
        lo = hi
    scores = {name: {model: score(rewards, imgs, sets[name]) for model, imgs in per_set_images[name].items()}
              for name in sets}
    figures = {name: set_metrics(rewards, scores[name], ps) for name, ps in sets.items()}
    metrics = {"eval_set": main, "samples_per_prompt": e.samples_per_prompt, **figures[main]}
    if len(sets) > 1:
        metrics["sets"] = {name: figures[name] for name in sets if name != main}
    stand_ins = {n for n, r in rewards.items() if getattr(r, "stand_in", False)}
    s = params.sampler
    header = (f"# Evaluation: ODE sampling ({s.num_inference_steps} steps, CFG {s.guidance_scale:g}, "
              f"{params.model.resolution} px), {e.samples_per_prompt} images per prompt, seed {e.seed} + image index")
    tables = []
    for i, (name, ps) in enumerate(sets.items()):
        title = (f"## {name}: {len(ps)} prompts" + (" (the eval set)" if i == 0 else "")
                 + (f", {e.extra_sets[name]}" if name in e.extra_sets else ""))
        tables.append(markdown_table(figures[name], labels, list(rewards), stand_ins, title)
                      + category_table(figures[name], labels))
    table = header + "\n\n" + "\n".join(tables)
    categorised = next((r for r in rewards.values() if callable(getattr(r, "category", None))), None)
    grid = grid_rows([categorised.category(p) if categorised else None for p in sets[main]], e.grid_prompts)
    write_report(Path(e.output_dir), metrics, table, per_set_images[main], scores, sets, grid, params)
    log.info("evaluation written to %s", e.output_dir)
    return metrics
