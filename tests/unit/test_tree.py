"""The batched tree sampler, its NFE accounting and the bottom-up edge advantages (SPEC §4, §5)."""

from __future__ import annotations

import math

import pytest
import torch

from treegrpo.core.sde import child_log_probs, sde_moments
from treegrpo.core.tree import (
    TreeSamples,
    edge_advantages,
    eff_group,
    eff_steps,
    root_latents,
    sample_trees,
    tree_nfe,
)

SIGMAS = torch.tensor([1.0, 0.960, 0.913, 0.858, 0.790, 0.707, 0.602, 0.465, 0.278, 0.0089, 0.0])  # SPEC §1


def routed_velocity(x, step, prompt):
    """A velocity that depends on the node, the step and the prompt, so a mix-up shows."""
    return -x + 0.1 * prompt.view(-1, 1, 1, 1) + 0.01 * step.view(-1, 1, 1, 1)


class CountingVelocity:
    def __init__(self):
        self.batch_sizes: list[int] = []
        self.steps: list[list[int]] = []

    def __call__(self, x, step, prompt):
        self.batch_sizes.append(x.shape[0])
        self.steps.append(step.tolist())
        return routed_velocity(x, step, prompt)


def grow(k=3, d=3, s=0, roots=2, noise_level=0.7, seed=0, max_batch=64, velocity=routed_velocity):
    latents = torch.randn(roots, 2, 4, 4, generator=torch.Generator().manual_seed(100))
    prompts = torch.arange(roots) // 2  # two trees per prompt
    return sample_trees(
        velocity, latents, prompts, SIGMAS, s, d, k, noise_level, torch.Generator().manual_seed(seed), max_batch
    )


def test_tree_nfe_by_hand():
    assert tree_nfe(10, 3, 3, 0) == 202  # SPEC §4: 1 + 3 + 9 + 27 * 7
    assert tree_nfe(10, 2, 3, 1) == 1 + 7 + 8 * 6
    assert tree_nfe(10, 1, 9, 0) == 10  # k = 1: a single SDE trajectory
    with pytest.raises(ValueError, match="window_start=7, depth=3"):
        tree_nfe(10, 3, 3, 7)


@pytest.mark.parametrize(
    ("k", "d", "trees", "group", "steps"),
    [(3, 3, 1, 27, 13), (3, 3, 2, 54, 26), (2, 3, 1, 8, 7), (2, 4, 1, 16, 15), (4, 3, 1, 64, 21)],
)
def test_eff_group_and_steps_match_paper_table_3(k, d, trees, group, steps):
    assert eff_group(k, d, trees) == group
    assert eff_steps(k, d, trees) == steps


@pytest.mark.parametrize(
    ("k", "d", "s", "roots", "max_batch"),
    [(3, 3, 0, 2, 64), (3, 3, 2, 2, 4), (2, 4, 1, 3, 5), (4, 1, 8, 1, 3), (2, 2, 5, 4, 1), (1, 9, 0, 3, 2)],
)
def test_counted_nfe_equals_formula(k, d, s, roots, max_batch):
    counter = CountingVelocity()
    samples = grow(k, d, s, roots, max_batch=max_batch, velocity=counter)
    assert sum(counter.batch_sizes) == samples.nfe == roots * tree_nfe(10, k, d, s)
    assert max(counter.batch_sizes) <= max_batch
    # One batched call per step (chunked): the frontier holds roots * k^(levels branched so far) nodes.
    frontier = [roots * k ** min(max(i - s, 0), d) for i in range(10)]
    assert len(counter.batch_sizes) == sum(math.ceil(n / max_batch) for n in frontier)
    seen_steps = [t for call in counter.steps for t in call]
    assert seen_steps == [i for i in range(10) for _ in range(frontier[i])]


def test_shapes_and_ordering():
    k, d, s, roots = 3, 3, 2, 4
    samples = grow(k, d, s, roots)
    parents, leaves = roots * 13, roots * 27
    assert samples.parent_latents.shape == (parents, 2, 4, 4)
    assert samples.child_latents.shape == (parents, k, 2, 4, 4)
    assert samples.child_log_prob.shape == samples.child_index.shape == (parents, k)
    assert samples.leaf_latents.shape == (leaves, 2, 4, 4)
    assert samples.parent_step.tolist() == [2] * 4 + [3] * 12 + [4] * 36
    assert samples.parent_level.tolist() == [0] * 4 + [1] * 12 + [2] * 36
    assert torch.equal(samples.leaf_tree, torch.arange(leaves) // 27)
    assert torch.equal(samples.leaf_prompt, torch.arange(leaves) // 54)  # trees 0, 1 -> prompt 0; 2, 3 -> prompt 1
    assert torch.equal(samples.parent_prompt[:4], torch.tensor([0, 0, 1, 1]))
    assert torch.equal(samples.parent_prompt[4:16], torch.tensor([0, 0, 1, 1]).repeat_interleave(3))
    assert samples.child_log_prob.dtype == torch.float32 and torch.isfinite(samples.child_log_prob).all()


def test_links_point_at_the_right_nodes():
    samples = grow(k=2, d=3, s=1, roots=2)
    internal = samples.parent_level < 2
    # An internal edge's child is the parent stored at child_index: same latent, one step later, same prompt.
    rows = samples.child_index[internal]  # (6, 2)
    assert torch.equal(samples.child_latents[internal], samples.parent_latents[rows])
    assert torch.equal(samples.parent_step[rows], samples.parent_step[internal].unsqueeze(1).expand(-1, 2) + 1)
    assert torch.equal(samples.parent_prompt[rows], samples.parent_prompt[internal].unsqueeze(1).expand(-1, 2))
    # Last-level edges point at leaves: the leaf is the child's ODE suffix (steps 4..9) with the same velocity.
    last = ~internal
    x = samples.child_latents[last].flatten(0, 1)  # (16, 2, 4, 4)
    prompt = samples.parent_prompt[last].repeat_interleave(2)
    for i in range(4, 10):
        x = x + (SIGMAS[i + 1] - SIGMAS[i]) * routed_velocity(x, torch.full((16,), i), prompt)
    leaf_rows = samples.child_index[last].flatten()
    assert sorted(leaf_rows.tolist()) == list(range(16))
    torch.testing.assert_close(samples.leaf_latents[leaf_rows], x, rtol=0, atol=1e-6)


def test_same_seed_same_samples_and_chunking_does_not_matter():
    a, b = grow(seed=5), grow(seed=5, max_batch=3)
    for name in ("parent_latents", "child_latents", "child_log_prob", "leaf_latents"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = grow(seed=6)
    assert not torch.equal(a.child_latents, c.child_latents)


def test_noise_level_zero_children_coincide_and_leaves_are_the_ode():
    samples = grow(k=3, d=2, s=3, roots=2, noise_level=0.0)
    assert torch.equal(samples.child_latents, samples.child_latents[:, :1].expand_as(samples.child_latents))
    # Every leaf of tree r is the plain Euler path from root r.
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(100))
    prompt = torch.tensor([0, 0])
    for i in range(10):
        x = x + (SIGMAS[i + 1] - SIGMAS[i]) * routed_velocity(x, torch.full((2,), i), prompt)
    torch.testing.assert_close(samples.leaf_latents, x.repeat_interleave(9, dim=0), rtol=0, atol=1e-6)


def test_replaying_parents_reproduces_old_log_probs():
    # The training forward at the stored parents (any micro-batch, mixed steps) gives ratio exactly 1.
    samples = grow(k=3, d=3, s=1, roots=2)
    order = torch.randperm(samples.num_parents, generator=torch.Generator().manual_seed(0))
    for rows in order.split(7):
        x, step, prompt = samples.parent_latents[rows], samples.parent_step[rows], samples.parent_prompt[rows]
        mean, std = sde_moments(x, routed_velocity(x, step, prompt), SIGMAS, step, 0.7)
        logp = child_log_probs(mean, std, samples.child_latents[rows])
        assert torch.equal(logp, samples.child_log_prob[rows])


def hand_tree(child_log_prob: torch.Tensor) -> TreeSamples:
    """k = 2, d = 2, one tree: root (row 0) -> u1 (row 1), u2 (row 2); u1 -> leaves 0, 1; u2 -> leaves 2, 3."""
    z = torch.zeros
    return TreeSamples(
        parent_latents=z(3, 1, 1, 1), parent_step=torch.tensor([0, 1, 1]), parent_prompt=z(3, dtype=torch.long),
        parent_level=torch.tensor([0, 1, 1]), child_latents=z(3, 2, 1, 1, 1), child_log_prob=child_log_prob,
        child_index=torch.tensor([[1, 2], [0, 1], [2, 3]]), leaf_latents=z(4, 1, 1, 1),
        leaf_prompt=z(4, dtype=torch.long), leaf_tree=z(4, dtype=torch.long), nfe=0, window_start=0, depth=2,
        branching=2,
    )


def test_edge_advantages_on_hand_built_tree():
    # Leaves A = (1, -1, 2, 0). u1's edges: log-probs (0, ln 3) -> softmax (1/4, 3/4) -> A(root -> u1) = -0.5;
    # u2's edges: (ln 2, ln 2) -> uniform -> A(root -> u2) = 1. Mean backup: 0 and 1. Root log-probs play no part.
    logp = torch.tensor([[5.0, -5.0], [0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]])
    samples = hand_tree(logp)
    leaf_adv = torch.tensor([1.0, -1.0, 2.0, 0.0])
    softmax = edge_advantages(samples, leaf_adv, "softmax")
    torch.testing.assert_close(softmax, torch.tensor([[-0.5, 1.0], [1.0, -1.0], [2.0, 0.0]]))
    mean = edge_advantages(samples, leaf_adv, "mean")
    torch.testing.assert_close(mean, torch.tensor([[0.0, 1.0], [1.0, -1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        edge_advantages(samples, torch.zeros(5))


def test_mean_backup_is_the_subtree_leaf_mean():
    # With uniform weights, an edge into a node at level l carries the mean of the k^(d-l-1) leaves below it.
    k, d = 3, 3
    samples = grow(k=k, d=d, s=0, roots=2)
    leaf_adv = torch.randn(samples.num_leaves, generator=torch.Generator().manual_seed(1))
    adv = edge_advantages(samples, leaf_adv, "mean")
    # Root edges (rows 0, 1): child c of root r covers leaves (r*k + c)*9 .. +9.
    torch.testing.assert_close(adv[:2], leaf_adv.view(2, 3, 9).mean(-1), rtol=0, atol=1e-6)
    # Level-1 edges (rows 2..7): 3 leaves each, in order.
    torch.testing.assert_close(adv[2:8], leaf_adv.view(6, 3, 3).mean(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(adv[8:], leaf_adv.view(18, 3), rtol=0, atol=0)


def test_root_latents_are_keyed_by_prompt_and_tree():
    latents, root_prompt = root_latents([5, 7], 2, (2, 4, 4), seed=1, iteration=3)
    assert latents.shape == (4, 2, 4, 4) and root_prompt.tolist() == [0, 0, 1, 1]
    alone, _ = root_latents([7], 2, (2, 4, 4), seed=1, iteration=3)
    assert torch.equal(latents[2:], alone)  # prompt 7's noise does not depend on its batch
    assert not torch.equal(latents[0], latents[1])
    assert not torch.equal(latents, root_latents([5, 7], 2, (2, 4, 4), seed=1, iteration=4)[0])


def test_per_root_generators_make_a_tree_independent_of_its_batch():
    # two trees sampled together equal each tree sampled alone with the same per-root generator (what lets a
    # 2-rank run draw the same noise as a 1-rank run)
    sigmas = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.3, 0.0])
    roots = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    prompt = torch.tensor([0, 1])
    velocity = lambda x, t, p: -x + p.view(-1, 1, 1, 1).float()  # noqa: E731

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = sample_trees(velocity, roots, prompt, sigmas, 1, 2, 3, 0.7, gens(10, 11), max_batch=5)
    first = sample_trees(velocity, roots[:1], prompt[:1], sigmas, 1, 2, 3, 0.7, gens(10), max_batch=5)
    second = sample_trees(velocity, roots[1:], prompt[1:], sigmas, 1, 2, 3, 0.7, gens(11), max_batch=5)
    torch.testing.assert_close(both.leaf_latents, torch.cat([first.leaf_latents, second.leaf_latents]), rtol=0, atol=0)
    assert not torch.equal(first.leaf_latents, second.leaf_latents)  # the two trees did draw different noise
    with pytest.raises(ValueError, match="3 generators for 2 roots"):
        sample_trees(velocity, roots, prompt, sigmas, 1, 2, 3, 0.7, gens(1, 2, 3), max_batch=5)


def test_per_root_noise_reaches_the_device_in_one_copy(monkeypatch):
    # R per-root generators draw on the CPU; the frontier's eps must then move to the sampling device in one copy,
    # not R (on a GPU each small copy synchronises, R times per SDE step). The copies to "meta" are counted; the
    # values are each generator's own draws, in root order.
    from treegrpo.core import tree

    copies = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if out.device.type == "meta" and self.device.type != "meta":
            copies.append(tuple(self.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    gens = [torch.Generator().manual_seed(s) for s in range(16)]
    eps = tree._draw_eps((32, 3, 2, 4, 4), gens, torch.device("meta"))  # 16 roots, 2 nodes each, k = 3
    assert eps.device.type == "meta" and eps.shape == (32, 3, 2, 4, 4)
    assert copies == [(32, 3, 2, 4, 4)]
    monkeypatch.undo()
    gens = [torch.Generator().manual_seed(s) for s in range(16)]
    on_cpu = tree._draw_eps((32, 3, 2, 4, 4), gens, torch.device("cpu"))
    expected = torch.cat([torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(s)) for s in range(16)])
    torch.testing.assert_close(on_cpu, expected, rtol=0, atol=0)
