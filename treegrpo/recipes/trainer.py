"""The TreeGRPO recipe: setup, sample trees, score, advantages, policy step, checkpoint (SPEC §4-6, §8). The same loop
runs the baselines (GRPO, MixGRPO, DDPO) as other sampler shapes (`treegrpo.training.algorithms`).

Reads top to bottom. The math lives in `treegrpo.core`; the model behind `treegrpo.models`; this file owns the loop,
accelerate (devices, mixed precision, data parallelism), the NaN policy and checkpoint/resume. It never imports
Prefect or MLflow: figures go out through the injected `log_fn(metrics, iteration)`.

Randomness: every draw is derived from (train.seed, iteration, ...) with `derive_seed`, so a run resumed from a
checkpoint draws exactly what an uninterrupted run draws, on every rank.
Data parallelism: the B prompts of an iteration are drawn identically on every rank and rank r takes prompts
r, r + W, ...: a prompt's trees never straddle ranks, so per-prompt normalisation needs no communication.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator
from torch import Tensor
from tqdm.auto import tqdm

from treegrpo.config import Params
from treegrpo.core.advantages import grouped_leaf_advantages
from treegrpo.core.loss import grpo_loss, kl_to_reference, warmup_learning_rate
from treegrpo.core.sde import child_log_probs, sde_moments
from treegrpo.core.signal import tree_signal
from treegrpo.core.tree import TreeSamples, edge_advantages, root_latents, sample_trees
from treegrpo.core.window import WindowSchedule, derive_seed, observe_reward
from treegrpo.models.lora import add_lora, lora_parameters, lora_state_dict, save_lora, set_lora_state_dict
from treegrpo.models.policy import SD3Policy
from treegrpo.models.sd3 import PromptEmbeds, configure_transformer
from treegrpo.training import checkpoint as ckpt
from treegrpo.training.algorithms import Shape, iteration_shape
from treegrpo.training.grids import save_image_grid, spread
from treegrpo.training.metrics import MetricsWriter, PeakMemory, Timer
from treegrpo.training.run_identity import RunIdentity
from treegrpo.utils.errors import UserError

log = logging.getLogger(__name__)
Reward = Callable[[Tensor, list[str]], Tensor]
LogFn = Callable[[dict[str, float], int], None]
PhaseFn = Callable[[str], contextlib.AbstractContextManager]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps in a row); the last good checkpoint is intact."""


@dataclasses.dataclass
class TrainerState:
    """What the loop carries from one iteration to the next, saved in every checkpoint's state.json. The field names
    are the checkpoint's keys ("window", "bad_steps", "skipped_steps"): renaming one would stop older checkpoints
    from resuming."""

    window: dict[str, Any] | None = None  # the window schedule's state (`core.window`; None: not started)
    bad_steps: int = 0  # non-finite steps in a row; `train.max_bad_steps` of them stop the run
    skipped_steps: int = 0  # non-finite steps skipped in the whole run

    def to_checkpoint(self) -> dict[str, Any]:
        """The JSON-able keys this state is saved under."""
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> TrainerState:
        """The state saved in a checkpoint's JSON (which holds other keys too: iteration, fingerprint, history)."""
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})


class ResumePoint(NamedTuple):
    """Where a run starts: the iteration, and the figures of the iterations before it (the checkpoint keeps them)."""

    iteration: int
    history: list[dict[str, float]]


class TreeGRPOTrainer:
    """One training run of `train.algorithm`: TreeGRPO, or one of the three baselines it is measured against (grpo,
    mixgrpo, ddpo: `treegrpo.training.algorithms` gives each iteration's shape, the loop is the same). `train()` runs
    (or resumes) it to `train.iterations` and returns the final metrics.

    Args:
        params: all of params.yaml.
        prompts: the training prompts (the dataset; each iteration draws `train.prompts_per_iteration`).
        rewards: name -> reward callable `(images (N, 3, H, W) in [0, 1], prompts) -> (N,)`, the names and weights
            of `params.reward.weights`.
        log_fn: receives each iteration's figures (main process only).
        artifact_fn: receives `(path, iteration)` for each file written during training (main process only): the
            sample grids, every `train.sample_every` iterations.
        accelerator: an `accelerate.Accelerator`; one is made from params when None.
        phase_fn: `phase_fn(name)` returns a context manager the trainer runs each phase of an iteration inside:
            "sampling" (encoding the prompts, growing the trees) and "training" (the policy update). The benchmark
            labels the transformer's calls with it; None: no hook. Settable after construction (`trainer.phase_fn`).
    """

    def __init__(self, params: Params, prompts: Sequence[str], rewards: Mapping[str, Reward],
                 log_fn: LogFn | None = None, accelerator=None,
                 artifact_fn: Callable[[Path, int], None] | None = None, phase_fn: PhaseFn | None = None):
        if not prompts:
            raise UserError("no training prompts: run `treegrpo ingest` and `treegrpo validate` first")
        missing = set(params.reward.weights) - set(rewards)
        if missing:
            raise UserError(f"reward.weights names {sorted(missing)} but no such reward model was given")
        self.params, self.prompts, self.rewards = params, list(prompts), dict(rewards)
        self.reward_names = list(params.reward.weights)
        self.log_fn = log_fn or (lambda metrics, it: None)
        self.artifact_fn = artifact_fn or (lambda path, it: None)
        self.phase_fn = phase_fn or (lambda name: contextlib.nullcontext())
        self.accelerator = accelerator
        self.out = Path(params.train.output_dir)
        t, s = params.train, params.sampler
        self.schedule = WindowSchedule(s.window.strategy, s.num_inference_steps, s.depth, s.window.alpha,
                                       s.window.start, s.window.stride, s.window.every, seed=t.seed)

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        """Load the pipeline, add LoRA, build the optimizer, prepare for accelerate, resume if possible."""
        from diffusers.training_utils import cast_training_params  # here: diffusers takes ~10 s to import on a CPU

        p = self.params
        if self.accelerator is None:
            self.accelerator = Accelerator(mixed_precision=p.train.mixed_precision,
                                           cpu=p.model.device == "cpu")
        acc = self.accelerator
        self.policy = SD3Policy.load(p.model, p.sampler, device=acc.device)
        transformer = self.policy.transformer
        with torch.random.fork_rng(devices=[]):  # the adapter's random init depends on train.seed alone
            torch.manual_seed(derive_seed("lora", p.train.seed))
            add_lora(transformer, p.lora)
        cast_training_params(transformer, dtype=torch.float32)  # LoRA weights train in fp32 over a bf16 base
        # attention kernel, gradient checkpointing and torch.compile, in place, before DDP wraps the transformer
        configure_transformer(transformer, p.model.attention_backend, p.model.compile, p.train.gradient_checkpointing)
        params = lora_parameters(transformer)
        for param in params:
            param.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=p.train.learning_rate, weight_decay=p.train.weight_decay)
        self.model, self.optimizer = acc.prepare(transformer, optimizer)
        # sampling runs the policy's transformer, the update its prepared wrapper (DDP): the same module
        assert acc.unwrap_model(self.model) is transformer
        self.state = TrainerState()
        self.identity = RunIdentity.of(p, self.prompts, self.rewards)
        self.start_iteration, history = self.resume()
        self.check_ranks_agree()
        # the figures of the iterations before the resume point come from the checkpoint (DVC deletes the train
        # stage's metrics.json and history.json before it re-runs the stage)
        self.metrics = MetricsWriter(self.out, enabled=acc.is_main_process, history=history)
        if acc.is_main_process:  # a DVC output of the train stage, even when no grid is due
            (self.out / "samples").mkdir(parents=True, exist_ok=True)

    def resume(self) -> ResumePoint:
        """Load the newest complete checkpoint of this run (`RunIdentity.resumes`: the same trajectory, at or below
        `train.iterations`). Returns the iteration to start at and the figures of the iterations before it (the
        checkpoint keeps them). Another trajectory's checkpoints are removed; the same trajectory's past the end (a
        longer run) are kept, and never resumed."""
        root = self.out / "checkpoints"
        if self.accelerator.is_main_process:
            ckpt.clean_partials(root)
        self.accelerator.wait_for_everyone()
        found = [(path, ckpt.read_state(path)) for path in ckpt.complete_checkpoints(root)]
        stale = [path for path, state in found if state.get("fingerprint") != self.identity.fingerprint]
        if stale:
            log.warning("%s holds checkpoints of another run (params, training code, prompts or base model differ): "
                        "removing %s", root, ", ".join(p.name for p in stale))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        usable = [path for path, state in found if self.identity.resumes(state.get("fingerprint"), state["iteration"])]
        later = [path for path, _ in found if path not in stale and path not in usable]
        if later:
            self.explain_later_checkpoints(later, usable)
        return self.load_resume_point(usable[-1]) if usable else ResumePoint(0, [])

    def check_ranks_agree(self) -> None:
        """Every rank must start at the same iteration of the same run, or the ranks' collectives fall out of step
        (a hang): on several nodes, a `train.output_dir` that only node 0 sees, or another checkout elsewhere."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        mine = torch.tensor([[self.start_iteration, int(self.identity.fingerprint[:12], 16)]], device=acc.device)
        every = acc.gather(mine).cpu()  # (W, 2): start iteration, run fingerprint (48 bits) of each rank
        if (every != every[0]).any():
            starts, fingerprints = every[:, 0].tolist(), [f"{f:012x}" for f in every[:, 1].tolist()]
            raise UserError(f"the {acc.num_processes} ranks disagree on where this run starts (start iterations "
                            f"{starts}, run fingerprints {fingerprints}, by global rank): every node must see the "
                            f"same train.output_dir={str(self.out)!r} (a shared filesystem) and run the same checkout "
                            "and params.yaml")

    def explain_later_checkpoints(self, later: list[Path], usable: list[Path]) -> None:
        """Say why a checkpoint past `train.iterations` is not resumed, and what is done instead."""
        t = self.params.train
        what = (f"resuming {usable[-1].name}, the same run at or below iteration {t.iterations}" if usable else
                f"no checkpoint of this run at or below iteration {t.iterations} is left (train.keep_checkpoints="
                f"{t.keep_checkpoints} kept the newest): starting over from iteration 0")
        log.warning("train.iterations=%d ends before %s, written by a longer run with the same params: its model is "
                    "not this run's answer; %s. The later checkpoints are kept for a longer run",
                    t.iterations, ", ".join(p.name for p in later), what)

    def load_resume_point(self, path: Path) -> ResumePoint:
        """Restore the LoRA, the optimizer, the RNGs and the trainer state from checkpoint `path`."""
        lora, optim_state, state = ckpt.load_checkpoint(path)
        set_lora_state_dict(self.accelerator.unwrap_model(self.model), lora)
        self.optimizer.load_state_dict(optim_state)
        self.state = TrainerState.from_checkpoint(state)
        log.info("resumed from %s (iteration %d)", path, state["iteration"])
        start = int(state["iteration"])
        return ResumePoint(start, [r for r in state.get("history", []) if r["iteration"] < start])

    # ---------------------------------------------------------------- loop
    def train(self) -> dict[str, float]:
        """Run iterations until `train.iterations`; checkpoint every `checkpoint_every`; write the final LoRA."""
        if not hasattr(self, "model"):
            self.setup()
        t = self.params.train
        last: dict[str, float] = {}
        bar = tqdm(range(self.start_iteration, t.iterations), initial=self.start_iteration, total=t.iterations,
                   disable=not self.accelerator.is_main_process, desc="train")
        for it in bar:
            last = self.iteration(it)
            # the figures a person watches (tqdm adds s/it and the ETA); the rest: history.json, MLflow, `-v`
            bar.set_postfix(reward=f"{last.get('reward_mean', float('nan')):.4f}",
                            loss=f"{last.get('loss', float('nan')):.3g}")
            if self.accelerator.is_main_process:
                self.metrics.append(it, last)
                self.log_fn(last, it)
            if (it + 1) % t.checkpoint_every == 0 or it + 1 == t.iterations:
                self.save_checkpoint(it + 1)
        self.export_lora()
        return last

    def iteration(self, it: int) -> dict[str, float]:
        """One iteration: sample → decode → score → advantages → policy update. Returns its figures."""
        timer, memory = Timer(self.accelerator.device), PeakMemory(self.accelerator.device)
        start_memory = memory.start()
        batch_keys = self.prompt_batch(it)
        prompts = [self.prompts[k] for k in batch_keys]
        shape, self.state.window = iteration_shape(self.params, it, self.schedule, self.state.window)
        with timer("time_sampling"), self.phase_fn("sampling"):
            embeds = self.policy.encode(prompts)  # once: sampling and the update read the same embeddings
            samples = self.sample_batch(it, batch_keys, embeds, shape)
        with timer("time_decoding"):
            images = self.policy.decode(samples.leaf_latents)  # (L, 3, H, W)
        with timer("time_reward"):
            rewards = self.score(images, [prompts[i] for i in samples.leaf_prompt.tolist()])  # (R, L)
        stats = self.reward_stats(rewards)
        self.save_samples(it, images, prompts, samples.leaf_prompt, rewards)
        edge_adv = self.advantages(samples, rewards, shape.normalization)  # (P, k)
        signal = self.signal(samples, rewards, edge_adv)
        bad = not (torch.isfinite(rewards).all() and torch.isfinite(edge_adv).all()
                   and torch.isfinite(samples.child_log_prob).all())
        with timer("time_training"), self.phase_fn("training"):
            train_stats = self.skip_step("non-finite reward, advantage or log-prob") if bad else \
                self.policy_step(it, samples, edge_adv, embeds, shape.trained_levels)
        self.state.window = observe_reward(self.schedule, self.state.window, stats["reward_mean"])
        trained = int(self.trained_rows(samples, shape.trained_levels).sum())
        return {**stats, **signal, **train_stats, **timer.totals, "nfe": float(samples.nfe),
                "images": float(len(images)),
                "eff_group": float(len(images) / len(prompts)), "eff_steps": float(trained / len(prompts)),
                "window_start": float(samples.window_start), "peak_memory_mb": memory.read(),
                "start_memory_mb": start_memory,
                "skipped_steps": float(self.state.skipped_steps)}

    def prompt_batch(self, it: int) -> list[int]:
        """This rank's prompt indices for iteration `it`: the same global draw on every rank, then a slice."""
        t, acc = self.params.train, self.accelerator
        if t.prompts_per_iteration % acc.num_processes:
            raise UserError(f"train.prompts_per_iteration={t.prompts_per_iteration}: must be divisible by the "
                            f"{acc.num_processes} processes, so each rank owns whole prompts")
        gen = torch.Generator().manual_seed(derive_seed("prompts", t.seed, it))
        reps = math.ceil(t.prompts_per_iteration / len(self.prompts))
        order = torch.cat([torch.randperm(len(self.prompts), generator=gen) for _ in range(reps)])
        return order[: t.prompts_per_iteration].tolist()[acc.process_index :: acc.num_processes]

    # ---------------------------------------------------------------- sample
    def sample_batch(self, it: int, batch_keys: list[int], embeds: PromptEmbeds, shape: Shape) -> TreeSamples:
        """Grow this rank's trees (or trajectories: k = 1) of iteration `it` with `core.tree.sample_trees`, the
        frontier batched, conditioned on `embeds` (its prompts are those of `batch_keys`, in order)."""
        s, p, acc, policy = self.params.sampler, self.params, self.accelerator, self.policy
        velocity = policy.velocity(embeds)
        trees = shape.trees_per_prompt
        roots, root_prompt = root_latents(batch_keys, 1 if shape.shared_noise else trees, policy.latent_shape,
                                          p.train.seed, it, device=acc.device)
        if shape.shared_noise:  # GRPO's option: every trajectory of a prompt starts from the same noise
            roots, root_prompt = roots.repeat_interleave(trees, 0), root_prompt.repeat_interleave(trees)
        # one generator per tree, seeded by (seed, iteration, prompt, tree): the same noise on any number of ranks
        gen = [torch.Generator().manual_seed(derive_seed("sde", p.train.seed, it, key, tree))
               for key in batch_keys for tree in range(trees)]
        policy.transformer.eval()
        with torch.no_grad(), acc.autocast():
            return sample_trees(velocity, roots, root_prompt, policy.sigmas, shape.window_start, shape.depth,
                                shape.branching, s.noise_level, gen, s.max_batch)

    # ---------------------------------------------------------------- score
    def score(self, images: Tensor, prompts: list[str]) -> Tensor:
        """(R, L) float32 scores of every leaf image under every configured reward."""
        rows = []
        for name in self.reward_names:
            with torch.no_grad():
                r = self.rewards[name](images, prompts)
            rows.append(torch.as_tensor(r, dtype=torch.float32).reshape(-1).to(images.device))  # (L,)
        return torch.stack(rows)  # (R, L)

    def save_samples(self, it: int, images: Tensor, prompts: list[str], leaf_prompt: Tensor, rewards: Tensor) -> None:
        """Every `train.sample_every` iterations (main process): `{output_dir}/samples/iteration_NNNNNN.png`, one
        row per prompt (at most 4) of 8 of its leaf images spread from best to worst weighted reward, each captioned
        with its reward; handed to `artifact_fn` (MLflow logs it)."""
        every = self.params.train.sample_every
        if not every or (it + 1) % every or not self.accelerator.is_main_process:
            return
        score = self.weighted_reward(rewards).cpu()  # (L,)
        owner = leaf_prompt.cpu()
        cells, captions = [], []
        for i in range(min(len(prompts), 4)):
            leaves = torch.nonzero(owner == i).flatten()  # (G,)
            picks = [int(leaves[j]) for j in spread(score[leaves], 8)]
            cells.append([images[j].cpu() for j in picks])
            captions.append([f"{score[j]:.4g}" for j in picks])
        path = save_image_grid(cells, prompts[: len(cells)], self.out / "samples" / f"iteration_{it + 1:06d}.png",
                               captions=captions)
        self.artifact_fn(path, it)

    def reward_weights(self, device: torch.device) -> Tensor:
        """(R,) the `reward.weights`, in the order of `score`'s rows."""
        return torch.tensor([self.params.reward.weights[n] for n in self.reward_names], device=device)

    def weighted_reward(self, rewards: Tensor) -> Tensor:
        """(L,) the weighted mean of `score`'s (R, L) rewards per image."""
        weights = self.reward_weights(rewards.device)
        return (weights @ rewards) / weights.sum()

    def reward_stats(self, rewards: Tensor) -> dict[str, float]:
        """Mean and std per reward over all ranks' leaves, and the weighted mean (what the window adapts to)."""
        everything = self.accelerator.gather(rewards.contiguous().T).T  # (R, L * W)
        stats: dict[str, float] = {}
        weighted = 0.0
        for i, name in enumerate(self.reward_names):
            stats[f"reward_{name}_mean"] = everything[i].mean().item()
            stats[f"reward_{name}_std"] = everything[i].std(unbiased=False).item()
            weighted += self.params.reward.weights[name] * stats[f"reward_{name}_mean"]
        stats["reward_mean"] = weighted / sum(self.params.reward.weights.values())
        return stats

    # ---------------------------------------------------------------- advantages
    def advantages(self, samples: TreeSamples, rewards: Tensor, normalization: str = "prompt") -> Tensor:
        """(P, k) edge advantages: per-reward z-scores of the leaves within each prompt's group (or the whole batch:
        DDPO's option), weighted, backed up the trees."""
        t = self.params.train
        weights = self.reward_weights(rewards.device)  # (R,)
        group = samples.leaf_prompt.to(rewards.device)  # (L,)
        if normalization == "batch":
            group = torch.zeros_like(group)
        leaf = grouped_leaf_advantages(rewards, group, weights, clip=t.adv_clip_max)  # (L,)
        return edge_advantages(samples, leaf, mode=t.backup, temperature=t.temperature)  # (P, k)

    def signal(self, samples: TreeSamples, rewards: Tensor, edge_adv: Tensor) -> dict[str, float]:
        """Is the tree carrying signal (`treegrpo.core.signal`), on this rank's prompts: `tree/reward_std_mean`,
        `tree/reward_std_min`, `tree/tie_fraction`, `tree/adv_std_level_<l>`, `tree/backup_ess_mean|min`."""
        t = self.params.train
        figures = tree_signal(self.weighted_reward(rewards), samples.leaf_prompt.to(rewards.device), edge_adv,
                              samples.parent_level, samples.child_log_prob, samples.depth, t.backup, t.temperature)
        return {f"tree/{name}": value for name, value in figures.items()}

    # ---------------------------------------------------------------- update
    def policy_step(self, it: int, samples: TreeSamples, edge_adv: Tensor, embeds: PromptEmbeds,
                    trained_levels: tuple[int, ...]) -> dict[str, float]:
        """`inner_epochs` passes over the shuffled trained parents; one forward with gradients per parent serves
        its k child edges; gradients accumulate over the micro-batches of a pass, then one optimizer step. The
        velocity runs through the prepared (DDP) module, on the embeddings the trees were sampled with."""
        t, acc = self.params.train, self.accelerator
        train_velocity = self.policy.velocity(embeds, self.model)
        old = samples.child_log_prob
        if t.recompute_old_log_prob:
            old = self.recompute_log_probs(samples, train_velocity)
        trained = self.trained_rows(samples, trained_levels).nonzero().flatten()  # (P_t,) parents trained now
        num_parents = len(trained)
        log_ratios, clip_fracs, kls, losses, grad_norms, first_dev = [], [], [], [], [], 0.0
        self.model.train()
        for epoch in range(t.inner_epochs):
            gen = torch.Generator().manual_seed(derive_seed("shuffle", t.seed, it, epoch))
            chunks = trained[torch.randperm(num_parents, generator=gen)].split(t.micro_batch)
            for j, idx in enumerate(chunks):
                idx = idx.to(samples.parent_latents.device)
                out, kl = self.edge_loss(samples, idx, edge_adv, old, train_velocity)
                scale = len(idx) / num_parents if t.loss_reduction == "mean" else 1.0
                loss = (out.loss + t.kl_beta * kl) * scale
                if not torch.isfinite(loss):
                    self.optimizer.zero_grad(set_to_none=True)
                    return self.skip_step("non-finite loss")
                sync = j == len(chunks) - 1
                with acc.no_sync(self.model) if not sync else contextlib.nullcontext():
                    acc.backward(loss)
                log_ratios.append(out.ratio.log().flatten())
                clip_fracs.append(out.clip_fraction.item())
                kls.append(out.approx_kl.item())
                losses.append(loss.item())
                if epoch == 0:
                    first_dev = max(first_dev, (out.ratio - 1).abs().max().item())
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
            if not torch.isfinite(torch.as_tensor(grad_norm)):
                self.optimizer.zero_grad(set_to_none=True)
                return self.skip_step("non-finite gradient")
            lr = warmup_learning_rate(t.learning_rate, it, t.warmup_iterations)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            grad_norms.append(float(grad_norm))
        self.state.bad_steps = 0
        ratio = torch.cat(log_ratios).exp()
        return {"loss": sum(losses) / t.inner_epochs, "grad_norm": sum(grad_norms) / len(grad_norms),
                "learning_rate": lr,
                "ratio_min": ratio.min().item(), "ratio_mean": ratio.mean().item(), "ratio_max": ratio.max().item(),
                "first_step_ratio_dev": first_dev, "clip_fraction": sum(clip_fracs) / len(clip_fracs),
                "approx_kl": sum(kls) / len(kls), "edges_trained": float(num_parents * old.shape[1]),
                "backward_passes": float(len(log_ratios)),
                "parents_trained": float(num_parents)}

    @staticmethod
    def trained_rows(samples: TreeSamples, trained_levels: tuple[int, ...]) -> Tensor:
        """(P,) bool: the parents on the window levels this iteration trains."""
        levels = torch.tensor(trained_levels, device=samples.parent_level.device)
        return torch.isin(samples.parent_level, levels)

    def edge_loss(self, samples: TreeSamples, idx: Tensor, edge_adv: Tensor, old: Tensor, velocity):
        """GRPO loss (and KL to the reference) of the child edges of parents `idx`: one forward for all k."""
        t, s = self.params.train, self.params.sampler
        latents, steps = samples.parent_latents[idx], samples.parent_step[idx]  # (m, C, H, W) (m,)
        with self.accelerator.autocast():
            v = velocity(latents, steps, samples.parent_prompt[idx])  # (m, C, H, W)
        mean, std = sde_moments(latents, v, self.policy.sigmas, steps, s.noise_level)
        logp = child_log_probs(mean, std, samples.child_latents[idx])  # (m, k)
        out = grpo_loss(logp, old[idx], edge_adv[idx], t.clip_range, t.loss_reduction)
        kl = torch.zeros((), device=logp.device)
        if t.kl_beta > 0:
            model = self.accelerator.unwrap_model(self.model)
            with torch.no_grad(), self.accelerator.autocast():
                model.disable_adapters()
                try:
                    v_ref = velocity(latents, steps, samples.parent_prompt[idx])
                finally:
                    model.enable_adapters()
            ref_mean, _ = sde_moments(latents, v_ref, self.policy.sigmas, steps, s.noise_level)
            kl = kl_to_reference(mean, ref_mean, std).mean()
        return out, kl

    @torch.no_grad()
    def recompute_log_probs(self, samples: TreeSamples, velocity) -> Tensor:
        """Old log-probs recomputed at the training layout (micro-batches), before any update (SPEC §6)."""
        old = torch.empty_like(samples.child_log_prob)
        mb = self.params.train.micro_batch
        for idx in torch.arange(samples.num_parents, device=old.device).split(mb):
            latents, steps = samples.parent_latents[idx], samples.parent_step[idx]
            with self.accelerator.autocast():
                v = velocity(latents, steps, samples.parent_prompt[idx])
            mean, std = sde_moments(latents, v, self.policy.sigmas, steps, self.params.sampler.noise_level)
            old[idx] = child_log_probs(mean, std, samples.child_latents[idx])
        return old

    def skip_step(self, why: str) -> dict[str, float]:
        """Count a skipped (non-finite) step; too many in a row stop the run with the last checkpoint intact."""
        self.state.bad_steps += 1
        self.state.skipped_steps += 1
        log.warning("skipping the update: %s (%d in a row)", why, self.state.bad_steps)
        if self.state.bad_steps >= self.params.train.max_bad_steps:
            raise TrainingError(f"{self.state.bad_steps} non-finite steps in a row (last: {why}); stopping. "
                                f"The last good checkpoint in {self.out / 'checkpoints'} is intact; lower "
                                "train.learning_rate or check the reward models")
        return {"skipped": 1.0}

    # ---------------------------------------------------------------- checkpoint
    def save_checkpoint(self, iteration: int) -> None:
        """Checkpoint `iteration` (main process; atomic, `treegrpo.training.checkpoint`): the LoRA, the optimizer,
        the RNGs, the trainer state, the run's fingerprint and the figures so far."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {**self.state.to_checkpoint(), "fingerprint": self.identity.fingerprint,
                     "history": self.metrics.history}
            ckpt.save_checkpoint(self.out / "checkpoints", iteration, lora_state_dict(acc.unwrap_model(self.model)),
                                 self.optimizer.state_dict(), state, keep=self.params.train.keep_checkpoints)
        acc.wait_for_everyone()

    def export_lora(self) -> None:
        """The trained adapter in the diffusers LoRA format at `{output_dir}/lora`."""
        if self.accelerator.is_main_process:
            save_lora(self.accelerator.unwrap_model(self.model), self.out / "lora")


