"""The MinAtar chunk's GPU-relevant structure, as `benchmarks.chunk_ops` counts it."""

import jax
import numpy as np

from benchmarks import chunk_ops


def test_the_chunk_at_purejaxrls_settings_sorts_only_its_sampled_indices_and_writes_once():
    """No sort outside the update (the replay's writes need none); inside it, one: the sampled
    indices' (a batch of int32, so that XLA:CPU computes the descent once, `replay_sample`)."""
    agent, state, plan = chunk_ops.chunk("purejaxrl")
    jaxpr = jax.make_jaxpr(agent.run_chunk)(state, np.int32(0), plan).jaxpr
    counts = chunk_ops.count_primitives(jaxpr)
    sorts = [(inside, n) for (inside, primitive, _), n in counts.items() if primitive == "sort"]
    assert sorts == [(True, 1)]
    outside = {key: n for key, n in counts.items() if not key[0]}
    replay_writes = {
        (primitive, where): n
        for (_, primitive, where), n in outside.items()
        if primitive.startswith("scatter") and ("replay.py" in where or "sum_tree.py" in where)
    }
    # The validity tree's one scatter-add; every other scatter outside the update is the env's.
    assert list(replay_writes) and sum(replay_writes.values()) == 1
    assert all(primitive == "scatter-add" for primitive, _ in replay_writes)
    # The update samples with the fused descent: one scatter-add (the loss's one-hot), no scatter.
    inside = {key: n for key, n in counts.items() if key[0]}
    assert sum(n for (_, primitive, _), n in inside.items() if primitive == "scatter") == 0
