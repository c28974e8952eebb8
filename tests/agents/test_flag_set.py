"""Tests of the flag set: exact block counts against NumPy, rank selection, uniform stratified draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.flag_set import (
    flag_set_count,
    flag_set_get,
    flag_set_init,
    flag_set_sample,
    flag_set_select,
    flag_set_update,
)

CAPACITY = 100  # blocks of 16: the last block has 12 slots past capacity that must stay unset

update = jax.jit(flag_set_update)
select = jax.jit(flag_set_select)
sample = jax.jit(flag_set_sample, static_argnums=2)


def _random_updates(seed: int, steps: int, capacity: int = CAPACITY):
    """Writes of a few slots at a time, slots repeated only with one flag, and the NumPy flags after each."""
    rng = np.random.default_rng(seed)
    flags = np.zeros(capacity, bool)
    for _ in range(steps):
        slots = rng.integers(0, capacity, size=6)
        values = rng.random(capacity) < 0.6  # one flag per slot, so repeats agree
        flags[slots] = values[slots]
        yield slots, values[slots], flags.copy()


def _assert_matches(flag_set, flags: np.ndarray) -> None:
    capacity = flags.shape[0]
    stored = np.asarray(flag_set.flags)
    np.testing.assert_array_equal(stored[:capacity], flags)
    assert not stored[capacity:].any()
    padded = np.zeros(stored.shape[0], bool)
    padded[:capacity] = flags
    expected_counts = padded.reshape(flag_set.num_blocks, flag_set.block_size).sum(axis=1)
    np.testing.assert_array_equal(flag_set.block_counts, expected_counts)
    assert int(flag_set_count(flag_set)) == flags.sum()


@pytest.mark.parametrize(
    "capacity, block_size, num_blocks",
    [(1, 1, 1), (2, 2, 1), (100, 16, 7), (10_000, 128, 79), (1_000_000, 1024, 977)],
)
def test_blocks_are_about_the_square_root_of_the_capacity(capacity, block_size, num_blocks):
    flag_set = jax.eval_shape(lambda: flag_set_init(capacity))
    assert (flag_set.block_size, flag_set.num_blocks) == (block_size, num_blocks)
    assert flag_set.flags.dtype == jnp.bool_ and flag_set.block_counts.dtype == jnp.int32


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_init_rejects_bad_capacity(bad):
    with pytest.raises(ValueError, match="capacity"):
        flag_set_init(bad)


def test_update_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one flag per slot"):
        flag_set_update(flag_set_init(8), jnp.array([1, 2]), jnp.array([True]))


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_equal_numpy_after_every_update(seed):
    flag_set = flag_set_init(CAPACITY)
    for slots, values, flags in _random_updates(seed, steps=40):
        flag_set = update(flag_set, slots, values)
        _assert_matches(flag_set, flags)
        np.testing.assert_array_equal(flag_set_get(flag_set, slots), flags[slots])


def test_select_returns_the_kth_set_slot_in_slot_order():
    flag_set = flag_set_init(CAPACITY)
    for slots, values, flags in _random_updates(2, steps=30):
        flag_set = update(flag_set, slots, values)
        set_slots = np.flatnonzero(flags)
        if set_slots.size:
            ranks = np.arange(set_slots.size, dtype=np.int32)
            np.testing.assert_array_equal(select(flag_set, ranks), set_slots)


def test_select_finds_slots_in_empty_blocks_neighbours_and_the_last_block():
    flag_set = update(flag_set_init(CAPACITY), jnp.array([0, 15, 16, 99]), jnp.ones(4, bool))
    np.testing.assert_array_equal(select(flag_set, jnp.arange(4)), [0, 15, 16, 99])
    single = update(flag_set_init(CAPACITY), jnp.array([57]), jnp.array([True]))
    np.testing.assert_array_equal(select(single, jnp.zeros((2, 3), jnp.int32)), np.full((2, 3), 57))


def test_draws_are_set_slots_with_uniform_frequencies():
    flags = np.zeros(CAPACITY, bool)
    flags[np.random.default_rng(3).choice(CAPACITY, size=37, replace=False)] = True
    flag_set = update(flag_set_init(CAPACITY), np.arange(CAPACITY), flags)
    draws = np.concatenate(
        [np.asarray(sample(flag_set, jax.random.key(k), 32)) for k in range(400)]
    )
    assert flags[draws].all()
    counts = np.bincount(draws, minlength=CAPACITY)[flags]
    expected = draws.size / flags.sum()
    # Stratified draws vary less than independent ones; a chi-square bound for independent draws
    # (36 degrees of freedom, p < 1e-6 of exceeding 90) is loose enough never to fail by chance.
    assert np.sum((counts - expected) ** 2 / expected) < 90


def test_stratified_draws_cover_every_stratum_once():
    flag_set = update(flag_set_init(CAPACITY), np.arange(64), np.ones(64, bool))
    draws = np.asarray(sample(flag_set, jax.random.key(0), 64))
    np.testing.assert_array_equal(np.sort(draws), np.arange(64))  # one rank per stratum of one


def test_sampling_is_the_same_vmapped_over_seeds():
    flag_sets = jax.vmap(lambda s: update(flag_set_init(CAPACITY), s, jnp.ones(5, bool)))(
        jnp.array([[1, 2, 3, 4, 5], [50, 60, 70, 80, 90]])
    )
    keys = jax.random.split(jax.random.key(1), 2)
    batched = jax.vmap(flag_set_sample, in_axes=(0, 0, None))(flag_sets, keys, 8)
    for seed in range(2):
        one = jax.tree.map(lambda x: x[seed], flag_sets)
        np.testing.assert_array_equal(batched[seed], flag_set_sample(one, keys[seed], 8))
