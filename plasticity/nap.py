"""Normalize-and-Project (Lyle et al. 2024): keep every scale-invariant weight at its initial norm.

A kernel feeding a normalization layer is scale invariant, so its norm only sets the effective
learning rate of its direction (η/‖W‖² for SGD). NaP fixes each such norm at its initial value
ρ = ‖W₀‖_F after the optimizer update, which turns the implicit learning-rate decay caused by norm
growth into an explicit, user-chosen schedule. Definitions: docs/algorithms.md, "Normalize and
project".

The projection is an optax `GradientTransformation` placed last in the optimizer chain: it returns
the update that lands the parameters on the projected point, ``proj(θ + u) − θ``. Being a transform
means it composes with any optimizer, lives in the optimizer state (so the reference norms are
checkpointed with it) and needs no change to any training loop; applying that update reproduces
the projected parameters up to one float rounding (relative error ~1e-7).

What is projected:
* every hidden kernel followed by a norm (a noisy layer's μ and σ kernels jointly);
* never an output layer, never a kernel without a norm after it;
* the (γ, β) of a norm, jointly to their initial norm ‖[γ₀; β₀]‖ (√d at init), only where that
  leaves the network's function unchanged: the norm's layer has a positively homogeneous
  activation (ReLU, leaky ReLU, CReLU, identity; not GELU or tanh) and its output reaches only
  bias-free linear maps followed by another norm (through pooling or reshapes at most).
  `scale_invariant_norms` finds those layers from the network itself; in the builders of
  `plasticity.networks` they are every ReLU hidden layer except the last one before the output
  (and except residual-stream, attention and GELU layers).

``gamma_beta`` chooses the treatment of (γ, β): 'project' (default) projects the invariant ones
given as ``invariant_norms`` and leaves every other (γ, β) free; 'free' never projects them;
'regularize' leaves all of them to an L2 pull towards their initial values added by
`plasticity.optim` (which can also regularize only the non-invariant ones). Why free elsewhere:
a non-invariant (γ, β) sets the scale the next layer sees, like the output layer's weights, which
NaP also leaves free; no norm growth there hides a learning-rate decay, so there is nothing to
undo, and a projection (or a pull towards init) would change what the network computes. Which
treatment each paper experiment used is unconfirmed. Without ``invariant_norms`` (a caller that
did not analyse its network) no (γ, β) is projected, which can never change the function.
``moments`` chooses what a projection does to the optimizer moments of the tensors it rescales
by c (unconfirmed too): 'keep' (default; what known implementations do) leaves them; 'rescale'
expresses them at the new scale, first moments /c and second moments /c², since a scale-invariant
tensor's gradient scales like 1/c (Adam's step direction is then unchanged but for ε; momentum's
is not); 'reset' zeroes them (meant for ``period`` > 1: at every step it would turn Adam into a
sign-like update).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from plasticity import param_labels
from plasticity.train_state import map_optimizer_moments

GAMMA_BETA_MODES = ("project", "free", "regularize")
# What a projection does to the optimizer moments of the tensors it rescales (`nap_chain`).
MOMENT_MODES = ("keep", "rescale", "reset")

NAP_NEEDS_NORM = (
    "NaP needs a normalization layer before each nonlinearity: set "
    "norm=layernorm, rmsnorm or rmsnorm_offset (got a network without any)."
)


def check_nap_config(norm: str, enabled: bool) -> None:
    """Refuses NaP on a network configured without normalization, before anything is built."""
    if enabled and norm == "none":
        raise ValueError(NAP_NEEDS_NORM)


def check_moments(mode: str) -> str:
    """``mode`` if it is one of MOMENT_MODES, else a one-line ValueError."""
    if mode not in MOMENT_MODES:
        raise ValueError(
            f"Unknown NaP moments mode {mode!r}: expected one of {', '.join(MOMENT_MODES)}."
        )
    return mode


def check_gamma_beta(mode: str) -> str:
    """Returns `mode` if it is a known treatment of the norm's (γ, β), else a one-line ValueError."""
    if mode not in GAMMA_BETA_MODES:
        raise ValueError(
            f"Unknown NaP gamma_beta mode {mode!r}: expected one of {', '.join(GAMMA_BETA_MODES)}."
        )
    return mode


def projection_groups(
    params: Any, gamma_beta: str = "project", invariant_norms: Sequence[str] | None = None
) -> dict[str, list[tuple]]:
    """{group name: leaf paths} of the tensors NaP rescales jointly, one group per layer/norm.

    Kernels feeding a norm always; with ``gamma_beta='project'`` also the (γ, β) of the norm
    layers named in `invariant_norms` (names as in `param_labels.norm_layers`, e.g.
    'hidden_0/norm'; see `scale_invariant_norms`). An unknown name is a one-line ValueError.
    """
    groups = param_labels.kernel_layers(params, ("normed_kernel",))
    if not groups:
        raise ValueError(NAP_NEEDS_NORM)
    if check_gamma_beta(gamma_beta) == "project" and invariant_norms:
        norms = param_labels.norm_layers(params)
        unknown = sorted(set(invariant_norms) - set(norms))
        if unknown:
            raise ValueError(
                f"Unknown norm layers {unknown} in invariant_norms: expected some of "
                f"{', '.join(sorted(norms))}."
            )
        groups.update({name: norms[name] for name in invariant_norms})
    return groups


# ---------------------------------------------------------------------------------------------
# Where projecting (γ, β) preserves the function.

# The radial derivative of a scale-invariant group is the norm's ε effect, ~ε/var ≈ 1e-6 of the
# derivative along a random direction; a group that is not invariant gives a ratio of order 0.1-1.
INVARIANCE_TOLERANCE = 1e-3


def _random_parameters(params: Any, seed: int = 0) -> dict[tuple, np.ndarray]:
    """Flat random parameters shaped like `params`: kernels N(0, 1/fan_in), norm scales around 1,
    everything else around 0 (so every norm sees pre-activations of unit scale)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        shape = tuple(leaf.shape)
        if len(shape) > 1:
            value = rng.standard_normal(shape) / np.sqrt(max(int(np.prod(shape[:-1])), 1))
        else:
            value = (1.0 if path[-1] == "scale" else 0.0) + 0.1 * rng.standard_normal(shape)
        flat[path] = value.astype(leaf.dtype)
    return flat


def _random_inputs(inputs: Any, batch: int = 2) -> np.ndarray:
    """Random inputs with the trailing shape and dtype of `inputs` (integers in {0, 1})."""
    shape = (batch,) + tuple(inputs.shape[1:])
    rng = np.random.default_rng(1)
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        return rng.integers(0, 2, shape).astype(inputs.dtype)
    return rng.standard_normal(shape).astype(inputs.dtype)


def invariance_ratios(
    model: nn.Module,
    inputs: Any,
    params: Any = None,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """{norm layer: ‖J·θ_g‖ / ‖J·r_g‖}: how much the outputs move when a norm's [γ; β] is scaled.

    J is the Jacobian of every output of `model` with respect to its parameters, θ_g the radial
    direction of group g (its own [γ; β], zero elsewhere) and r_g a random direction of the same
    norm on the same entries. By Euler's theorem the outputs are invariant to rescaling the group
    by any c > 0 iff the radial derivative vanishes along the ray; at random parameters (shapes of
    `params`, default `model.init`'s) and random inputs (shape of `inputs`, an array or
    `jax.ShapeDtypeStruct`), a ratio at the norm-ε level (~1e-6) means invariant, and a non-
    invariant group gives a ratio of order one. Behind a narrow layer (width 4 to 6) an input can
    leave most of its units at or near zero, so that the next norm sees a small variance against
    which its ε is no longer negligible: ratios of 1e-4 to 1.5e-3 (a width-4 ReLU or leaky-ReLU
    MLP, tests/plasticity/test_nap.py), and a layer above the tolerance is left free, the safe
    side, since projecting its (γ, β) would move the outputs for such inputs by more than the ε
    level. Concrete even when called under a trace.
    """
    kwargs = dict(apply_kwargs or {})
    x = _random_inputs(inputs)
    if params is None:
        params = jax.eval_shape(
            lambda: model.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x)
        )["params"]
    flat = _random_parameters(params)
    groups = param_labels.norm_layers(params)
    rng = np.random.default_rng(2)
    tangents = {}
    for name, paths in groups.items():
        radial = {p: (v if p in paths else np.zeros_like(v)) for p, v in flat.items()}
        noise = {p: rng.standard_normal(v.shape).astype(v.dtype) for p, v in radial.items()}
        noise = {p: (noise[p] if p in paths else np.zeros_like(v)) for p, v in radial.items()}
        radial_norm = np.sqrt(sum(np.sum(np.square(v)) for v in radial.values()))
        noise_norm = np.sqrt(sum(np.sum(np.square(v)) for v in noise.values()))
        noise = {p: v * (radial_norm / noise_norm) for p, v in noise.items()}
        tangents[name] = (radial, noise)
    kwargs.setdefault("rngs", {"noise": jax.random.key(3)})

    def outputs(p):
        leaves = jax.tree_util.tree_leaves(model.apply({"params": p}, x, **kwargs))
        return jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32) for leaf in leaves])

    def ratios(p, tangents):
        _, linear = jax.linearize(outputs, p)
        result = {}
        for name, (radial, noise) in tangents.items():
            moved = jnp.linalg.norm(linear(traverse_util.unflatten_dict(radial)))
            reference = jnp.linalg.norm(linear(traverse_util.unflatten_dict(noise)))
            result[name] = moved / jnp.maximum(reference, 1e-30)
        return result

    def evaluate():
        return jax.device_get(jax.jit(ratios)(traverse_util.unflatten_dict(flat), tangents))

    # JAX's tracing state is per thread: a fresh thread computes concretely under a caller's trace.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return {name: float(r) for name, r in pool.submit(evaluate).result().items()}


def scale_invariant_norms(
    model: nn.Module,
    inputs: Any,
    params: Any = None,
    apply_kwargs: Mapping[str, Any] | None = None,
    tolerance: float = INVARIANCE_TOLERANCE,
) -> tuple[str, ...]:
    """The norm layers whose (γ, β) NaP may project without changing the function (sorted).

    Pass the result as ``invariant_norms`` to `nap_projection` (or ``nap_invariant_norms`` to
    `plasticity.optim.make_optimizer`). Decided from the network itself by `invariance_ratios`
    (ratio below `tolerance`), so it holds for any architecture built from `plasticity.layers`;
    only shapes of `inputs` and `params` are used.
    """
    ratios = invariance_ratios(model, inputs, params, apply_kwargs)
    return tuple(sorted(name for name, ratio in ratios.items() if ratio < tolerance))


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


def nap_projection(
    period: int = 1, gamma_beta: str = "project", invariant_norms: Sequence[str] | None = None
) -> optax.GradientTransformation:
    """Projects scale-invariant weights to their initial norms every `period` updates.

    `invariant_norms` names the norm layers whose (γ, β) are projected under
    ``gamma_beta='project'`` (from `scale_invariant_norms`; None: none of them). Must be the last
    transform of a chain (it sees the final update). Raises a ValueError at `init` when the
    network has no normalization layer, since NaP is then meaningless.
    """
    if period < 1:
        raise ValueError(f"NaP projection period must be >= 1, got {period}.")
    check_gamma_beta(gamma_beta)
    invariant_norms = tuple(invariant_norms or ())

    def init_fn(params: Any) -> NapState:
        groups = projection_groups(params, gamma_beta, invariant_norms)
        # Group names contain '/', which checkpoint paths dislike: store them with '.'.
        norms = {name.replace("/", "."): norm for name, norm in group_norms(params, groups).items()}
        return NapState(count=jnp.zeros([], jnp.int32), reference_norms=norms)

    def update_fn(updates: Any, state: NapState, params: Any = None) -> tuple[Any, NapState]:
        if params is None:
            raise ValueError(
                "nap_projection needs the current parameters: call update(g, s, params)."
            )
        groups = projection_groups(params, gamma_beta, invariant_norms)
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


def nap_chain(
    transforms: Sequence[optax.GradientTransformation],
    period: int = 1,
    gamma_beta: str = "project",
    invariant_norms: Sequence[str] | None = None,
    moments: str = "keep",
) -> optax.GradientTransformation:
    """The optimizer's `transforms` followed by `nap_projection`, with the projection's treatment
    of their moments (module docstring, ``moments``). 'keep' is ``optax.chain(*transforms,
    nap_projection(...))``; otherwise the state is ``(the transforms' chain state, NaP's)``."""
    projection = nap_projection(period, gamma_beta, invariant_norms)
    if check_moments(moments) == "keep":
        return optax.chain(*transforms, projection)
    inner = optax.chain(*transforms)
    invariant_norms = tuple(invariant_norms or ())

    def init_fn(params: Any) -> tuple[Any, NapState]:
        return inner.init(params), projection.init(params)

    def update_fn(updates: Any, state: tuple, params: Any = None) -> tuple[Any, tuple]:
        inner_state, nap_state = state
        updates, inner_state = inner.update(updates, inner_state, params)
        projected, nap_state = projection.update(updates, nap_state, params)
        flat_params = traverse_util.flatten_dict(params)
        landed, moved = traverse_util.flatten_dict(updates), traverse_util.flatten_dict(projected)
        scales = {}  # c of each projected leaf: 1 exactly at a step that does not project
        for paths in projection_groups(params, gamma_beta, invariant_norms).values():
            before = _group_norm({p: flat_params[p] + landed[p] for p in paths}, paths)
            after = _group_norm({p: flat_params[p] + moved[p] for p in paths}, paths)
            scales.update(dict.fromkeys(paths, after / jnp.maximum(before, 1e-12)))
        projecting = nap_state.count % period == 0

        def adjust(moment: Any, field: str) -> Any:
            flat = dict(traverse_util.flatten_dict(moment))
            for path, scale in scales.items():
                if moments == "reset":
                    flat[path] = jnp.where(projecting, jnp.zeros_like(flat[path]), flat[path])
                else:
                    flat[path] = flat[path] / (scale ** (2 if field == "nu" else 1)).astype(
                        flat[path].dtype
                    )
            return traverse_util.unflatten_dict(flat)

        inner_state = map_optimizer_moments(inner_state, params, adjust, with_field=True)
        return projected, (inner_state, nap_state)

    return optax.GradientTransformation(init_fn, update_fn)
