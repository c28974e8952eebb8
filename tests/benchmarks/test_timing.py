"""`benchmarks.timing`'s FLOP counts: XLA's cost analysis of a product and of the MinAtar update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from benchmarks import loop_breakdown, timing


def test_compiled_flops_count_a_matrix_product():
    m, k, n = 32, 48, 16
    executable = jax.jit(lambda a, b: a @ b).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
    assert timing.compiled_flops(executable) == 2 * m * k * n


@pytest.mark.parametrize("batch_size", [0, 64])
def test_minatar_update_flops_are_its_products(batch_size):
    """One seed's learn step at PureJaxRL's settings (batch 128, or ``--batch_size``'s) costs the
    products of DQN's update (two forward passes, online and target, and a backward pass with no
    input gradient for the first layer), plus a few percent of elementwise work (Adam, ReLUs, the
    loss)."""
    from agents import minatar_loop, sequence

    config = loop_breakdown.breakdown_config("purejaxrl", 1, 2_000, batch_size)
    assert config.learner.batch_size == (batch_size or 128)
    segment = sequence.plan_segments(config, minatar_loop.make_blocks(config))[0]
    programs = minatar_loop.make_agent(segment.config, list(config.games), False)
    state = programs.init(jnp.arange(1, dtype=jnp.int32))
    batch = config.learner.batch_size
    kernels = [
        leaf.shape[1:]
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.train_state.params)
        if path[-1].key == "kernel"
    ]
    assert sorted(kernels) == [(84, 3), (120, 84), (400, 120)]
    products = sum(
        2 * batch * fan_in * fan_out * (3 if fan_in == 400 else 4) for fan_in, fan_out in kernels
    )
    flops = loop_breakdown.update_flops(programs, segment.config, state)
    assert 1.0 <= flops / products <= 1.1, (flops, products)
