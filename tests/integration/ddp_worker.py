"""`treegrpo train` with its stages recorded (what data parallelism must preserve), for test_resume.py.

Run as `python -m tests.integration.ddp_worker OUT treegrpo-train-args...`, alone or under
`python -m torch.distributed.run --nproc_per_node W -m tests.integration.ddp_worker ...`. Each process runs the real
command (`treegrpo.cli.main(["train", ...])`) with the trainer's stages wrapped, and writes `OUT/rank{r}.pt`: per
iteration its prompt keys, the samples' per-prompt tensors, the rewards, the edge advantages, and the gradient the
optimizer stepped with (after DDP's all-reduce and clipping), keyed by parameter name.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

from treegrpo.trainer import TreeGRPOTrainer

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


def _keep_samples(self, result, it, batch_keys, *args) -> None:
    samples, _ = result
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


def main(argv: list[str]) -> int:
    from treegrpo.cli import main as treegrpo_main

    out, *train_args = argv
    _after("setup", _record_gradients)
    _after("sample_trees", _keep_samples)
    _after("score", lambda self, result, *a: RECORD[-1].update(rewards=result.cpu()))
    _after("advantages", lambda self, result, *a: RECORD[-1].update(advantages=result.cpu()))
    code = treegrpo_main(["train", *train_args])
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(RECORD, Path(out) / f"rank{os.environ.get('RANK', '0')}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
