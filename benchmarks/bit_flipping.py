"""Dohare et al.'s slowly-changing regression ("bit flipping"): its target network and its bits.

The pieces `benchmarks.tasks.make_bit_flipping` builds the task sequence from: the fixed random
network of linear threshold units (LTUs) that gives every input its target, the fair bits the
stream draws, and the table of a flip period's inputs. With few random bits per example
(`TABLE_FAST_BITS`), a period's inputs take few values, so the task evaluates the network on all
of them once and looks each example up; every weight is +-1 and every input 0 or 1, so the sums
are exact in float32 and the table gives the per-example values bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PRNGKey = jax.Array


class LTUNetwork(NamedTuple):
    """Dohare et al.'s fixed target network: one hidden layer of linear threshold units.

    ``h_i = 1[x @ input_weights[:, i] + input_bias[i] > thresholds[i]]``,
    ``y = h @ output_weights + output_bias``; every weight and bias is -1 or +1.
    """

    input_weights: jax.Array  # (m, H)
    input_bias: jax.Array  # (H,)
    thresholds: jax.Array  # (H,)
    output_weights: jax.Array  # (H, 1)
    output_bias: jax.Array  # (1,)


def fair_bits(key: PRNGKey, count: int) -> jax.Array:
    """``count`` independent fair bits in {0, 1} as float32, unpacked from uint32 words.

    Same distribution as ``jax.random.bernoulli(key, 0.5, (count,))`` but several
    times cheaper to compile on XLA:CPU, which matters inside vmapped scans.
    """
    words = jax.random.bits(key, (-(-count // 32),), jnp.uint32)
    shifts = jnp.arange(32, dtype=jnp.uint32)
    unpacked = (words[:, None] >> shifts[None, :]) & jnp.uint32(1)
    return unpacked.reshape(-1)[:count].astype(jnp.float32)


# Up to this many random bits per example, `make_bit_flipping` evaluates its target network on
# every input of a period (2**bits rows) and looks each example up; above, on each example.
TABLE_FAST_BITS = 8


def fast_bits_code(key: PRNGKey, count: int) -> jax.Array:
    """`fair_bits`' first ``count`` bits from ``key`` (``count`` <= 32) as one int32: bit j of the
    result is `fair_bits(key, count)[j]`."""
    word = jax.random.bits(key, (1,), jnp.uint32)[0]
    return (word & jnp.uint32((1 << count) - 1)).astype(jnp.int32)


def period_inputs(slow_bits: jax.Array, num_fast: int) -> jax.Array:
    """Every input a bit-flipping period can show, ``(2**num_fast, f + num_fast)``: row c is the
    slow bits followed by the ``num_fast`` bits of c (bit j of c in column f + j)."""
    codes = jnp.arange(1 << num_fast, dtype=jnp.uint32)
    fast = (codes[:, None] >> jnp.arange(num_fast, dtype=jnp.uint32)) & jnp.uint32(1)
    slow = jnp.broadcast_to(slow_bits, (codes.shape[0], slow_bits.shape[0]))
    return jnp.concatenate([slow, fast.astype(jnp.float32)], axis=1)


# How `draw_ltu_network` counts S_i: as the paper says, or as the authors' code does.
LTU_THRESHOLD_RULES = ("paper", "reference_code")


def draw_ltu_network(
    key: PRNGKey, num_inputs: int, hidden_units: int, beta: float, rule: str = "paper"
) -> LTUNetwork:
    """Draws Dohare et al.'s target network: +-1 weights, thresholds from the LTU rule.

    Threshold of unit i: ``theta_i = (m + 1) * beta - S_i`` where m is the number of
    input bits and, by the paper (``rule='paper'``), ``S_i`` the number of -1 weights among
    the unit's m + 1 incoming weights (the m input weights and the bias, the weight of the
    constant-one input). The authors' code (``'reference_code'``, their ``FixLTUNet``, which
    generated the published data) adds half the bias's value to the inputs' count instead, so
    a unit with a -1 bias gets a threshold 1.5 higher and fires less often.
    """
    if rule not in LTU_THRESHOLD_RULES:
        raise ValueError(
            f"ltu_threshold must be one of {', '.join(LTU_THRESHOLD_RULES)}, got {rule!r}"
        )
    # One draw for all signs: every extra random call costs compile time.
    sizes = (num_inputs * hidden_units, hidden_units, hidden_units, 1)
    signs = 2.0 * fair_bits(key, sum(sizes)) - 1.0
    w_in, b_in, w_out, b_out = jnp.split(signs, np.cumsum(sizes)[:-1])
    input_weights = w_in.reshape(num_inputs, hidden_units)
    negatives = (input_weights < 0).sum(axis=0).astype(jnp.float32)
    negatives += (b_in < 0).astype(jnp.float32) if rule == "paper" else b_in / 2
    thresholds = (num_inputs + 1) * beta - negatives
    return LTUNetwork(input_weights, b_in, thresholds, w_out.reshape(hidden_units, 1), b_out)


def ltu_features(network: LTUNetwork, inputs: jax.Array) -> jax.Array:
    """Hidden LTU outputs in {0, 1}, ``(B, H)``."""
    preactivation = inputs @ network.input_weights + network.input_bias
    return (preactivation > network.thresholds).astype(jnp.float32)


def ltu_targets(network: LTUNetwork, inputs: jax.Array) -> jax.Array:
    """Target network output ``(B, 1)``."""
    return ltu_features(network, inputs) @ network.output_weights + network.output_bias
