"""Divergence guard: a NaN or Inf in a loss or in the parameters stops the run with one line.

A diverged state is worthless and spreads: every later step is NaN, and a checkpoint of it would
overwrite the last useful one. Training loops check their losses (and, at checkpoints, the
parameters) with these functions *before* saving, raise `DivergenceError` at the first
non-finite value, and so never write a diverged state: the last good checkpoint stays the
newest, and relaunching the same command would replay the same divergence (fix the config
instead; e.g. lower the learning rate in a new work dir).

The error message is one line naming the step, the metric and the value, plus whatever locates
the run (variant, seed, game) and the checkpoint kept::

    divergence at step 37: loss is nan (variant 'default', seed 0, learning_rate=1e+04);
    last good checkpoint kept: /runs/x/checkpoints/2 (variant 'default', 2 tasks done)

Launchers print it and exit with `DIVERGENCE_EXIT_CODE` (3), which tells a scheduler not to
retry. Host checks: `check_metrics` (named scalars or arrays), `check_consecutive_steps` (one
value per update since the last check: names the exact update), `check_params` (before a save).
In-program helpers (`tree_is_finite`, `first_nonfinite_index`) are jittable and vmappable, for
loops that run many steps per compiled call.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DIVERGENCE_EXIT_CODE = 3


class DivergenceError(RuntimeError):
    """A non-finite loss or parameter (see the module docstring for the message)."""

    def __init__(self, step: int, metric: str, value: float, context: str = "", kept: str = ""):
        self.step, self.metric, self.value = int(step), metric, float(value)
        message = f"divergence at step {self.step}: {metric} is {_format_value(self.value)}"
        if context:
            message += f" ({context})"
        if kept:
            message += f"; {kept}"
        super().__init__(message.replace("\n", " "))


class NonFinite(NamedTuple):
    """Where a non-finite value is: metric name, index inside its array (() for a scalar), value."""

    metric: str
    index: tuple[int, ...]
    value: float


def _format_value(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _is_float(value: Any) -> bool:
    """Whether `value` holds floats: NumPy's and JAX's (bfloat16 and float8 included)."""
    return jnp.issubdtype(np.asarray(value).dtype, jnp.floating)


def first_nonfinite(
    metrics: Mapping[str, Any], names: Sequence[str] | None = None
) -> NonFinite | None:
    """The first non-finite value among the float metrics `names` (default: all, in order).

    Values are host scalars or arrays (e.g. one per run and step); within an array the first bad
    entry in row-major order is reported. Non-float metrics are skipped.
    """
    for name in metrics if names is None else names:
        if name not in metrics or not _is_float(metrics[name]):
            continue
        values = np.asarray(metrics[name])
        bad = ~np.isfinite(values)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad.reshape(-1))), values.shape)
            index = tuple(int(i) for i in index)
            return NonFinite(name, index, float(values[index]))
    return None


def check_metrics(
    metrics: Mapping[str, Any],
    step: int,
    *,
    names: Sequence[str] | None = None,
    context: str = "",
    kept: str = "",
) -> None:
    """Raises `DivergenceError` at `step` if one of the metrics `names` is NaN or Inf."""
    found = first_nonfinite(metrics, names)
    if found is not None:
        raise DivergenceError(step, found.metric, found.value, context, kept)


def check_consecutive_steps(
    values: Any, last_step: int, *, metric: str = "loss", context: str = "", kept: str = ""
) -> None:
    """Raises `DivergenceError` at the first NaN/Inf of `values`, the `metric` of consecutive
    steps ending at `last_step` (host loops keeping one value per update, e.g. the losses of the
    updates since the last log row), naming the exact step."""
    values = np.asarray(jax.device_get(values), np.float64).reshape(-1)
    bad = ~np.isfinite(values)
    if bad.any():
        index = int(np.argmax(bad))
        step = int(last_step) - len(values) + 1 + index
        raise DivergenceError(step, metric, float(values[index]), context, kept)


def first_nonfinite_leaf(tree: Any, prefix: str = "params") -> NonFinite | None:
    """The first float leaf of `tree` holding a NaN or Inf, named ``prefix/<path>`` (host side)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in flat:
        if not _is_float(leaf):
            continue
        values = np.asarray(jax.device_get(leaf))
        bad = ~np.isfinite(values)
        if bad.any():
            name = "/".join([prefix] + [_key_name(key) for key in path])
            index = tuple(
                int(i) for i in np.unravel_index(int(np.argmax(bad.reshape(-1))), values.shape)
            )
            return NonFinite(name, index, float(values[index]))
    return None


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def check_params(
    params: Any, step: int, *, context: str = "", kept: str = "", prefix: str = "params"
) -> None:
    """Raises `DivergenceError` at `step` naming the first parameter holding a NaN or Inf.

    Call it before saving a checkpoint, so that a diverged state is never written.
    """
    found = first_nonfinite_leaf(params, prefix)
    if found is not None:
        raise DivergenceError(step, found.metric, found.value, context, kept)


def tree_is_finite(tree: Any) -> jax.Array:
    """A boolean scalar: whether every float leaf of `tree` is finite (jittable, vmappable)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    finite = jnp.asarray(True)
    for leaf in leaves:
        finite = finite & jnp.all(jnp.isfinite(leaf))
    return finite


def first_nonfinite_index(values: jax.Array) -> jax.Array:
    """Index (int32) of the first NaN/Inf along the last axis of `values`, or -1 (jittable).

    With per-step losses along the last axis it gives the step at which a run diverged.
    """
    bad = ~jnp.isfinite(values)
    first = jnp.argmax(bad, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.any(bad, axis=-1), first, jnp.int32(-1))


def kept_checkpoint_text(directory: Any, step: int | None, description: str = "") -> str:
    """'last good checkpoint kept: DIR/STEP (description)', or that none was written yet."""
    if step is None:
        return f"no checkpoint was written before it (in {directory})"
    return f"last good checkpoint kept: {directory}/{step}" + (
        f" ({description})" if description else ""
    )
