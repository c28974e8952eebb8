"""Normalize-and-Project (Lyle et al. 2024): keep every scale-invariant weight at its initial norm.

A kernel feeding a normalization layer is scale invariant, so its norm only sets the effective
learning rate of its direction (η/‖W‖² for SGD). NaP fixes each such norm at its initial value
ρ = ‖W₀‖_F after the optimizer update, which turns the implicit learning-rate decay caused by norm
growth into an explicit, user-chosen schedule.

The projection is an optax `GradientTransformation` placed last in the optimizer chain: it returns
the update that lands the parameters on the projected point, ``proj(θ + u) − θ``. Being a transform
means it composes with any optimizer, lives in the optimizer state (so the reference norms are
checkpointed with it) and needs no change to any training loop; applying that update reproduces
the projected parameters up to one float rounding (relative error ~1e-7).

What is projected:
* every hidden kernel followed by a norm (a noisy layer's μ and σ kernels jointly);
* never an output layer, never a kernel without a norm after it;
* the norm's (γ, β), depending on ``gamma_beta``: 'project' rescales [γ; β] jointly to its initial
  norm (√d at init: exact for positively homogeneous activations feeding another normalized layer),
  'free' leaves them alone, 'regularize' leaves them to an L2 pull towards their initial values
  added by `plasticity.optim`. Which one each paper experiment used is unconfirmed; the default is
  'project', the paper's description for ReLU networks.
Optimizer moments are left as they are (also unconfirmed; what known implementations do).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from plasticity import param_labels

GAMMA_BETA_MODES = ("project", "free", "regularize")

NAP_NEEDS_NORM = (
    "NaP needs a normalization layer before each nonlinearity: set "
    "norm=layernorm or norm=rmsnorm (got a network without any)."
)


def check_nap_config(norm: str, enabled: bool) -> None:
    """Refuses NaP on a network configured without normalization, before anything is built."""
    if enabled and norm == "none":
        raise ValueError(NAP_NEEDS_NORM)


def check_gamma_beta(mode: str) -> str:
    """Returns `mode` if it is a known treatment of the norm's (γ, β), else a one-line ValueError."""
    if mode not in GAMMA_BETA_MODES:
        raise ValueError(
            f"Unknown NaP gamma_beta mode {mode!r}: expected one of {', '.join(GAMMA_BETA_MODES)}."
        )
    return mode


def projection_groups(params: Any, gamma_beta: str = "project") -> dict[str, list[tuple]]:
    """{group name: leaf paths} of the tensors NaP rescales jointly, one group per layer/norm."""
    groups = param_labels.kernel_layers(params, ("normed_kernel",))
    if not groups:
        raise ValueError(NAP_NEEDS_NORM)
    if check_gamma_beta(gamma_beta) == "project":
        groups.update(param_labels.norm_layers(params))
    return groups


def _group_norm(flat: dict[tuple, jax.Array], paths: list[tuple]) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(flat[path])) for path in paths))


def group_norms(params: Any, groups: dict[str, list[tuple]]) -> dict[str, jax.Array]:
    """The joint Frobenius norm of each projection group."""
    flat = traverse_util.flatten_dict(params)
    return {name: _group_norm(flat, paths) for name, paths in groups.items()}


def project(params: Any, groups: dict[str, list[tuple]], target_norms: dict[str, jax.Array]) -> Any:
    """Rescales every group to its target norm: W ← ρ·W/‖W‖; other parameters are unchanged."""
    flat = dict(traverse_util.flatten_dict(params))
    for name, paths in groups.items():
        scale = target_norms[name] / jnp.maximum(_group_norm(flat, paths), 1e-12)
        for path in paths:
            flat[path] = flat[path] * scale.astype(flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


class NapState(NamedTuple):
    """Update counter and the initial norm ρ of each projection group."""

    count: jax.Array
    reference_norms: dict[str, jax.Array]


def nap_projection(period: int = 1, gamma_beta: str = "project") -> optax.GradientTransformation:
    """Projects scale-invariant weights to their initial norms every `period` updates.

    Must be the last transform of a chain (it sees the final update). Raises a ValueError at
    `init` when the network has no normalization layer, since NaP is then meaningless.
    """
    if period < 1:
        raise ValueError(f"NaP projection period must be >= 1, got {period}.")
    check_gamma_beta(gamma_beta)

    def init_fn(params: Any) -> NapState:
        groups = projection_groups(params, gamma_beta)
        # Group names contain '/', which checkpoint paths dislike: store them with '.'.
        norms = {name.replace("/", "."): norm for name, norm in group_norms(params, groups).items()}
        return NapState(count=jnp.zeros([], jnp.int32), reference_norms=norms)

    def update_fn(updates: Any, state: NapState, params: Any = None) -> tuple[Any, NapState]:
        if params is None:
            raise ValueError(
                "nap_projection needs the current parameters: call update(g, s, params)."
            )
        groups = projection_groups(params, gamma_beta)
        targets = {name: state.reference_norms[name.replace("/", ".")] for name in groups}
        count = state.count + 1
        flat_params = traverse_util.flatten_dict(params)
        flat_updates = dict(traverse_util.flatten_dict(updates))
        # Only the projected leaves get a new update; every other update passes through bit-exact.
        landed = {
            path: flat_params[path] + flat_updates[path]
            for paths in groups.values()
            for path in paths
        }
        landed_tree = traverse_util.unflatten_dict(landed)
        projected = jax.lax.cond(
            count % period == 0, lambda p: project(p, groups, targets), lambda p: p, landed_tree
        )
        for path, value in traverse_util.flatten_dict(projected).items():
            flat_updates[path] = value - flat_params[path]
        updates = traverse_util.unflatten_dict(flat_updates)
        return updates, NapState(count=count, reference_norms=state.reference_norms)

    return optax.GradientTransformation(init_fn, update_fn)
