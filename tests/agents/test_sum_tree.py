"""Tests of the float32 sum tree: exact parent sums, no drift, sampling frequencies, zero leaves;
and of its count-tree update (0/1 leaves), which must give the very same tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.sum_tree import (
    EXACT_COUNT_LEAVES,
    count_tree_set,
    keep_last_duplicate,
    stratified_targets,
    sum_tree_descend,
    sum_tree_find,
    sum_tree_from_leaves,
    sum_tree_get,
    sum_tree_init,
    sum_tree_leaves,
    sum_tree_sample,
    sum_tree_set,
    sum_tree_total,
)

CAPACITY = 100  # not a power of two: 28 padding leaves must stay zero

set_leaves = jax.jit(sum_tree_set)
sample = jax.jit(sum_tree_sample, static_argnums=2)


def _assert_parents_are_exact_sums(nodes: np.ndarray) -> None:
    num_internal = nodes.shape[0] // 2
    parents = nodes[1:num_internal]
    children_sums = nodes[2 : 2 * num_internal : 2] + nodes[3 : 2 * num_internal : 2]
    np.testing.assert_array_equal(
        parents, children_sums
    )  # float32 + float32 in NumPy: same rounding


def test_init_is_all_zero_with_power_of_two_leaves():
    tree = sum_tree_init(CAPACITY)
    assert tree.nodes.shape == (256,) and tree.nodes.dtype == jnp.float32
    assert tree.first_leaf == 128 and tree.num_levels == 7
    assert float(sum_tree_total(tree)) == 0.0
    assert sum_tree_init(1).nodes.shape == (2,)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_init_rejects_bad_capacity(bad):
    with pytest.raises(ValueError, match="capacity"):
        sum_tree_init(bad)


def test_keep_last_duplicate_marks_last_occurrences():
    mask = keep_last_duplicate(jnp.array([3, 1, 3, 2, 1, 3]))
    np.testing.assert_array_equal(mask, [False, False, False, True, True, True])


def test_set_with_duplicates_last_write_wins_and_ignores_out_of_range():
    tree = set_leaves(
        sum_tree_init(8), jnp.array([2, 5, 2, 9, -1]), jnp.array([1.0, 2.0, 7.0, 100.0, 50.0])
    )
    np.testing.assert_array_equal(sum_tree_leaves(tree), [0, 0, 7, 0, 0, 2, 0, 0])
    assert float(sum_tree_total(tree)) == 9.0
    np.testing.assert_array_equal(sum_tree_get(tree, jnp.array([5, 2])), [2.0, 7.0])


def test_set_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="as many values"):
        sum_tree_set(sum_tree_init(8), jnp.array([1, 2]), jnp.array([1.0]))


@pytest.mark.parametrize("size", [1, 2, 7, 40, 1024, 1025, 3000])
def test_keep_last_duplicate_matches_numpy_by_pairs_and_by_sorting(size):
    """Up to 1,024 indices are compared pairwise, longer lists sorted: both must mark the same."""
    indices = np.random.default_rng(size).integers(0, max(2, size // 3), size=size)
    expected = [value not in indices[i + 1 :] for i, value in enumerate(indices)]
    np.testing.assert_array_equal(keep_last_duplicate(jnp.asarray(indices)), expected)


@pytest.mark.parametrize("capacity", [1, 2, 100, 10_000])
def test_count_tree_updates_equal_sum_tree_updates_bit_for_bit(capacity):
    """Random 0/1 writes, repeated slots (last wins) and out-of-range slots: after every write the
    count tree's nodes equal those of `sum_tree_set` and of a tree built from the NumPy leaves."""
    rng = np.random.default_rng(capacity)
    count_set, full_set = jax.jit(count_tree_set), jax.jit(sum_tree_set)
    counted = recomputed = sum_tree_init(capacity)
    leaves = np.zeros(capacity, np.float32)
    for _ in range(30):
        indices = rng.integers(-2, capacity + 2, size=12).astype(np.int32)
        indices[1] = indices[0]
        flags = rng.random(12) < 0.7
        counted = count_set(counted, indices, flags)
        recomputed = full_set(recomputed, indices, flags.astype(np.float32))
        for index, flag in zip(indices, flags):
            if 0 <= index < capacity:
                leaves[index] = flag
        np.testing.assert_array_equal(counted.nodes, recomputed.nodes)
        np.testing.assert_array_equal(counted.nodes, sum_tree_from_leaves(leaves).nodes)
        assert float(sum_tree_total(counted)) == leaves.sum()


def test_count_tree_rejects_mismatched_shapes_and_uncountable_sizes():
    with pytest.raises(ValueError, match="as many flags"):
        count_tree_set(sum_tree_init(8), jnp.array([1, 2]), jnp.array([True]))
    huge = jax.eval_shape(lambda: sum_tree_init(1 << 24))
    with pytest.raises(ValueError, match="exactly in float32"):
        jax.eval_shape(count_tree_set, huge, jnp.array([1]), jnp.array([True]))


@pytest.fixture(scope="module")
def long_update_history():
    """3,000 batched updates of 16 indices (with duplicates) on magnitudes from 1e-4 to 1e4, and zeros."""
    num_updates, batch = 3000, 16
    rng = np.random.default_rng(0)
    indices = rng.integers(0, CAPACITY, size=(num_updates, batch)).astype(np.int32)
    indices[:, 1] = indices[:, 0]  # at least one duplicate in every batch
    values = np.exp(rng.uniform(-9.0, 9.0, size=(num_updates, batch))).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = 0.0

    def step(tree, update):
        return sum_tree_set(tree, *update), None

    tree, _ = jax.jit(lambda t, i, v: jax.lax.scan(step, t, (i, v)))(
        sum_tree_init(CAPACITY), indices, values
    )
    expected_leaves = np.zeros(CAPACITY, np.float32)
    for batch_indices, batch_values in zip(indices, values):
        for index, value in zip(
            batch_indices, batch_values
        ):  # sequential semantics: last write wins
            expected_leaves[index] = value
    return tree, expected_leaves


def test_no_drift_after_thousands_of_batched_updates(long_update_history):
    tree, expected_leaves = long_update_history
    nodes = np.asarray(tree.nodes)
    np.testing.assert_array_equal(np.asarray(sum_tree_leaves(tree)), expected_leaves)
    assert np.all(nodes[tree.first_leaf + CAPACITY :] == 0.0)
    _assert_parents_are_exact_sums(nodes)
    np.testing.assert_array_equal(nodes, np.asarray(sum_tree_from_leaves(expected_leaves).nodes))
    exact_total = np.sum(expected_leaves.astype(np.float64))
    rounding_bound = tree.num_levels * np.finfo(np.float32).eps * exact_total
    assert abs(float(sum_tree_total(tree)) - exact_total) <= rounding_bound


def test_from_leaves_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        sum_tree_from_leaves(jnp.zeros((2, 2)))


@pytest.fixture(scope="module")
def sparse_tree():
    rng = np.random.default_rng(1)
    leaves = rng.uniform(0.1, 5.0, size=CAPACITY).astype(np.float32)
    leaves[rng.random(CAPACITY) < 0.3] = 0.0
    leaves[-1] = 0.0  # the rightmost leaf is zero: rounding at the top end must not land on it
    return sum_tree_from_leaves(leaves), leaves


def test_sampling_frequencies_follow_leaves_and_skip_zero_leaves(sparse_tree):
    tree, leaves = sparse_tree
    num_batches, batch = 400, 256
    keys = jax.random.split(jax.random.key(0), num_batches)
    samples = jax.jit(jax.vmap(lambda k: sum_tree_sample(tree, k, batch)))(keys)
    counts = np.bincount(np.asarray(samples).ravel(), minlength=CAPACITY)
    assert counts[leaves == 0].sum() == 0
    positive = leaves > 0
    expected = leaves[positive] / leaves.sum() * num_batches * batch
    chi_square = np.sum((counts[positive] - expected) ** 2 / expected)
    dof = positive.sum() - 1
    assert chi_square < dof + 6 * np.sqrt(2 * dof), chi_square


def test_leaves_far_below_a_float32_target_s_precision_are_drawn_as_their_mass_says():
    """At a million leaves a float32 target in the last of 32 strata moves in steps of 1/16 of a
    unit leaf, so leaves of 0.03 there were drawn by no offset or by 16 (132 of 256 never). Every
    offset `jax.random.uniform` can draw in the stratum's part that holds them (k * 2^-23), with
    fresh branch draws below the heavy subtrees: each leaf is hit, 7.7 times on average, as its
    mass says. Fixed keys: the counts are the same on every run (2008 in all here).

    Leaves of 0.1 beside unit leaves (1.6 target steps each) must get fresh draws too: drawn by
    targets alone they are hit 15, 17 or 32 times by their place on the grid, the same for
    every key, a fixed bias per leaf of 0.59 to 1.25 times their mass with an unbiased mean. So
    their 256 counts are compared with Poisson(25.6) by a chi-square (255 degrees of freedom,
    6 sigma of its spread: 390); fresh draws give 253 here (246 to 267 over keys 0 to 3), the
    grid alone 610."""
    num_leaves, strata = 2**20, 32
    leaves = np.ones(num_leaves, np.float32)
    tiny = num_leaves - 1 - 3 * np.arange(256)  # the last 768 leaves, inside the last 2^-8th
    small = num_leaves - 1 - 3 * np.arange(256, 512)  # the 768 before them
    leaves[tiny] = 0.03
    leaves[small] = 0.1
    tree = sum_tree_from_leaves(leaves)
    enumerated = 2**20  # offsets [7/8, 1) of the last stratum: its last 4,096 leaves' targets

    @jax.jit
    def hits(key):
        offsets = (
            jnp.zeros((enumerated, strata), jnp.float32)
            .at[:, -1]
            .set((7 * 2**20 + jnp.arange(enumerated)).astype(jnp.float32) * 2.0**-23)
        )
        targets = stratified_targets(tree, offsets)[:, -1]
        bits = jax.random.bits(key, (tree.num_levels, enumerated), jnp.uint32)
        found = sum_tree_descend(tree, targets, bits)
        return jnp.zeros(num_leaves, jnp.int32).at[found].add(1)

    all_counts = np.asarray(hits(jax.random.key(0)))
    unit = 2**23 / (float(sum_tree_total(tree)) / strata)  # hits of a unit leaf: 256.1
    counts, expected = all_counts[tiny], unit * 0.03  # 7.68 a leaf
    assert counts.min() >= 1
    assert abs(counts.sum() / (expected * len(tiny)) - 1) < 0.1  # 4.5 sigma of a Poisson sum
    counts, expected = all_counts[small], unit * 0.1  # 25.6 a leaf
    chi_square = np.sum((counts - expected) ** 2 / expected)
    assert chi_square < 255 + 6 * np.sqrt(2 * 255), chi_square


def test_fresh_branch_draws_follow_the_leaves_where_they_span_decades():
    """Leaves spread over five decades: most lanes finish their descent by fresh draws, and the
    frequencies still follow the leaves (chi-square over leaves expected 5+ times, the rest
    pooled; 6 sigma of its spread)."""
    rng = np.random.default_rng(2)
    leaves = (10.0 ** rng.uniform(-3, 2, size=1024)).astype(np.float32)
    tree = sum_tree_from_leaves(leaves)
    num_batches, batch = 400, 256
    keys = jax.random.split(jax.random.key(1), num_batches)
    samples = jax.jit(jax.vmap(lambda k: sum_tree_sample(tree, k, batch)))(keys)
    counts = np.bincount(np.asarray(samples).ravel(), minlength=leaves.size)
    expected = leaves / leaves.sum() * num_batches * batch
    kept = expected >= 5
    observed = np.append(counts[kept], counts[~kept].sum())
    expected = np.append(expected[kept], expected[~kept].sum())
    chi_square = np.sum((observed - expected) ** 2 / expected)
    dof = observed.size - 1
    assert chi_square < dof + 6 * np.sqrt(2 * dof), chi_square


def test_find_maps_targets_to_prefix_intervals_and_never_to_zero_leaves():
    leaves = np.array([0.0, 1.0, 0.0, 2.0, 0.0, 0.0], np.float32)
    tree = sum_tree_from_leaves(leaves)
    total = float(sum_tree_total(tree))
    below = lambda x: np.nextafter(np.float32(x), np.float32(0.0))
    targets = np.array([0.0, 0.5, below(1.0), 1.0, 2.9, below(3.0), 3.0, 3.5, 1e9], np.float32)
    found = np.asarray(sum_tree_find(tree, targets))
    np.testing.assert_array_equal(found, [1, 1, 1, 3, 3, 3, 3, 3, 3])
    assert total == 3.0


def test_stratified_sample_hits_every_stratum():
    tree = sum_tree_from_leaves(jnp.ones(64))
    samples = np.asarray(sample(tree, jax.random.key(3), 64))
    np.testing.assert_array_equal(samples, np.arange(64))


def test_strata_hold_where_the_masses_can_be_told_apart():
    """A stratum's target places unit leaves exactly, so 2,048 of them sampled in 2,048 strata
    are each drawn once. In a count tree of 65,600 valid slots of 100,000, every child lighter
    than RESOLVED times the slack (65,600 * 2^-22 * 2^10, just over 16: the 16-slot subtrees
    and below) is drawn afresh, and the lanes still keep their strata, which are 2,050 slots
    wide (before the target was rescaled into a drawn child, 97% of lanes left their stratum)."""
    uniform = sum_tree_from_leaves(jnp.ones(2048))
    np.testing.assert_array_equal(sample(uniform, jax.random.key(3), 2048), np.arange(2048))
    leaves = np.zeros(100_000, np.float32)
    leaves[:65_600] = 1.0
    tree = sum_tree_from_leaves(leaves)
    keys = jax.random.split(jax.random.key(0), 200)
    drawn = np.asarray(jax.jit(jax.vmap(lambda k: sum_tree_sample(tree, k, 32, True)))(keys))
    outside = np.mean(drawn * 32 // 65_600 != np.arange(32))
    assert outside < 0.02, outside  # 0.5% here: lanes near a stratum's edge


def test_a_small_count_tree_is_placed_exactly_by_its_targets_alone():
    """Below EXACT_COUNT_LEAVES 0/1 leaves the total is under 2^14, so every offset
    `jax.random.uniform` can draw in the last of 32 strata (its last 64th enumerated: 8 leaves)
    places each unit leaf within 0.4% of its share; `counts=True` samples by the targets alone,
    as the descent without branch draws does."""
    capacity = EXACT_COUNT_LEAVES - 1
    tree = sum_tree_from_leaves(jnp.ones(capacity))
    offsets = (2**23 - 2**17 + np.arange(2**17)).astype(np.float32) * np.float32(2.0**-23)
    width = np.float32(capacity) / np.float32(32)
    found = np.asarray(sum_tree_find(tree, (np.float32(31) + offsets) * width))
    hits = np.bincount(found, minlength=capacity)[found.min() + 1 : found.max()]
    expected = 2**23 / float(width)  # offsets per unit leaf: 16,385
    assert len(hits) >= 6 and np.all(np.abs(hits / expected - 1) < 0.004), hits
    key = jax.random.key(5)
    targets = stratified_targets(tree, jax.random.uniform(key, (32,)))
    np.testing.assert_array_equal(
        sum_tree_sample(tree, key, 32, counts=True), sum_tree_descend(tree, targets)
    )


def test_vmap_over_trees_equals_separate_calls():
    trees = [sum_tree_from_leaves(jnp.arange(10.0) + s) for s in range(2)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *trees)
    indices = jnp.array([[1, 4, 1], [0, 9, 9]])
    values = jnp.array([[5.0, 6.0, 7.0], [0.0, 1.0, 2.0]])
    updated = jax.jit(jax.vmap(sum_tree_set))(stacked, indices, values)
    keys = jax.random.split(jax.random.key(0), 2)
    sampled = jax.jit(jax.vmap(lambda t, k: sum_tree_sample(t, k, 8)))(updated, keys)
    for s in range(2):
        single = set_leaves(trees[s], indices[s], values[s])
        np.testing.assert_array_equal(updated.nodes[s], single.nodes)
        np.testing.assert_array_equal(sampled[s], sample(single, keys[s], 8))


def test_an_index_equal_to_the_capacity_is_ignored_like_any_out_of_range_index():
    """Capacity 100 has 128 leaves: index 100 names a padding leaf, inside the node array, which
    must stay zero (a write there would enter the total, and a count tree sampled at it returns
    leaf 99, never set). Writes at 100, 127 and −1 beside one at 3 give the tree that the
    write at 3 alone gives, built from NumPy leaves, for both update functions; sampling the
    count tree returns leaf 3 only."""
    indices = jnp.array([3, 100, 127, -1], jnp.int32)
    expected = np.zeros(CAPACITY, np.float32)
    expected[3] = 2.0
    tree = set_leaves(sum_tree_init(CAPACITY), indices, jnp.array([2.0, 5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(tree.nodes, sum_tree_from_leaves(expected).nodes)
    expected[3] = 1.0
    counted = jax.jit(count_tree_set)(sum_tree_init(CAPACITY), indices, jnp.ones(4, bool))
    np.testing.assert_array_equal(counted.nodes, sum_tree_from_leaves(expected).nodes)
    np.testing.assert_array_equal(sample(counted, jax.random.key(4), 16), 3)


def test_a_drawn_branch_rescales_the_target_into_the_chosen_child():
    """Leaves [1e-4, 0, 1, 1]: the root's left child (1e-4) is below RESOLVED times the
    target's slack (2.0001 · 2^-22 · 2^10 ≈ 4.9e-4), so the root's branch is drawn; bits
    0xFFFFFFFF draw the heavier right child. The target is then rescaled by right / mass = 2 /
    2.0001 (not shifted by the left mass): 1.00003 · 2.0001 / 2 becomes 1.00003, leaf 3, and
    1.00003 becomes 0.99998, leaf 2. Shifted instead, both would land on leaf 2; unscaled, on
    leaf 3; a drawn left branch, on leaf 0."""
    tree = sum_tree_from_leaves(jnp.array([1e-4, 0.0, 1.0, 1.0]))
    targets = jnp.array([1.00003 * 2.0001 / 2, 1.00003], jnp.float32)
    bits = jnp.zeros((tree.num_levels, 2), jnp.uint32).at[0].set(0xFFFFFFFF)
    np.testing.assert_array_equal(sum_tree_descend(tree, targets, bits), [3, 2])
    np.testing.assert_array_equal(sum_tree_descend(tree, targets), [2, 2])  # no draw: shifted


def test_a_leaf_a_hundred_slack_steps_light_is_drawn_by_its_branch_bits():
    """Leaves [100 · 2^-22, 1]: the light leaf is about 100 times the target's slack (total ·
    2^-22), below RESOLVED (2^10) times it, so its branch is drawn afresh: bits 0 (a share of 0,
    below any positive lighter child's) choose it although target 0.5 lies in the unit leaf,
    which the descent by the target alone returns."""
    tree = sum_tree_from_leaves(jnp.array([100 * 2.0**-22, 1.0]))
    bits = jnp.zeros((tree.num_levels, 1), jnp.uint32)
    np.testing.assert_array_equal(sum_tree_descend(tree, jnp.array([0.5]), bits), [0])
    np.testing.assert_array_equal(sum_tree_descend(tree, jnp.array([0.5])), [1])


def test_a_count_tree_of_exact_count_leaves_samples_with_branch_draws():
    """EXACT_COUNT_LEAVES (2^14) unit leaves are no longer below the limit where targets alone
    place a count tree's leaves: ``counts=True`` samples it as ``counts=False`` does (same key,
    same leaves), with branch draws."""
    tree = sum_tree_from_leaves(jnp.ones(EXACT_COUNT_LEAVES))
    key = jax.random.key(5)
    counted = sum_tree_sample(tree, key, 32, counts=True)
    np.testing.assert_array_equal(counted, sum_tree_sample(tree, key, 32, counts=False))
    offsets = jax.random.uniform(key, (32,))  # the targets-only draw of a smaller count tree
    assert not np.array_equal(counted, sum_tree_descend(tree, stratified_targets(tree, offsets)))
