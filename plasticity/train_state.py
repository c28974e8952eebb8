"""The train state: one pytree with everything a learner step reads and writes.

Parameters, optimizer state, RNG key, counters and the state of any intervention live together,
so a step ``state, metrics = step(state, batch)`` is jittable, vmappable over seeds, shardable and
checkpointable as it is.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """step: optimizer updates done; extra: intervention / agent state keyed by name."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    extra: dict[str, Any] = flax.struct.field(default_factory=dict)


def create_train_state(
    params: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    extra: dict[str, Any] | None = None,
) -> TrainState:
    """A fresh state at step 0."""
    return TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=rng,
        extra=dict(extra or {}),
    )


def apply_gradients(state: TrainState, grads: Any, tx: optax.GradientTransformation) -> TrainState:
    """One optimizer update (the whole chain, NaP projection included)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )


MOMENT_FIELDS = ("mu", "nu", "trace")


def map_optimizer_moments(
    opt_state: Any, params: Any, fn: Callable[..., Any], with_field: bool = False
) -> Any:
    """Applies `fn` to every optimizer moment (a params-shaped `mu`, `nu` or `trace` field), as
    ``fn(moment)``, or ``fn(moment, field)`` with `with_field` ('nu' holds squared gradients).

    Optimizer moments mirror the parameters wherever they sit in an `optax.chain` state;
    interventions that reset units must reset the matching moments too. Other params-shaped
    state (e.g. the anchor of L2-init) is left alone.
    """
    target = jax.tree_util.tree_structure(params)

    def is_moment(path, node):
        return (
            bool(path)
            and isinstance(path[-1], jax.tree_util.GetAttrKey)
            and path[-1].name in MOMENT_FIELDS
            and _structure(node) == target
        )

    def visit(path, node):
        if not is_moment(path, node):
            return node
        return fn(node, path[-1].name) if with_field else fn(node)

    return jax.tree_util.tree_map_with_path(
        visit, opt_state, is_leaf=lambda node: _structure(node) == target
    )


def _structure(node: Any):
    try:
        return jax.tree_util.tree_structure(node)
    except Exception:  # noqa: BLE001 - a node that is no pytree has no structure to compare
        return None
