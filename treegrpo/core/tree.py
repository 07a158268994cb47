"""Tree-structured sampling with a batched frontier, and the bottom-up edge advantages (SPEC §4, §5).

Every tree runs the N steps from its root noise. Outside the window W = {s, ..., s + d - 1} each frontier node takes
one ODE step; at window level l (step s + l) each frontier node is a parent that gets k children from the same step
mean (one velocity evaluation) and k independent eps. All frontier nodes of all trees go through `velocity_fn`
together at every step, in chunks of at most `max_batch` nodes.

Ordering (what `TreeSamples` indexes):
- Roots r = 0..R-1 as given (the caller puts them prompt-major: r = prompt * T + tree).
- Parents are stored level by level (l = 0..d-1); within level l in frontier order, which is parent-major: the
  children of level-l node j are level-(l+1) nodes j*k .. j*k + k - 1. Level l holds R * k^l parents.
- Leaves are the level-d nodes in the same order, so tree r's leaves are the contiguous block r*k^d .. (r+1)*k^d - 1
  (and prompt-major roots give leaves grouped by prompt).
- `child_index[p, c]`: for a parent on levels 0..d-2, the parent row of its c-th child; on level d-1, the leaf row.

Velocity protocol: velocity_fn(latents (n, C, H, W) float32, step_index (n,) long, prompt_index (n,) long)
-> velocity (n, C, H, W). The model adapter maps prompt_index to its prompt embeddings, runs CFG and casts dtypes.

Notation:
    N        num_inference_steps (len(sigmas) - 1)
    k        branching factor
    d        window depth
    s        window start
    R        roots (trees) in the batch; T trees per prompt
    P        parents in the window, R * (1 + k + ... + k^(d-1))
    L        leaves, R * k^d
    n        frontier nodes at one step
    C, H, W  latent channels, height, width
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor

from treegrpo.core.advantages import backup
from treegrpo.core.sde import child_log_probs, ode_step, sde_moments, standard_normal
from treegrpo.core.window import derive_seed

VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]
# the children's noise: one generator for the whole frontier, or one per root (batch- and rank-invariant)
Generators = torch.Generator | Sequence[torch.Generator] | None

__all__ = [
    "TreeSamples", "VelocityFn", "child_log_probs", "edge_advantages", "eff_group", "eff_steps", "root_latents",
    "sample_trees", "tree_nfe",
]


def _nodes_above_leaves(branching: int, depth: int) -> int:
    """1 + k + ... + k^(d-1): the parents (window nodes that branch) of one tree."""
    return sum(branching**level for level in range(depth))


def check_tree_shape(num_inference_steps: int, branching: int, depth: int, window_start: int) -> None:
    """Raise ValueError unless k >= 1, d >= 1 and the window {s, ..., s + d - 1} fits before the last step."""
    if branching < 1:
        raise ValueError(f"branching={branching}: must be >= 1 (>= 2 to form a group; 1 is a plain SDE trajectory)")
    if depth < 1:
        raise ValueError(f"depth={depth}: must be >= 1")
    if window_start < 0 or window_start + depth > num_inference_steps - 1:
        raise ValueError(
            f"window_start={window_start}, depth={depth}: need 0 <= s and s + d <= num_inference_steps - 1 = "
            f"{num_inference_steps - 1} (the last step is never in the window)"
        )


def tree_nfe(num_inference_steps: int, branching: int, depth: int, window_start: int) -> int:
    """Velocity evaluations per tree, without CFG doubling: s + (1 + k + ... + k^(d-1)) + k^d (N - s - d).

    Args:
        num_inference_steps: N.
        branching: k.
        depth: d.
        window_start: s.

    Returns:
        The count; for N = 10, k = d = 3, s = 0: 202.
    """
    check_tree_shape(num_inference_steps, branching, depth, window_start)
    suffix = num_inference_steps - window_start - depth
    return window_start + _nodes_above_leaves(branching, depth) + branching**depth * suffix


def eff_group(branching: int, depth: int, trees: int) -> int:
    """EffGrp: images (leaves) per prompt, T * k^d."""
    return trees * branching**depth


def eff_steps(branching: int, depth: int, trees: int) -> int:
    """EffSteps: parent nodes trained per prompt, T * (1 + k + ... + k^(d-1))."""
    return trees * _nodes_above_leaves(branching, depth)


@dataclass(frozen=True)
class TreeSamples:
    """What training needs from one batch of trees (ordering in the module docstring); all on one device.

    parent_latents (P, C, H, W) float32, parent_step (P,) long, parent_prompt (P,) long, parent_level (P,) long
    (= parent_step - window_start); child_latents (P, k, C, H, W) float32, child_log_prob (P, k) float32 (the
    behaviour policy's), child_index (P, k) long; leaf_latents (L, C, H, W) float32 at sigma = 0, leaf_prompt (L,)
    long, leaf_tree (L,) long (root index); nfe: velocity evaluations made (nodes, no CFG doubling).
    """

    parent_latents: Tensor
    parent_step: Tensor
    parent_prompt: Tensor
    parent_level: Tensor
    child_latents: Tensor
    child_log_prob: Tensor
    child_index: Tensor
    leaf_latents: Tensor
    leaf_prompt: Tensor
    leaf_tree: Tensor
    nfe: int
    window_start: int
    depth: int
    branching: int

    @property
    def num_parents(self) -> int:
        return self.parent_latents.shape[0]

    @property
    def num_leaves(self) -> int:
        return self.leaf_latents.shape[0]

    def to(self, device: str | torch.device) -> TreeSamples:
        """A copy with every tensor on `device`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {name: v.to(device) if isinstance(v, Tensor) else v for name, v in values.items()}
        return TreeSamples(**moved)


def root_latents(
    prompt_keys: Sequence[int],
    trees_per_prompt: int,
    latent_shape: tuple[int, int, int],
    seed: int,
    iteration: int,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Root noise x ~ N(0, I) per (prompt, tree), each from a generator seeded by (seed, iteration, prompt key, tree).

    Reproducible whatever the batch composition, rank or device (drawn on the CPU), so a resumed run draws the
    same noise.

    Args:
        prompt_keys: (B,) a stable key per prompt in the batch, e.g. its dataset index.
        trees_per_prompt: T.
        latent_shape: (C, H, W).
        seed: the run's seed.
        iteration: the training iteration index.
        device: where the result goes.

    Returns:
        (latents (B*T, C, H, W) float32, root_prompt (B*T,) long): prompt-major, root b*T + t is prompt b's tree t;
        root_prompt holds the prompt's position b in the batch (what `velocity_fn` receives).
    """
    noise = []
    for key in prompt_keys:
        for tree in range(trees_per_prompt):
            generator = torch.Generator().manual_seed(derive_seed("root", seed, iteration, int(key), tree))
            noise.append(torch.randn(latent_shape, generator=generator, dtype=torch.float32))  # (C, H, W)
    latents = torch.stack(noise).to(device)  # (B*T, C, H, W)
    root_prompt = torch.arange(len(prompt_keys), device=device).repeat_interleave(trees_per_prompt)  # (B*T,)
    return latents, root_prompt


def _frontier_velocity(
    velocity_fn: VelocityFn, latents: Tensor, step: int, prompt: Tensor, max_batch: int
) -> Tensor:
    """velocity_fn over the frontier in chunks of at most `max_batch` nodes; (n, C, H, W) float32."""
    step_index = torch.full((latents.shape[0],), step, dtype=torch.long, device=latents.device)  # (n,)
    chunks = [
        velocity_fn(latents[i : i + max_batch], step_index[i : i + max_batch], prompt[i : i + max_batch]).float()
        for i in range(0, latents.shape[0], max_batch)
    ]
    return torch.cat(chunks)  # (n, C, H, W)


class _Level(NamedTuple):
    """One window level as sampled: n parents and their k children each."""

    latents: Tensor  # (n, C, H, W)
    step: Tensor  # (n,) long
    prompt: Tensor  # (n,) long
    children: Tensor  # (n, k, C, H, W)
    log_prob: Tensor  # (n, k)


def _draw_eps(shape: tuple[int, ...], generator: Generators, device: torch.device) -> Tensor:
    """eps for the frontier: from one generator, or one generator per root (each root's nodes are a contiguous
    block of the frontier, so a tree's noise does not depend on which other trees share the batch or rank)."""
    if generator is None or isinstance(generator, torch.Generator):
        return standard_normal(shape, generator, device)
    per_root = shape[0] // len(generator)
    # each block on its generator's device, then one copy: a copy per root costs a GPU ~R synchronising transfers
    blocks = [standard_normal((per_root, *shape[1:]), g, g.device) for g in generator]
    return torch.cat(blocks).to(device)  # shape


def _branch(
    latents: Tensor, velocity: Tensor, prompt: Tensor, sigmas: Tensor, step: int, branching: int,
    noise_level: float, generator: Generators,
) -> _Level:
    """k children per frontier node from its one step Gaussian (one mean, k independent eps)."""
    mean, std = sde_moments(latents, velocity, sigmas, step, noise_level)  # (n, C, H, W), (n, 1, 1, 1)
    n = mean.shape[0]
    if noise_level == 0:
        children = mean.unsqueeze(1).expand(n, branching, *mean.shape[1:]).clone()  # (n, k, C, H, W)
    else:
        eps = _draw_eps((n, branching, *mean.shape[1:]), generator, mean.device)  # (n, k, C, H, W)
        children = mean.unsqueeze(1) + std.unsqueeze(1) * eps  # (n, k, C, H, W)
    steps = torch.full((n,), step, dtype=torch.long, device=latents.device)  # (n,)
    return _Level(latents, steps, prompt, children, child_log_probs(mean, std, children))


def _assemble(
    levels: list[_Level], leaves: Tensor, leaf_prompt: Tensor, nfe: int, window_start: int, branching: int
) -> TreeSamples:
    """Stack the window levels into parent rows and link each edge to its child's row (module docstring)."""
    sizes = [level.latents.shape[0] for level in levels]
    first_row = [sum(sizes[:i]) for i in range(len(sizes))] + [0]  # the last level's children are leaf rows 0..L-1
    child_index = [
        first_row[i + 1] + torch.arange(n * branching, device=leaves.device).view(n, branching)  # (n, k)
        for i, n in enumerate(sizes)
    ]
    parent_step = torch.cat([level.step for level in levels])  # (P,)
    depth = len(levels)
    return TreeSamples(
        parent_latents=torch.cat([level.latents for level in levels]),  # (P, C, H, W)
        parent_step=parent_step,
        parent_prompt=torch.cat([level.prompt for level in levels]),  # (P,)
        parent_level=parent_step - window_start,  # (P,)
        child_latents=torch.cat([level.children for level in levels]),  # (P, k, C, H, W)
        child_log_prob=torch.cat([level.log_prob for level in levels]),  # (P, k)
        child_index=torch.cat(child_index),  # (P, k)
        leaf_latents=leaves,  # (L, C, H, W)
        leaf_prompt=leaf_prompt,  # (L,)
        leaf_tree=torch.arange(leaves.shape[0], device=leaves.device) // branching**depth,  # (L,)
        nfe=nfe,
        window_start=window_start,
        depth=depth,
        branching=branching,
    )


@torch.no_grad()
def sample_trees(
    velocity_fn: VelocityFn,
    root_latents: Tensor,
    root_prompt: Tensor,
    sigmas: Tensor,
    window_start: int,
    depth: int,
    branching: int,
    noise_level: float,
    generator: Generators,
    max_batch: int,
) -> TreeSamples:
    """Grow R trees together, the whole frontier batched through `velocity_fn` at every step (no gradients).

    Args:
        velocity_fn: the velocity protocol (module docstring).
        root_latents: (R, C, H, W) root noise, e.g. from `root_latents`.
        root_prompt: (R,) long, each root's prompt index (passed through to velocity_fn).
        sigmas: (N + 1,) the scheduler's sigmas, last 0.
        window_start: s, with s + d <= N - 1.
        depth: d >= 1.
        branching: k >= 1.
        noise_level: a, the SDE noise level inside the window (0: all k children coincide).
        generator: source of the children's eps: one generator (drawn once per window step, in node order), or a
            sequence of R generators, one per root, so a tree's samples do not depend on the rest of the batch.
        max_batch: at most this many nodes per velocity_fn call.

    Returns:
        TreeSamples (ordering in the module docstring).
    """
    num_steps = sigmas.numel() - 1
    check_tree_shape(num_steps, branching, depth, window_start)
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch}: must be >= 1 (frontier nodes per velocity_fn call)")
    if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != len(root_latents):
        raise ValueError(f"{len(generator)} generators for {len(root_latents)} roots: give one per root, or one")
    latents = root_latents.to(torch.float32, copy=True)  # (n, C, H, W) the frontier, n = R before the window
    prompt = root_prompt.to(device=latents.device, dtype=torch.long)  # (n,)
    levels: list[_Level] = []
    nfe = 0
    for step in range(num_steps):
        velocity = _frontier_velocity(velocity_fn, latents, step, prompt, max_batch)  # (n, C, H, W)
        nfe += latents.shape[0]
        if window_start <= step < window_start + depth:
            levels.append(_branch(latents, velocity, prompt, sigmas, step, branching, noise_level, generator))
            latents = levels[-1].children.flatten(0, 1)  # (n*k, C, H, W) parent-major
            prompt = prompt.repeat_interleave(branching)  # (n*k,)
        else:
            latents = ode_step(latents, velocity, sigmas, step)  # (n, C, H, W)
    return _assemble(levels, latents, prompt, nfe, window_start, branching)


def edge_advantages(
    samples: TreeSamples, leaf_advantages: Tensor, mode: str = "softmax", temperature: float = 1.0
) -> Tensor:
    """Advantages of every parent's k child edges, backed up bottom-up (SPEC §5).

    An edge into a last-level child carries its single leaf's advantage (the ODE suffix does not branch); an edge
    into an internal node u carries `backup` over u's own child edges, weighted by their log-probs.

    Args:
        samples: the trees (only `child_index`, `child_log_prob`, `parent_level` and `depth` are read).
        leaf_advantages: (L,) per-leaf advantages, in `leaf_latents` order.
        mode: "softmax" (paper) or "mean" (the authors' code).
        temperature: the softmax temperature.

    Returns:
        (P, k) float32 edge advantages, aligned with `child_latents`.
    """
    if leaf_advantages.shape != (samples.num_leaves,):
        raise ValueError(
            f"leaf_advantages {tuple(leaf_advantages.shape)}: expected ({samples.num_leaves},), one per leaf"
        )
    leaf_adv = leaf_advantages.to(samples.child_index.device).float()  # (L,)
    adv = torch.zeros(samples.child_index.shape, dtype=torch.float32, device=leaf_adv.device)  # (P, k)
    last = samples.parent_level == samples.depth - 1  # (P,) bool
    adv[last] = leaf_adv[samples.child_index[last]]  # (P_last, k)
    for level in reversed(range(samples.depth - 1)):
        rows = samples.parent_level == level  # (P,) bool
        children = samples.child_index[rows]  # (P_l, k) rows of the child nodes, one level down
        adv[rows] = backup(adv[children], samples.child_log_prob[children], mode, temperature)  # (P_l, k)
    return adv
