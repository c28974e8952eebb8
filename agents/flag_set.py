"""A set of flagged slots, sampled uniformly and exactly: flags plus int32 counts per block of slots.

A replay samples uniformly among the slots that can start a transition. A binary sum tree can do
that, but it pays for its generality at every write: each changed leaf recomputes ``log2(capacity)``
ancestors, one gather and one scatter a level (14 levels for a 10k replay), and a GPU runs each as a
kernel of its own. Flags need less. This structure keeps the flags and, for each block of
``block_size`` consecutive slots (about the square root of the capacity), the number of flags set in
it, so that

* a write sets the flags, then recounts the blocks it touched (one gather and one scatter);
* a draw finds the block holding the k-th flag from the blocks' running totals, then the flag from
  the running total inside that block (two searches over about sqrt(capacity) entries each).

Counts are int32, so there is no rounding anywhere: totals never drift, and the k-th flag is the same
slot on every platform. Sampling is stratified, as ``sum_tree_sample`` is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class FlagSet:
    """Flags of ``capacity`` slots and the count of set flags in each block; sizes are static."""

    flags: jax.Array  # (num_blocks * block_size,) bool; slots past capacity stay False
    block_counts: (
        jax.Array
    )  # (num_blocks,) int32: flags set in slots [b * block_size, (b+1) * block_size)
    capacity: int = struct.field(pytree_node=False)
    block_size: int = struct.field(pytree_node=False)

    @property
    def num_blocks(self) -> int:
        return self.flags.shape[-1] // self.block_size


def _block_size(capacity: int) -> int:
    """The power of two nearest above sqrt(capacity): the two searches of a draw are then equally wide."""
    levels = (capacity - 1).bit_length()
    return 1 << ((levels + 1) // 2)


def flag_set_init(capacity: int) -> FlagSet:
    """Returns a set of ``capacity`` slots with no flag set."""
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ValueError(f"flag set capacity must be a positive int, got {capacity!r}")
    block_size = _block_size(capacity)
    num_blocks = -(-capacity // block_size)
    return FlagSet(
        flags=jnp.zeros((num_blocks * block_size,), jnp.bool_),
        block_counts=jnp.zeros((num_blocks,), jnp.int32),
        capacity=capacity,
        block_size=block_size,
    )


def flag_set_update(flag_set: FlagSet, slots: jax.Array, flags: jax.Array) -> FlagSet:
    """Sets the flags of ``slots`` (in ``[0, capacity)``) to ``flags`` and recounts their blocks.

    A slot may be given more than once only with the same flag each time (a replay's refreshed
    window repeats slots while it is short of its full length, always with the same validity), so the
    result does not depend on which duplicate write lands.
    """
    slots = jnp.asarray(slots, jnp.int32).reshape(-1)
    flags = jnp.asarray(flags, jnp.bool_).reshape(-1)
    if slots.shape != flags.shape:
        raise ValueError(
            f"flag_set_update needs one flag per slot, got {flags.shape} and {slots.shape}"
        )
    all_flags = flag_set.flags.at[slots].set(flags)
    blocks = slots // flag_set.block_size
    by_block = all_flags.reshape(flag_set.num_blocks, flag_set.block_size)
    counts = jnp.sum(by_block[blocks], axis=1, dtype=jnp.int32)
    return flag_set.replace(
        flags=all_flags, block_counts=flag_set.block_counts.at[blocks].set(counts)
    )


def flag_set_get(flag_set: FlagSet, slots: jax.Array) -> jax.Array:
    """The flags of ``slots`` (bool)."""
    return flag_set.flags[jnp.asarray(slots, jnp.int32)]


def flag_set_count(flag_set: FlagSet) -> jax.Array:
    """Number of flags set (int32 scalar, exact)."""
    return jnp.sum(flag_set.block_counts)


def flag_set_select(flag_set: FlagSet, ranks: jax.Array) -> jax.Array:
    """The slot of the ``rank``-th set flag (0-based, in slot order) for each of ``ranks``.

    Ranks must lie in ``[0, flag_set_count)``.
    """
    ranks = jnp.asarray(ranks, jnp.int32)
    flat_ranks = ranks.reshape(-1, 1)
    ends = jnp.cumsum(flag_set.block_counts)  # flags set up to the end of each block
    block = jnp.sum(ends[None, :] <= flat_ranks, axis=1, dtype=jnp.int32)
    rank_in_block = flat_ranks[:, 0] - (ends[block] - flag_set.block_counts[block])
    by_block = flag_set.flags.reshape(flag_set.num_blocks, flag_set.block_size)
    running = jnp.cumsum(by_block[block], axis=1, dtype=jnp.int32)
    offset = jnp.sum(running <= rank_in_block[:, None], axis=1, dtype=jnp.int32)
    return (block * flag_set.block_size + offset).reshape(ranks.shape)


def flag_set_sample(flag_set: FlagSet, rng: jax.Array, batch_size: int) -> jax.Array:
    """Stratified uniform draw of ``batch_size`` set slots: one from each equal slice of the ranks.

    Rank ``floor((i + u_i) * count / batch_size)`` with ``u_i ~ U[0, 1)``, so each set slot is drawn
    with marginal probability ``1 / count`` per draw (up to float32 rounding of the rank). At least
    one flag must be set. Returns int32 slots of shape ``(batch_size,)``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    count = flag_set_count(flag_set)
    offsets = jax.random.uniform(rng, (batch_size,), jnp.float32)
    stratum_width = count.astype(jnp.float32) / batch_size
    scaled = (jnp.arange(batch_size, dtype=jnp.float32) + offsets) * stratum_width
    ranks = jnp.clip(jnp.floor(scaled).astype(jnp.int32), 0, count - 1)
    return flag_set_select(flag_set, ranks)
