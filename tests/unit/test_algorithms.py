"""What distinguishes each recipe (SPEC §7): which steps are SDE, how many children, which steps are trained, how
advantages are normalised."""

import dataclasses

import pytest

from tests.conftest import REPO
from treegrpo.config import load_params
from treegrpo.core.window import WindowSchedule
from treegrpo.training.algorithms import iteration_shape


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def _with(params, algorithm, **baselines):
    return dataclasses.replace(params, train=dataclasses.replace(params.train, algorithm=algorithm),
                               baselines=dataclasses.replace(params.baselines, **baselines))


def _schedule(params):
    s = params.sampler
    return WindowSchedule(s.window.strategy, s.num_inference_steps, s.depth, s.window.alpha, seed=params.train.seed)


def test_treegrpo_branches_k_in_a_d_window(params):
    shape = iteration_shape(params, 0, _schedule(params), None).shape
    assert (shape.branching, shape.depth, shape.trees_per_prompt) == (2, 2, 1)
    assert 0 <= shape.window_start <= 10 - 1 - 2 and shape.trained_levels == (0, 1)
    assert shape.normalization == "prompt" and not shape.shared_noise


def test_grpo_is_sde_on_every_step_but_the_last_and_trains_a_fraction(params):
    p = _with(params, "grpo", timestep_fraction=0.6, shared_noise=True)
    shape = iteration_shape(p, 3, _schedule(p), None).shape
    assert (shape.window_start, shape.depth, shape.branching, shape.trees_per_prompt) == (0, 9, 1, 4)
    assert len(shape.trained_levels) == 6 and set(shape.trained_levels) <= set(range(9))  # ceil(0.6 * 9)
    assert shape.shared_noise and shape.normalization == "prompt"
    draws = {iteration_shape(p, it, _schedule(p), None).shape.trained_levels for it in range(6)}
    assert len(draws) > 1  # a new draw each iteration
    again = iteration_shape(p, 3, _schedule(p), None).shape
    assert again.trained_levels == shape.trained_levels  # ... the same on every rank and after a resume


def test_mixgrpo_slides_its_window_and_trains_all_of_it(params):
    p = _with(params, "mixgrpo", mix_window=4, mix_stride=1, mix_every=2)
    starts = [iteration_shape(p, it, _schedule(p), None).shape.window_start for it in range(14)]
    # 9 SDE-able steps, a 4-step window: starts 0..5, each held for 2 iterations, then wrapping
    assert starts == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 0, 0]
    shape = iteration_shape(p, 0, _schedule(p), None).shape
    assert (shape.depth, shape.branching, shape.trained_levels) == (4, 1, (0, 1, 2, 3))


def test_ddpo_never_shares_noise_and_normalises_over_the_batch(params):
    p = _with(params, "ddpo", shared_noise=True, ddpo_normalization="batch")
    shape = iteration_shape(p, 0, _schedule(p), None).shape
    assert not shape.shared_noise and shape.normalization == "batch" and shape.depth == 9
