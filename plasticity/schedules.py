"""Learning-rate schedules, including cosine restarted at task boundaries and per-layer replays.

All schedules map an update count to a learning rate with jnp operations only, so the peak value
may be a traced array (a vmapped hyper-parameter grid) and the count a traced step.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from plasticity import param_labels

SCHEDULES = ("constant", "linear", "warmup_cosine", "cosine_restarts")


def constant(learning_rate) -> optax.Schedule:
    """η(t) = η."""
    return lambda count: jnp.asarray(learning_rate, jnp.float32) * jnp.ones_like(count, jnp.float32)


def linear_decay(learning_rate, end_value, decay_steps: int) -> optax.Schedule:
    """η linearly from `learning_rate` at t=0 to `end_value` at `decay_steps`, then held."""
    if decay_steps <= 0:
        raise ValueError(f"linear decay needs decay_steps > 0, got {decay_steps}.")

    def schedule(count):
        fraction = jnp.clip(count / decay_steps, 0.0, 1.0)
        return learning_rate + (end_value - learning_rate) * fraction

    return schedule


def _warmup_cosine_from(count, init_value, peak_value, warmup_steps: int, total_steps, end_value):
    """Linear warm-up init→peak over `warmup_steps`, then cosine peak→end until `total_steps`."""
    count = jnp.asarray(count, jnp.float32)
    warm = init_value + (peak_value - init_value) * count / max(warmup_steps, 1)
    decay_length = jnp.maximum(total_steps - warmup_steps, 1)
    progress = jnp.clip((count - warmup_steps) / decay_length, 0.0, 1.0)
    cosine = end_value + 0.5 * (peak_value - end_value) * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(count < warmup_steps, warm, cosine)


def warmup_cosine(
    peak_value, total_steps: int, warmup_steps: int = 0, init_value=0.0, end_value=0.0
) -> optax.Schedule:
    """Linear warm-up to `peak_value`, then a cosine decay reaching `end_value` at `total_steps`."""
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).")
    return lambda count: _warmup_cosine_from(
        count, init_value, peak_value, warmup_steps, total_steps, end_value
    )


def cosine_restarts(
    peak_value,
    boundaries: Sequence[int],
    total_steps: int,
    warmup_steps: int = 0,
    init_value=0.0,
    end_value=0.0,
) -> optax.Schedule:
    """Warm-up + cosine restarted at every task boundary (NaP's sequential-ALE schedule).

    `boundaries` are the update counts at which a new task starts (0 need not be listed). Each
    segment warms up from `init_value` to `peak_value` over `warmup_steps`, then decays by a cosine
    to `end_value` at the segment's end. NaP's Atari sequence: init 1e-8, peak 6.25e-4,
    1,000 warm-up steps, end 1e-6, a boundary at every game switch.
    """
    starts = sorted({0, *map(int, boundaries)})
    if starts[-1] >= total_steps:
        raise ValueError(
            f"Task boundaries {list(boundaries)} must lie below total_steps ({total_steps})."
        )
    starts_array = jnp.asarray(starts, jnp.int32)
    ends_array = jnp.asarray(starts[1:] + [total_steps], jnp.int32)

    def schedule(count):
        segment = jnp.searchsorted(starts_array, jnp.asarray(count, jnp.int32), side="right") - 1
        start, end = starts_array[segment], ends_array[segment]
        return _warmup_cosine_from(
            count - start, init_value, peak_value, warmup_steps, end - start, end_value
        )

    return schedule


def make_schedule(
    name: str,
    learning_rate,
    *,
    total_steps: int = 0,
    warmup_steps: int = 0,
    init_value=0.0,
    end_value=0.0,
    boundaries: Sequence[int] = (),
) -> optax.Schedule:
    """The schedule called `name` (one of SCHEDULES) peaking at `learning_rate`."""
    if name == "constant":
        return constant(learning_rate)
    if name == "linear":
        return linear_decay(learning_rate, end_value, total_steps)
    if name == "warmup_cosine":
        return warmup_cosine(learning_rate, total_steps, warmup_steps, init_value, end_value)
    if name == "cosine_restarts":
        return cosine_restarts(
            learning_rate, boundaries, total_steps, warmup_steps, init_value, end_value
        )
    raise ValueError(f"Unknown schedule {name!r}: expected one of {', '.join(SCHEDULES)}.")


class LayerScheduleState(NamedTuple):
    count: jax.Array


def implicit_layer_factors(
    norm_table: Mapping[str, np.ndarray], exponent: float = 2.0
) -> dict[str, np.ndarray]:
    """Per-layer factors (ρ_l/‖W_l(t)‖)^p from a baseline's recorded kernel norms.

    ‖W_l(t)‖ is the baseline's norm of layer l at the recorded times and ρ_l its first entry (the
    initial norm). With p = 2 this is the SGD effective-learning-rate decay η_l = η·ρ_l²/‖W_l‖² that
    NaP removes; p = 1 approximates it for Adam-like optimizers, whose angular step scales as 1/‖W‖.
    """
    return {
        layer: (np.asarray(norms[0]) / np.asarray(norms)) ** exponent
        for layer, norms in norm_table.items()
    }


def scale_by_layer_schedule(
    table_steps: Sequence[int], layer_factors: Mapping[str, Any]
) -> optax.GradientTransformation:
    """Multiplies each layer's update by its factor at the current count (linear interpolation).

    `layer_factors` maps a layer name (see `plasticity.param_labels`) to factors at `table_steps`,
    e.g. from `implicit_layer_factors`; this replays a baseline's implicit per-layer schedule
    under NaP. Parameters of layers absent from the table are left unscaled.
    """
    steps = jnp.asarray(table_steps, jnp.float32)
    factors = {layer: jnp.asarray(values, jnp.float32) for layer, values in layer_factors.items()}

    def init_fn(params):
        del params
        return LayerScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        count = state.count.astype(jnp.float32)
        flat = dict(traverse_util.flatten_dict(updates))
        for path in flat:
            layer = param_labels.layer_name(path)
            if layer in factors:
                flat[path] = flat[path] * jnp.interp(count, steps, factors[layer])
        return traverse_util.unflatten_dict(flat), LayerScheduleState(count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)
