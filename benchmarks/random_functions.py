"""Random smooth target functions for regression tasks (``large_offset_regression``): a
one-hidden-layer tanh network drawn at random and standardised on the task's training inputs, so
that its targets have mean 0 and a chosen standard deviation there (`benchmarks.tasks`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PRNGKey = jax.Array


class RandomFunction(NamedTuple):
    """``eps(x) = scale * (tanh(z @ w1 + b1) @ w2 - output_mean) / output_std``.

    ``z = (flatten(x) - input_mean) / input_std`` standardises the input with the
    training set's per-feature mean and overall standard deviation; ``w1 ~ N(0, 1/D)``,
    ``b1 ~ N(0, 1)``, ``w2 ~ N(0, 1/H)``; ``output_mean``/``output_std`` are the mean
    and standard deviation of the unscaled output over the training set, so ``eps``
    has mean 0 and standard deviation ``scale`` per output there.
    """

    input_mean: jax.Array  # (D,)
    input_std: jax.Array  # ()
    w1: jax.Array  # (D, H)
    b1: jax.Array  # (H,)
    w2: jax.Array  # (H, O)
    output_mean: jax.Array  # (O,)
    output_std: jax.Array  # (O,)
    scale: jax.Array  # ()


def draw_random_function(
    key: PRNGKey,
    flat_inputs: jax.Array,
    hidden_units: int,
    num_outputs: int,
    scale: float | jax.Array,
) -> RandomFunction:
    """Draws ``eps`` (see :class:`RandomFunction`) and standardises it on ``flat_inputs``."""
    num_features = flat_inputs.shape[1]
    input_mean = flat_inputs.mean(axis=0)
    input_std = jnp.maximum(jnp.std(flat_inputs - input_mean), 1e-6)
    sizes = (num_features * hidden_units, hidden_units, hidden_units * num_outputs)
    normals = jax.random.normal(key, (sum(sizes),))  # one draw: random calls cost compile time
    w1, b1, w2 = jnp.split(normals, np.cumsum(sizes)[:-1])
    w1 = w1.reshape(num_features, hidden_units) / jnp.sqrt(num_features)
    w2 = w2.reshape(hidden_units, num_outputs) / jnp.sqrt(hidden_units)
    unscaled = RandomFunction(
        input_mean,
        input_std,
        w1,
        b1,
        w2,
        jnp.zeros((num_outputs,)),
        jnp.ones((num_outputs,)),
        jnp.float32(1.0),
    )
    raw = evaluate_random_function(unscaled, flat_inputs)
    return unscaled._replace(
        output_mean=raw.mean(axis=0),
        output_std=jnp.maximum(raw.std(axis=0), 1e-6),
        scale=jnp.asarray(scale, jnp.float32),
    )


def evaluate_random_function(function: RandomFunction, flat_inputs: jax.Array) -> jax.Array:
    """``eps(x)`` for a batch of flattened inputs ``(B, D)``; returns ``(B, O)``."""
    z = (flat_inputs - function.input_mean) / function.input_std
    raw = jnp.tanh(z @ function.w1 + function.b1) @ function.w2
    return function.scale * (raw - function.output_mean) / function.output_std
