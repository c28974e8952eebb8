"""A float32 sum tree for prioritized replay, as pure JAX functions.

The tree is a complete binary tree stored in heap order in one array: node 1 is the root, node ``i`` has
children ``2i`` and ``2i + 1``, and the ``capacity`` leaves sit at ``[P, P + capacity)`` where ``P`` is
the smallest power of two ``>= capacity`` (unused leaves stay zero, ``nodes[0]`` is unused).

Why no drift: `sum_tree_set` never adds a delta to an ancestor. Every ancestor of an updated leaf is
recomputed as the float32 sum of its two children, level by level from the leaves up. Every node is
therefore always exactly ``nodes[2i] + nodes[2i + 1]`` (as float32), so the tree equals, bit for bit,
a tree built from scratch from the same leaves, however many updates it has seen.

A tree of 0/1 leaves (a replay's validity) is a count tree: its nodes are integers, exact in float32
whatever the order of the additions, so `count_tree_set` updates it with one scatter-add of each
leaf's change into the leaf and its ancestors, with the same result as `sum_tree_set`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SumTree:
    """Heap-ordered float32 sum tree; ``capacity`` is static so the tree can be jitted and vmapped."""

    nodes: jax.Array  # (2 * P,) float32
    capacity: int = struct.field(pytree_node=False)

    @property
    def num_levels(self) -> int:
        """Number of edges from the root down to a leaf."""
        return _num_levels(self.capacity)

    @property
    def first_leaf(self) -> int:
        """Heap position of leaf 0 (``P``)."""
        return 1 << self.num_levels


def _num_levels(capacity: int) -> int:
    return (capacity - 1).bit_length()


def sum_tree_init(capacity: int) -> SumTree:
    """Returns a tree of ``capacity`` leaves, all zero."""
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"sum tree capacity must be a positive int, got {capacity!r}")
    num_nodes = 2 * (1 << _num_levels(capacity))
    return SumTree(nodes=jnp.zeros((num_nodes,), jnp.float32), capacity=capacity)


_PAIRWISE_LIMIT = 1024  # longest index list whose duplicates are found by comparing every pair


def keep_last_duplicate(indices: jax.Array) -> jax.Array:
    """Boolean mask over ``indices`` that is True at the last occurrence of each distinct value.

    Used to make batched writes with duplicate indices deterministic: the last write wins, as in a
    sequential loop (XLA leaves the winner of duplicate scatter writes unspecified). Lists of up to
    1,024 indices (a replay add's slots, a batch's new priorities) compare every pair, one fused
    kernel; longer ones sort, which on a GPU is several kernels however short the list.
    """
    indices = jnp.asarray(indices).reshape(-1)
    if indices.shape[0] <= _PAIRWISE_LIMIT:
        position = jnp.arange(indices.shape[0])
        later = position[None, :] > position[:, None]
        return ~jnp.any((indices[:, None] == indices[None, :]) & later, axis=1)
    order = jnp.argsort(indices, stable=True)
    sorted_indices = indices[order]
    is_last_in_sorted = jnp.append(sorted_indices[1:] != sorted_indices[:-1], True)
    return jnp.zeros_like(is_last_in_sorted).at[order].set(is_last_in_sorted)


def _leaf_writes(
    tree: SumTree, indices: jax.Array, values: jax.Array, caller: str, noun: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Flat int32 indices, float32 values, and the heap node each value is written to: the
    out-of-bounds node (which a ``mode="drop"`` scatter skips) for an index outside the tree or
    repeated later in the list (the last occurrence wins)."""
    indices = jnp.asarray(indices, jnp.int32).reshape(-1)
    values = jnp.asarray(values).reshape(-1).astype(jnp.float32)
    if indices.shape != values.shape:
        raise ValueError(
            f"{caller} needs as many {noun} as indices, got {values.shape} and {indices.shape}"
        )
    in_range = (indices >= 0) & (indices < tree.capacity)
    write = keep_last_duplicate(indices) & in_range
    return indices, values, jnp.where(write, indices + tree.first_leaf, tree.nodes.shape[-1])


def sum_tree_set(tree: SumTree, indices: jax.Array, values: jax.Array) -> SumTree:
    """Sets leaves ``indices`` to ``values`` and recomputes every ancestor from its two children.

    ``indices`` may repeat (the last occurrence wins); indices outside ``[0, capacity)`` are ignored.
    Values must be finite and non-negative for sampling to be meaningful.
    """
    indices, values, leaf_nodes = _leaf_writes(tree, indices, values, "sum_tree_set", "values")
    nodes = tree.nodes.at[leaf_nodes].set(values, mode="drop")

    # Recomputing a node from its children is idempotent, so clipped or duplicate nodes are harmless.
    node = jnp.clip(indices, 0, tree.capacity - 1) + tree.first_leaf
    for _ in range(tree.num_levels):
        node = node // 2
        nodes = nodes.at[node].set(nodes[2 * node] + nodes[2 * node + 1])
    return tree.replace(nodes=nodes)


def count_tree_set(tree: SumTree, indices: jax.Array, flags: jax.Array) -> SumTree:
    """`sum_tree_set` for a tree of 0/1 leaves (a count tree): the same tree, in two operations.

    Each written leaf's change (-1, 0 or +1) is added to it and to all of its ancestors in one
    scatter-add, instead of recomputing them level by level (a gather and a scatter a level, each
    a kernel of its own on a GPU: 28 for a 10k replay). Every node of such a tree is an integer
    below 2**24, which float32 holds exactly whatever the order of the additions, so the result
    equals `sum_tree_set`'s bit for bit, and a tree built from scratch. ``flags`` are bools (the
    leaves must only ever have been set through this function or to 0/1); repeated indices: the
    last one wins; indices outside ``[0, capacity)`` are ignored.
    """
    if tree.capacity >= 1 << 24:
        raise ValueError(
            f"a count tree of {tree.capacity} leaves would not count exactly in float32"
        )
    flags = jnp.asarray(flags, jnp.bool_)
    _, values, leaf_nodes = _leaf_writes(tree, indices, flags, "count_tree_set", "flags")
    dropped = tree.nodes.shape[-1]
    write = leaf_nodes < dropped
    change = jnp.where(write, values - tree.nodes[jnp.minimum(leaf_nodes, dropped - 1)], 0.0)
    # The leaf (level 0) and its ancestors in one scatter-add; as it reads the old leaves, XLA
    # updates the nodes in place (a separate write of the leaves would make it copy them first).
    levels = jnp.arange(tree.num_levels + 1, dtype=jnp.int32)
    nodes_changed = jnp.where(write[:, None], leaf_nodes[:, None] >> levels[None, :], dropped)
    changes = jnp.broadcast_to(change[:, None], nodes_changed.shape)
    nodes = tree.nodes.at[nodes_changed.reshape(-1)].add(changes.reshape(-1), mode="drop")
    return tree.replace(nodes=nodes)


def sum_tree_get(tree: SumTree, indices: jax.Array) -> jax.Array:
    """Returns the leaf values at ``indices``."""
    return tree.nodes[jnp.asarray(indices, jnp.int32) + tree.first_leaf]


def sum_tree_leaves(tree: SumTree) -> jax.Array:
    """Returns all ``capacity`` leaf values."""
    return tree.nodes[tree.first_leaf : tree.first_leaf + tree.capacity]


def sum_tree_total(tree: SumTree) -> jax.Array:
    """Returns the root, the float32 sum of all leaves."""
    return tree.nodes[1]


def sum_tree_from_leaves(leaves: jax.Array) -> SumTree:
    """Builds a tree from scratch from a 1-D array of leaves (the reference an updated tree must equal)."""
    leaves = jnp.asarray(leaves, jnp.float32)
    if leaves.ndim != 1 or leaves.shape[0] < 1:
        raise ValueError(
            f"sum_tree_from_leaves needs a non-empty 1-D array, got shape {leaves.shape}"
        )
    capacity = leaves.shape[0]
    num_leaves = 1 << _num_levels(capacity)
    level = jnp.zeros((num_leaves,), jnp.float32).at[:capacity].set(leaves)
    levels = [level]
    while level.shape[0] > 1:
        level = level[0::2] + level[1::2]
        levels.append(level)
    nodes = jnp.concatenate([jnp.zeros((1,), jnp.float32)] + levels[::-1])
    return SumTree(nodes=nodes, capacity=capacity)


def sum_tree_find(tree: SumTree, targets: jax.Array) -> jax.Array:
    """Descends the tree: for each target mass in ``[0, total)``, the leaf whose prefix interval holds it.

    A child whose sum is zero is never entered, so a zero leaf is never returned while the total is
    positive, even when float32 rounding puts a target at or beyond the total.
    """
    return sum_tree_descend(tree, jnp.asarray(targets, jnp.float32))


# A float32 target mass is known to about 2^-22 of the total (its offset's and the stratum
# width's rounding), so it cannot place a child much lighter than that: at a million leaves a
# leaf of 0.03 beside unit leaves was drawn by no offset or many times too often. A child lighter
# than RESOLVED times that slack is chosen by a fresh draw instead, and the target, rescaled into
# the chosen child, goes on: exact where it can be, strata kept.
TARGET_SLACK = 2.0**-22
RESOLVED = 2.0**10


def sum_tree_descend(
    tree: SumTree, targets: jax.Array, branch_bits: jax.Array | None = None
) -> jax.Array:
    """The leaves the descent reaches by ``targets`` (prefix masses). With ``branch_bits``
    (``(num_levels,) + targets.shape`` uint32), at a node whose lighter child is positive but
    below ``RESOLVED`` times the target's slack, the branch is drawn afresh (the lighter child
    with probability lighter / (left + right), from 32 random bits) and the target is rescaled
    from the node's mass to the chosen child's, with its slack, and the descent goes on by it."""
    node = jnp.ones(targets.shape, jnp.int32)
    slack = jnp.full(targets.shape, sum_tree_total(tree) * TARGET_SLACK)
    for level in range(tree.num_levels):
        left = tree.nodes[2 * node]
        right = tree.nodes[2 * node + 1]
        go_left = targets < left
        stay = go_left  # lanes whose target needs no shift into the right child
        if branch_bits is not None:
            mass, lighter = left + right, jnp.minimum(left, right)
            drawn = (lighter > 0) & (lighter < RESOLVED * slack)
            share = branch_bits[level].astype(jnp.float32) * jnp.float32(2.0**-32)
            drawn_left = (share * mass < lighter) == (left <= right)
            scale = jnp.where(drawn_left, left, right) / mass
            go_left = jnp.where(drawn, drawn_left, go_left)
            targets = jnp.where(drawn, targets * scale, targets)
            slack = jnp.where(drawn, (slack + mass * 2.0**-23) * scale, slack)
            stay = go_left | drawn
        go_left = go_left | (right <= 0)
        targets = jnp.where(stay | go_left, targets, targets - left)
        node = 2 * node + jnp.where(go_left, 0, 1)
    return jnp.minimum(node - tree.first_leaf, tree.capacity - 1)


def stratified_targets(tree: SumTree, offsets: jax.Array) -> jax.Array:
    """Target masses ``(b + offsets[b]) * total / B`` of ``B = len(offsets)`` equal strata."""
    stratum_width = sum_tree_total(tree) / offsets.shape[-1]
    return (jnp.arange(offsets.shape[-1], dtype=jnp.float32) + offsets) * stratum_width


# A count tree (0/1 leaves, e.g. a replay's validity) of fewer leaves has a total below 2^14,
# so its targets place every unit leaf to 2^-9 of its mass and need no fresh draws (which cost
# the MinAtar loop 5% at PureJaxRL's settings).
EXACT_COUNT_LEAVES = 2**14


def sum_tree_sample(
    tree: SumTree, rng: jax.Array, batch_size: int, counts: bool = False
) -> jax.Array:
    """Stratified sampling: one leaf from each of ``batch_size`` equal slices of the total mass.

    Each returned index ``i`` (int32, shape ``(batch_size,)``) has marginal probability
    ``leaf_i / total`` to within about 0.2% for a leaf down to 2^-22 of its sibling's mass
    (coarser below, never 0 for a positive leaf): a child too light for the stratum's target to
    place is chosen by a fresh draw with the target rescaled into it (`sum_tree_descend`), so the
    strata hold wherever the tree's masses can be told apart. ``counts`` says the leaves are 0
    or 1: below ``EXACT_COUNT_LEAVES`` leaves the targets alone are that exact. The total must
    be positive.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if counts and tree.capacity < EXACT_COUNT_LEAVES:
        offsets = jax.random.uniform(rng, (batch_size,), jnp.float32)
        return sum_tree_descend(tree, stratified_targets(tree, offsets))
    stratum_key, branch_key = jax.random.split(rng)
    offsets = jax.random.uniform(stratum_key, (batch_size,), jnp.float32)
    targets = stratified_targets(tree, offsets)
    lane_bits = jax.random.bits(branch_key, (batch_size,), jnp.uint32)
    return sum_tree_descend(tree, targets, level_bits(lane_bits, tree))


def level_bits(lane_bits: jax.Array, tree: SumTree) -> jax.Array:
    """32 random bits a level of ``tree`` for each lane, ``(num_levels,) + lane_bits.shape``:
    a bijective integer hash (lowbias32) of the lane's random bits plus a Weyl step per level.
    One threefry draw per lane rather than per lane and level: XLA counted a (levels, batch)
    threefry draw inside the MinAtar update as a fifth of its work."""
    rows = []
    for level in range(tree.num_levels):
        x = lane_bits + jnp.uint32((level + 1) * 0x9E3779B9 % 2**32)
        x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
        x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
        rows.append(x ^ (x >> 16))
    return jnp.stack(rows) if rows else jnp.zeros((0,) + lane_bits.shape, jnp.uint32)
