"""How a continual step picks its examples: uniform draws and shuffled passes (integer hashes,
so every figure below is exact and the same on every machine)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import minibatches

KEY = jax.random.PRNGKey(0)


def walk(key, task, num_examples, batch_size, steps):
    """The indices of ``steps`` consecutive batches of one task's shuffled walk."""
    draw = jax.jit(
        lambda position: minibatches.shuffled_indices(key, task, position, batch_size, num_examples)
    )
    return np.concatenate([np.asarray(draw(step * batch_size)) for step in range(steps)])


@pytest.mark.parametrize("num_examples", [1, 2, 3, 10, 1797, 60_000])
def test_every_pass_is_a_permutation_of_the_examples(num_examples):
    order = walk(KEY, 0, num_examples, num_examples, 2)
    for one_pass in order.reshape(2, num_examples):
        np.testing.assert_array_equal(np.sort(one_pass), np.arange(num_examples))


def test_batches_that_straddle_two_passes_keep_each_pass_whole():
    order = walk(KEY, 3, 50, 7, 50)  # 350 draws: 7 passes, most batches across a boundary
    for one_pass in order.reshape(7, 50):
        np.testing.assert_array_equal(np.sort(one_pass), np.arange(50))


def test_passes_tasks_and_keys_each_have_an_order_of_their_own():
    first = walk(KEY, 0, 1797, 1797, 2)
    others = [
        first[1797:],
        walk(KEY, 1, 1797, 1797, 1),
        walk(jax.random.PRNGKey(1), 0, 1797, 1797, 1),
    ]
    for other in others:
        assert (first[:1797] != other).mean() > 0.99
    np.testing.assert_array_equal(first, walk(KEY, 0, 1797, 1797, 2))  # a pure function


@pytest.mark.parametrize("num_examples", [3, 10, 100])
def test_where_an_example_lands_is_uniform(num_examples):
    """Over 4,000 tasks, each of the first positions holds each example about equally often
    (χ² per degree of freedom near 1; a skewed order, e.g. too few Feistel rounds, gives 2–5)."""
    orders = jax.jit(
        jax.vmap(
            lambda task: minibatches.shuffled_indices(KEY, task, 0, num_examples, num_examples)
        )
    )(jnp.arange(4000))
    positions = min(num_examples, 10)
    counts = np.stack(
        [np.bincount(np.asarray(orders[:, p]), minlength=num_examples) for p in range(positions)]
    )
    expected = 4000 / num_examples
    chi2_per_dof = ((counts - expected) ** 2 / expected).sum() / (positions * (num_examples - 1))
    assert 0.6 < chi2_per_dof < 1.5, chi2_per_dof


def test_uniform_draws_are_unchanged():
    """The uniform sampler kept its values when it moved here (runs resume across the move)."""
    np.testing.assert_array_equal(
        minibatches.sample_indices(KEY, 7, 8, 1000), [722, 920, 420, 671, 274, 642, 652, 509]
    )
