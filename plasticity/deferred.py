"""Deferred dense-kernel updates: the same SGD, two passes over each kernel per step instead of four.

At batch size B a dense layer's SGD step changes its kernel by a rank-B matrix,
``ΔW = -η · xᵀδ`` (x: the layer's inputs, δ: the loss gradient at its outputs). Done the usual
way, each step streams the kernel four times: the forward product reads it, the backward
product reads it, and the update reads and writes it. At batch 1 nothing else costs as much, so
a wide network trained one example at a time (online permuted MNIST: 38 MB of weights) runs at
the machine's memory bandwidth divided by four kernel sizes.

Here the updates of a window of K steps are kept as factors ``A`` (the inputs, K·B × in) and
``D`` (-η times the output gradients, K·B × out), and the layer computes with the kernel they
describe::

    y = x·W + b + (x·Aᵀ)·D        (W: the kernel at the window's start)

The extra products are K·B rows long, a few percent of the kernel's work at K = 16, B = 1. At
the window's end one matrix product, ``W + AᵀD``, applies all K updates in one read and one
write of the kernel. Each step thus reads the kernel twice (forward, backward) and the window
adds two passes in K steps. Mathematically it is the same SGD, step for step; in float32 the
sums are grouped differently, so results agree to rounding (exactly, in float64), and a ReLU
network's trajectory drifts apart from the other grouping's over thousands of steps the way two
BLAS libraries' would.

Weight decay and L2 (coupled or decoupled) scale the kernel by ``1 - η·λ`` at each step; the
window keeps that factor as a scalar and computes ``decay · (xW)`` as ``(decay · x)W``, so they
defer too. Each kernel's step size and decay come from the optimizer itself
(`kernel_coefficients`), so schedules, masks and swept values are what the chain computes.
Momentum, Adam, clipping, L2-init and NaP's projection move the whole kernel in other ways at
every step (`blockers`); with them every update applies at its step. Biases, norms and
convolutions update every step as usual. Every large enough `flax.linen.Dense` of the model is
deferred: an interceptor (`flax.linen.intercept_methods`) adds the correction, records the
inputs and exposes the output gradient through a zero ``probe`` added to the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

Key = tuple[
    str, ...
]  # a kernel's path in the flattened params, e.g. ('hidden_0', 'linear', 'kernel')

# Kernels smaller than this update every step: they stay in the core's cache, where the extra
# passes cost less than the window's bookkeeping (bit flipping's 20-5-1 network ran 2x slower with
# every layer deferred). 2**20 float32 weights are 4 MiB, a core's L2 cache or more.
MIN_DEFERRED_WEIGHTS = 2**20
# Layers fed more rows (batch × positions) than this update every step: the window's correction
# costs window·rows² products per weight row, and from a few rows on a step's kernel passes are
# matrix products that use the arithmetic units well anyway.
MAX_ROWS = 8


class Site(NamedTuple):
    """One dense layer's call: rows (the product of its input's leading dims), in and out widths."""

    rows: int
    inputs: int
    outputs: int


class Factors(NamedTuple):
    """A window's pending updates of one kernel W: ``decay * W + inputs.T @ scaled_grads``."""

    inputs: jax.Array  # (window·rows, in)
    scaled_grads: jax.Array  # (window·rows, out): -η times the loss gradient at the outputs,
    # times the decay of every later step
    decay: jax.Array  # (): the product of the window's decay factors so far (1 without decay)


def blockers(optimizer: Mapping[str, Any], swept: Sequence[str] = ()) -> list[str]:
    """Why `optimizer` (a `plasticity.optim` config, with the hyper-parameters `swept` in a grid)
    cannot defer its kernel updates; empty for plain SGD with any learning-rate schedule, weight
    decay and L2. Every other chain moves each kernel by more than a decay and a product of
    factors at every step, so there is nothing to defer."""
    reasons = []
    if optimizer["name"] != "sgd":
        reasons.append(f"optimizer.name={optimizer['name']!r} (needs 'sgd')")
    for field in ("max_grad_norm", "l2_init"):
        if float(optimizer[field]) != 0.0 or field in swept:
            reasons.append(f"optimizer.{field} is on")
    if optimizer["nap"]["enabled"]:
        reasons.append("optimizer.nap.enabled")
    return reasons


def _is_dense_call(context) -> bool:
    # Exactly flax's Dense: a subclass may compute something else with its kernel.
    return type(context.module) is nn.Dense and context.method_name == "__call__"


def _kernel_key(module: nn.Module) -> Key:
    return (*module.scope.path, "kernel")


def find_sites(
    apply: Callable[..., Any],
    *args,
    min_weights: int | None = None,
    max_rows: int | None = None,
) -> dict[Key, Site]:
    """The dense layers `apply(*args)` calls (traced abstractly, nothing computed) worth
    deferring, by kernel path: at least `min_weights` weights, at most `max_rows` input rows
    (default `MIN_DEFERRED_WEIGHTS`, `MAX_ROWS`).

    A layer called more than once per forward pass (shared weights) is left out: its update is
    the sum of its calls' factors, which this module does not track."""
    sites: dict[Key, Site] = {}
    shared: set[Key] = set()

    def record(next_fun, call_args, kwargs, context):
        if _is_dense_call(context):
            key = _kernel_key(context.module)
            if key in sites:
                shared.add(key)
            x = call_args[0]
            sites[key] = Site(math.prod(x.shape[:-1]), x.shape[-1], context.module.features)
        return next_fun(*call_args, **kwargs)

    with nn.intercept_methods(record):
        # A new function each time: a cached trace of `apply` would not call the interceptor.
        jax.eval_shape(lambda *inputs: apply(*inputs), *args)
    min_weights = MIN_DEFERRED_WEIGHTS if min_weights is None else min_weights
    max_rows = MAX_ROWS if max_rows is None else max_rows
    return {
        key: site
        for key, site in sites.items()
        if site.inputs * site.outputs >= min_weights and site.rows <= max_rows and key not in shared
    }


def zero_factors(sites: Mapping[Key, Site], window: int, dtype=jnp.float32) -> dict[Key, Factors]:
    """Empty pending updates for a window of `window` steps."""
    return {
        key: Factors(
            jnp.zeros((window * site.rows, site.inputs), dtype),
            jnp.zeros((window * site.rows, site.outputs), dtype),
            jnp.ones([], dtype),
        )
        for key, site in sites.items()
    }


def split_kernels(params: Any, sites: Mapping[Key, Site]) -> tuple[dict[Key, jax.Array], dict]:
    """(the deferred kernels, every other parameter), both flat dicts keyed by path."""
    flat = traverse_util.flatten_dict(params)
    kernels = {key: flat.pop(key) for key in sites}
    return kernels, flat


def merge(kernels: Mapping[Key, jax.Array], rest: Mapping[Key, Any]) -> Any:
    """The nested params `split_kernels` took apart."""
    return traverse_util.unflatten_dict({**rest, **kernels})


def factor_value_and_grad(
    loss_fn: Callable[..., tuple[jax.Array, Any]], sites: Mapping[Key, Site]
) -> Callable[..., tuple[tuple[jax.Array, Any], dict, dict[Key, tuple[jax.Array, jax.Array]]]]:
    """``loss_fn(params, *args) -> (loss, aux)`` as
    ``fn(kernels, rest, factors, *args) -> ((loss, aux), rest_grads, {key: (x, δ)})``.

    The loss sees the kernels with their pending `factors` applied. ``rest_grads`` is the gradient
    of every parameter but the deferred kernels; each kernel's gradient is given instead as its
    layer's inputs ``x`` and output gradients ``δ`` (rows × in, rows × out): ``xᵀδ``, never formed.
    """

    def with_probes(rest, probes, kernels, factors, *args):
        inputs: dict[Key, jax.Array] = {}

        def deferred_dense(next_fun, call_args, kwargs, context):
            key = _kernel_key(context.module) if _is_dense_call(context) else None
            if key not in sites:  # not a dense layer, or one updated every step
                return next_fun(*call_args, **kwargs)
            pending = factors[key]
            # decay · (xW) as (decay · x)W: the kernel is never scaled in memory.
            y = next_fun(pending.decay * call_args[0], *call_args[1:], **kwargs)
            x = call_args[0].reshape(-1, sites[key].inputs)
            correction = (x @ pending.inputs.T) @ pending.scaled_grads
            inputs[key] = x
            return y + (correction + probes[key]).reshape(y.shape)

        frozen = {key: jax.lax.stop_gradient(kernel) for key, kernel in kernels.items()}
        with nn.intercept_methods(deferred_dense):
            loss, aux = loss_fn(merge(frozen, rest), *args)
        return loss, (aux, inputs)

    grad_fn = jax.value_and_grad(with_probes, argnums=(0, 1), has_aux=True)

    def value_and_grad(kernels, rest, factors, *args):
        probes = {
            key: jnp.zeros((site.rows, site.outputs), kernels[key].dtype)
            for key, site in sites.items()
        }
        (loss, (aux, inputs)), (rest_grads, output_grads) = grad_fn(
            rest, probes, kernels, factors, *args
        )
        return (loss, aux), rest_grads, {key: (inputs[key], output_grads[key]) for key in sites}

    return value_and_grad


def kernel_coefficients(
    tx, opt_state, kernels: Mapping[Key, jax.Array], rest_grads: Mapping[Key, Any], rest: Mapping
) -> tuple[Any, Any, dict[Key, tuple[jax.Array, jax.Array]]]:
    """One update of `tx` (plain SGD, with any decay: see `blockers`) on the parameters but the
    deferred kernels, and each kernel's coefficients ``(step, decay)``: its update this step is
    ``step · xᵀδ + (decay - 1) · W``.

    Each kernel goes through the optimizer as a two-element stand-in at its place in the tree
    (so masks that go by parameter names see it as a kernel) with gradient (1, 0) and value
    (0, 1): an update linear in the gradient and the parameters returns (step, decay - 1)."""
    unit_grad, unit_param = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    grads = merge({key: unit_grad for key in kernels}, rest_grads)
    params = merge({key: unit_param for key in kernels}, rest)
    updates, opt_state = tx.update(grads, opt_state, params)
    flat = traverse_util.flatten_dict(updates)
    coefficients = {key: (flat[key][0], 1.0 + flat[key][1]) for key in kernels}
    return {key: flat[key] for key in rest}, opt_state, coefficients


def record(
    factors: Mapping[Key, Factors],
    step_in_window: jax.Array,
    grads: Mapping[Key, tuple[jax.Array, jax.Array]],
    coefficients: Mapping[Key, tuple[jax.Array, jax.Array]],
) -> dict[Key, Factors]:
    """`factors` after one more step: everything pending decays, and the step's ``(x, δ)`` fill
    its rows, δ times the step's coefficient (`kernel_coefficients`; -η for SGD)."""
    out = {}
    for key, pending in factors.items():
        x, delta = grads[key]
        step, decay = coefficients[key]
        row = step_in_window * x.shape[0]
        scaled = (decay * pending.scaled_grads).astype(pending.scaled_grads.dtype)
        out[key] = Factors(
            jax.lax.dynamic_update_slice_in_dim(pending.inputs, x, row, axis=0),
            jax.lax.dynamic_update_slice_in_dim(
                scaled, (step * delta).astype(scaled.dtype), row, axis=0
            ),
            decay * pending.decay,
        )
    return out


def apply_factors(
    kernels: Mapping[Key, jax.Array], factors: Mapping[Key, Factors]
) -> dict[Key, jax.Array]:
    """Every kernel with its window's updates applied: one read and one write of each."""
    return {
        key: factors[key].decay * kernel + factors[key].inputs.T @ factors[key].scaled_grads
        for key, kernel in kernels.items()
    }


def windowed_scan(
    step: Callable[[Any, Any], tuple[Any, Any]],
    window_step: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    xs: jax.Array,
    window: int,
) -> tuple[Any, Any]:
    """`jax.lax.scan` of `step` over `xs`, whole windows of `window` elements at a time through
    `window_step` (which takes a (window, ...) slice) and any remainder through `step`: the
    same per-element outputs, in order."""
    count = xs.shape[0]
    whole = count // window * window if window > 1 else 0
    if not whole:
        return jax.lax.scan(step, carry, xs)
    carry, outs = jax.lax.scan(window_step, carry, xs[:whole].reshape(-1, window, *xs.shape[1:]))
    outs = jax.tree.map(lambda out: out.reshape(whole, *out.shape[2:]), outs)
    if whole < count:
        carry, tail = jax.lax.scan(step, carry, xs[whole:])
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs, tail)
    return carry, outs
