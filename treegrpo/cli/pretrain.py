"""`treegrpo pretrain`: train the tiny pipeline on the world's rendered TRAIN prompts (the stage after the world)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from treegrpo.cli import quiet_loading_bars


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain the tiny SD3.5-architecture pipeline on rendered world images (VAE, then transformer)",
        description="Start from the pipeline `treegrpo build-tiny-model` wrote (tiny_model.path), render the world's "
        "train prompts at model.resolution, train the VAE as an autoencoder and the transformer with SD3's "
        "flow-matching loss, and save the pipeline in diffusers format where pretrain.output says, with "
        "its summary (losses, latent statistics, CPU and wall time) where pretrain.report says.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--out", help="override pretrain.output")
    p.set_defaults(func=run)


def render_prompt(prompt: str, size: int, seed: int):
    """The world's image of `prompt` (a train-split prompt of the grammar)."""
    from treegrpo.world.grammar import parse_prompt
    from treegrpo.world.render import render

    return render(parse_prompt(prompt), size, seed)


def run(args: argparse.Namespace) -> int:
    import torch
    from diffusers import StableDiffusion3Pipeline

    from treegrpo.config import load_params
    from treegrpo.models.pipeline import local_folder
    from treegrpo.models.pretrain import pretrain
    from treegrpo.models.tiny import save_pipeline_atomic
    from treegrpo.world.split import world_prompts

    quiet_loading_bars()
    params = load_params(args.params)
    source = params.tiny_model.path
    folder = local_folder(source)  # a clear error for a missing folder (build it first)
    out = Path(args.out or params.pretrain.output)
    pipe = StableDiffusion3Pipeline.from_pretrained(str(folder if folder is not None else source),
                                                    dtype=torch.float32)
    prompts = world_prompts("train")  # never the held-out split
    with PhaseBars({"pretrain/vae_loss": ("VAE", params.pretrain.vae_steps),
                    "pretrain/loss": ("transformer", params.pretrain.steps)}) as bars:
        result = pretrain(pipe, prompts, render_prompt, params.pretrain, params.model.resolution,
                          params.model.max_sequence_length, log_fn=bars)
    save_pipeline_atomic(pipe, out)
    summary = {
        "prompts": result.prompts, "images": result.images,
        "vae_loss_first": _mean(result.vae_losses[:20]), "vae_loss_last": _mean(result.vae_losses[-20:]),
        "loss_first": _mean(result.losses[:50]), "loss_last": _mean(result.losses[-50:]),
        "scaling_factor": result.scaling_factor, "shift_factor": result.shift_factor,
        "cpu_s": result.cpu_s, "wall_s": result.wall_s, "threads": torch.get_num_threads(),
    }
    report = Path(params.pretrain.report)  # not in the model folder: its times differ on every run
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(summary, indent=2) + "\n")
    cpu, wall = sum(result.cpu_s.values()), sum(result.wall_s.values())
    print(f"pretrained on {result.images} images of {result.prompts} train prompts in {wall:.0f} s "
          f"({cpu:.0f} s CPU): VAE loss {summary['vae_loss_first']:.4f} -> {summary['vae_loss_last']:.4f}, "
          f"flow loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f}; saved {out}")
    return 0


class PhaseBars:
    """A terminal progress bar per pretraining phase, driven by pretraining's `log_fn(name, step, value)` (called
    every few steps): `phases` maps a logged name to (label, total steps)."""

    def __init__(self, phases: dict[str, tuple[str, int]]):
        self.phases, self.bar, self.name = phases, None, None

    def __enter__(self) -> PhaseBars:
        return self

    def __call__(self, name: str, step: int, value: float) -> None:
        from tqdm import tqdm

        if name not in self.phases:
            return
        if name != self.name:
            self.close()
            label, total = self.phases[name]
            self.bar, self.name = tqdm(total=total, desc=f"pretrain {label}", unit="step", leave=True), name
        self.bar.update(step + 1 - self.bar.n)
        self.bar.set_postfix(loss=f"{value:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)  # the phase ran to its end (logged every few steps)
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc) -> None:
        self.close()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
