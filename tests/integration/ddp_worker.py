"""`treegrpo train` with its stages recorded (what data parallelism must preserve), for test_resume.py.

Run as `python -m tests.integration.ddp_worker OUT treegrpo-train-args...`, alone or under
`python -m torch.distributed.run --nproc_per_node W -m tests.integration.ddp_worker ...`. Each process runs the real
command (`treegrpo.cli.main(["train", ...])`) with the trainer's stages wrapped, and writes `OUT/rank{r}.pt`: per
iteration its prompt keys, the samples' per-prompt tensors, the rewards, the edge advantages, and the gradient the
optimizer stepped with (after DDP's all-reduce and clipping), keyed by parameter name.

With TREEGRPO_WATCH=DIR[:DIR...] it also writes `OUT/writes{r}.json`: every file or folder under those folders that
the process opened for writing, created, renamed or removed, seen through Python's audit hooks (`open`, `os.mkdir`,
`os.rename`, `os.replace`, `os.remove`, `shutil.rmtree`, `sqlite3.connect`, ...), with the event; a file written
from C++ or Rust (torch.save, safetensors) shows through the folder it is written into, which Python creates.
TREEGRPO_TEST_LOCAL_OWNER=1 plants the bug the multi-node test must catch: file ownership by the local rank.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch

from treegrpo.recipes.trainer import TreeGRPOTrainer

RECORD: list[dict] = []  # one dict per iteration run, in order


def _after(name: str, keep):
    """Wrap `TreeGRPOTrainer.<name>` so that `keep(trainer, result, *args)` sees each call's result."""
    original = getattr(TreeGRPOTrainer, name)

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        keep(self, result, *args)
        return result

    setattr(TreeGRPOTrainer, name, wrapper)


def _keep_samples(self, samples, it, batch_keys, *args) -> None:
    RECORD.append({"iteration": it, "keys": list(batch_keys), "leaf_latents": samples.leaf_latents.cpu(),
                   "leaf_prompt": samples.leaf_prompt.cpu(), "parent_prompt": samples.parent_prompt.cpu(),
                   "child_log_prob": samples.child_log_prob.cpu()})


def _record_gradients(self, result) -> None:
    step, model = self.optimizer.step, self.accelerator.unwrap_model(self.model)

    def step_and_record(*args, **kwargs):
        RECORD[-1]["grad"] = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()
                              if p.grad is not None}
        return step(*args, **kwargs)

    self.optimizer.step = step_and_record


WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.truncate", "os.symlink",
                "os.link", "shutil.rmtree", "shutil.copyfile", "shutil.move", "sqlite3.connect"}


def watch_writes(roots: list[str]) -> list[tuple[str, str]]:
    """Record (event, path) for every write-like audit event on a path under `roots` (module docstring)."""
    roots = [os.path.realpath(r) for r in roots]
    seen: list[tuple[str, str]] = []

    def under(path) -> str | None:
        if not isinstance(path, str | bytes | os.PathLike):
            return None
        full = os.path.realpath(os.fsdecode(path))
        return full if any(full == r or full.startswith(r + os.sep) for r in roots) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") if isinstance(mode, str) else \
                bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
            paths = [path] if writing else []
        elif event in WRITE_EVENTS:
            paths = list(args[:2]) if event in ("os.rename", "os.replace", "shutil.copyfile", "shutil.move") \
                else [args[0]]
        else:
            return
        for path in paths:
            full = under(path)
            if full is not None:
                seen.append((event, full))

    sys.addaudithook(hook)
    return seen


def plant_local_rank_owner() -> None:
    """The bug: 'main process' taken as the local main process (rank 0 of each node), for the files and MLflow."""
    import accelerate

    import treegrpo.training.tracking

    accelerate.Accelerator.is_main_process = property(lambda self: self.is_local_main_process)
    treegrpo.training.tracking.is_main_process = lambda: os.environ.get("LOCAL_RANK", "0") == "0"


def main(argv: list[str]) -> int:
    from treegrpo.cli import main as treegrpo_main

    out, *train_args = argv
    writes = watch_writes(os.environ["TREEGRPO_WATCH"].split(os.pathsep)) if os.environ.get("TREEGRPO_WATCH") else None
    if os.environ.get("TREEGRPO_TEST_LOCAL_OWNER") == "1":
        plant_local_rank_owner()
    _after("setup", _record_gradients)
    _after("sample_batch", _keep_samples)
    _after("score", lambda self, result, *a: RECORD[-1].update(rewards=result.cpu()))
    _after("advantages", lambda self, result, *a: RECORD[-1].update(advantages=result.cpu()))
    rank = os.environ.get("RANK", "0")
    try:
        return treegrpo_main(["train", *train_args])
    finally:  # a rank that crashes (two writers colliding) still says what it wrote
        Path(out).mkdir(parents=True, exist_ok=True)
        if writes is not None:
            (Path(out) / f"writes{rank}.json").write_text(json.dumps(sorted(set(writes))))
        torch.save(RECORD, Path(out) / f"rank{rank}.pt")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def assert_same_update(single: dict, ranks: list[dict], reward_atol: float) -> None:
    """One iteration's record of one process (`single`) against the same iteration on W ranks (`ranks`, in rank
    order): what data parallelism must preserve, stage by stage (see test_resume.py's DDP test for the tolerances).

    The reward must be smooth (colour_fraction): float32 noise from the different batch layouts stays float32 noise
    through it, where a step function (JPEG size) would flip rewards."""
    import torch

    world = len(ranks)
    # rank r owns prompts r, r + W, ... of the same global draw
    assert sum((r["keys"] for r in ranks), []) == sum((single["keys"][r::world] for r in range(world)), [])
    for i, key in enumerate(single["keys"]):
        rank = ranks[i % world]
        j = rank["keys"].index(key)
        leaves, rank_leaves = single["leaf_prompt"] == i, rank["leaf_prompt"] == j
        parents, rank_parents = single["parent_prompt"] == i, rank["parent_prompt"] == j
        assert leaves.sum() == rank_leaves.sum() == 27 and parents.sum() == rank_parents.sum() == 13  # k = d = 3
        # the same noise (seeded per prompt and tree): samples differ by float32 summation order only, ~1e-6 of
        # latents of size ~1 after 10 transformer steps; 1e-4 leaves two orders of magnitude of headroom
        torch.testing.assert_close(rank["leaf_latents"][rank_leaves], single["leaf_latents"][leaves],
                                   rtol=0, atol=1e-4)
        torch.testing.assert_close(rank["child_log_prob"][rank_parents], single["child_log_prob"][parents],
                                   rtol=0, atol=1e-5)  # ~1e-7 measured: a mean over latent elements
        rewards, rank_rewards = single["rewards"][:, leaves], rank["rewards"][:, rank_leaves]
        torch.testing.assert_close(rank_rewards, rewards, rtol=0, atol=reward_atol)  # Lipschitz: ~1e-7 measured
        # z-scores within the prompt: a reward error e moves an advantage by at most ~(2 + |z|) e / spread
        spread = rewards.std().item()
        assert spread > 1e-3, "the leaves of a prompt must differ for the advantages to be meaningful"
        torch.testing.assert_close(rank["advantages"][rank_parents], single["advantages"][parents],
                                   rtol=0, atol=10 * reward_atol / spread)

    # DDP all-reduces: every rank steps with the same gradient, bit for bit (ring all-reduce hands every rank the
    # same sums), and it is the one-process gradient up to float noise (the loss is smooth at ratio 1, no clipping)
    def flat(grad: dict) -> torch.Tensor:
        return torch.cat([grad[k].flatten() for k in sorted(grad)])

    g = flat(single["grad"])
    assert all(r["grad"].keys() == single["grad"].keys() for r in ranks)
    for r in ranks[1:]:
        torch.testing.assert_close(flat(r["grad"]), flat(ranks[0]["grad"]), rtol=0, atol=0)
    assert g.norm() > 0
    g0 = flat(ranks[0]["grad"])
    assert (g0 - g).norm() / g.norm() < 1e-3, ((g0 - g).norm() / g.norm()).item()  # ~5e-6 measured
