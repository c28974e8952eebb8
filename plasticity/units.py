"""Which parameters belong to which unit: the structure plasticity interventions rewrite.

A unit is a channel of a hidden layer reported by `plasticity.networks.hidden_activations`. Its
*incoming* parameters are the last-axis slices of the parameters of its layer module (kernel
column, bias, the norm's γ and β); its *outgoing* weights are the rows of every kernel that reads
the layer's output directly (through reshapes and pooling, e.g. a conv channel's rows in the dense
layer after a flatten). Outgoing rows are found once per network and input shape by tracing a
forward-mode tangent from the layer to the next linear modules (`analyse_units`), so any network
built from `plasticity.layers` works without a hand-written graph. `parameter_layers` names the
modules of the last layers in call order (resets, plasticity injection).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from plasticity import diagnostics, networks, param_labels


@dataclasses.dataclass(frozen=True)
class Consumer:
    """A kernel leaf reading a layer: `row_features[r]` is the post-activation feature feeding
    input row r of the kernel (axis -2), or -1 when row r does not come from the layer."""

    leaf: tuple
    row_features: np.ndarray


@dataclasses.dataclass(frozen=True)
class UnitLayer:
    """A hidden layer whose units can be recycled.

    units: pre-activation channels C; copies: post-activation width / C (2 for CReLU, whose
    feature k belongs to unit k mod C); incoming: leaf paths whose last axis indexes the units;
    state_key: the kernel layer owning the unit's incoming kernel (keys CBP's state).
    """

    name: str
    units: int
    copies: int
    incoming: tuple[tuple, ...]
    state_key: str
    consumers: tuple[Consumer, ...]


def module_path(context) -> str:
    return "/".join(context.module.path)


def _dummy_inputs(inputs: jax.Array, batch: int = 2) -> np.ndarray:
    """Concrete random inputs with the shape and dtype of `inputs` (batch `batch`)."""
    shape = (batch,) + tuple(inputs.shape[1:])
    rng = np.random.default_rng(0)
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        high = 256 if inputs.dtype == jnp.uint8 else 2
        return rng.integers(0, high, shape).astype(inputs.dtype)
    return rng.standard_normal(shape).astype(inputs.dtype)


def _row_features(code: np.ndarray, ones: np.ndarray, layer: str, consumer: str) -> np.ndarray:
    """Decodes the feature index feeding each input row from the two propagated tangents.

    Along a path that only reshapes, pools or gates a layer's output, both tangents are scaled by
    the same factor, so code/ones recovers the index exactly; anything else means units were mixed.
    """
    code = code.reshape(-1, code.shape[-1])
    ones = ones.reshape(-1, ones.shape[-1])
    present = ones != 0
    ratio = code / np.where(present, ones, 1.0)
    high = np.max(np.where(present, ratio, -np.inf), axis=0)
    low = np.min(np.where(present, ratio, np.inf), axis=0)
    reached = present.any(axis=0)
    high, low = np.where(reached, high, 0.0), np.where(reached, low, 0.0)
    if np.any(reached & ((np.abs(high - low) > 1e-3) | (np.abs(high - np.rint(high)) > 1e-3))):
        raise ValueError(
            f"Layer {layer!r} reaches {consumer!r} through an op mixing units: its "
            "outgoing weights are not rows of a kernel, so it cannot be recycled."
        )
    return np.where(reached, np.rint(high) - 1, -1).astype(np.int32)


def _tangents_to_linear_inputs(
    model: nn.Module,
    kernels: dict[str, list[tuple]],
    layer_names: Sequence[str],
    widths: dict[str, int],
    kwargs: dict[str, Any],
):
    """A function (params, x) → {layer: (called kernel layers, code tangents, ones tangents)}.

    For each activation layer, its output gets t₀·(1, 2, …, width) + t₁ added; every kernel layer's
    output is cut with stop_gradient, so the tangents reaching a kernel layer's input come from that
    activation layer alone, along non-linear-module paths.
    """
    calls: dict[str, list[str]] = {}

    def one_layer(params, x, name):
        code = jnp.arange(1, widths[name] + 1, dtype=jnp.float32)
        called: list[str] = []

        def forward(t):
            seen = []

            def interceptor(next_fun, args, kw, context):
                if context.method_name != "__call__":
                    return next_fun(*args, **kw)
                path = module_path(context)
                if path in kernels:
                    called.append(path)
                    seen.append(args[0])
                    return jax.lax.stop_gradient(next_fun(*args, **kw))
                out = next_fun(*args, **kw)
                return out + t[0] * code + t[1] if path == name else out

            called.clear()
            with nn.intercept_methods(interceptor):
                model.apply({"params": params}, x, **kwargs)
            return seen

        _, linear = jax.linearize(forward, jnp.zeros(2, jnp.float32))
        calls[name] = list(called)
        return linear(jnp.array([1.0, 0.0])), linear(jnp.array([0.0, 1.0]))

    def tangents(params, x):
        return {name: one_layer(params, x, name) for name in layer_names}

    return tangents, calls


def _dummy_params(params: Any) -> Any:
    """Concrete random parameters shaped like `params` (fan-in scaled kernels, unit norm scales)."""
    rng = np.random.default_rng(1)
    flat = traverse_util.flatten_dict(params)
    dummy = {}
    for path, leaf in flat.items():
        shape = tuple(leaf.shape)
        scale = 1.0 / np.sqrt(max(int(np.prod(shape[:-1])), 1))
        value = rng.standard_normal(shape) * scale + (1.0 if path[-1] == "scale" else 0.0)
        dummy[path] = value.astype(leaf.dtype)
    return traverse_util.unflatten_dict(dummy)


def analyse_units(
    model: nn.Module, params: Any, inputs: jax.Array, apply_kwargs: diagnostics.ApplyKwargs = None
) -> tuple[UnitLayer, ...]:
    """The recyclable layers of `model` for parameters and inputs shaped like these (shapes only).

    Runs once per network and input shape, on concrete random parameters and inputs, at trace time
    (a small jitted program run in a helper thread), so it adds nothing to the caller's compiled
    program. For each activation layer, a tangent that encodes the feature index is pushed from the
    layer's output to the inputs of the next linear modules, whose outputs are cut (stop_gradient);
    that identifies exactly the kernel rows the layer feeds.
    """
    x = _dummy_inputs(inputs)
    params = _dummy_params(params)

    def evaluate():
        kwargs = diagnostics.resolve_apply_kwargs(apply_kwargs, jax.random.key(1))
        acts = jax.eval_shape(
            lambda p, v: networks.hidden_activations(model, {"params": p}, v, **kwargs)[1],
            params,
            x,
        )
        names = [name for name, a in acts.items() if "preact" in a and "postact" in a]
        widths = {name: acts[name]["postact"].shape[-1] for name in names}
        kernels = param_labels.kernel_layers(params)
        tangents, calls = _tangents_to_linear_inputs(model, kernels, names, widths, kwargs)
        return acts, names, widths, kernels, jax.device_get(jax.jit(tangents)(params, x)), calls

    # JAX's tracing state is per thread: a fresh thread computes concretely even when the caller
    # is being traced under jit or vmap.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        acts, names, widths, kernels, all_tangents, calls = pool.submit(evaluate).result()
    flat = traverse_util.flatten_dict(params)
    layers = []
    for name in names:
        units = acts[name]["preact"].shape[-1]
        code_tangents, ones_tangents = all_tangents[name]
        consumers: dict[tuple, np.ndarray] = {}
        for path, t_code, t_ones in zip(calls[name], code_tangents, ones_tangents):
            rows = _row_features(np.asarray(t_code), np.asarray(t_ones), name, path)
            if np.all(rows < 0):
                continue
            for leaf in kernels[path]:
                if flat[leaf].shape[-2] != rows.shape[0]:
                    raise ValueError(f"Cannot align the rows of {'/'.join(leaf)} with its inputs.")
                previous = consumers.get(leaf)
                consumers[leaf] = rows if previous is None else np.maximum(previous, rows)
        nested = [other for other in names if other != name and other.startswith(name + "/")]
        prefix = tuple(name.split("/"))
        incoming = tuple(
            path
            for path in flat
            if path[: len(prefix)] == prefix
            and flat[path].shape[-1] == units
            and not any("/".join(path).startswith(other + "/") for other in nested)
        )
        incoming_kernels = [k for k in kernels if any(leaf in incoming for leaf in kernels[k])]
        if not incoming_kernels:
            continue
        layers.append(
            UnitLayer(
                name=name,
                units=units,
                copies=widths[name] // units,
                incoming=incoming,
                state_key=incoming_kernels[0],
                consumers=tuple(Consumer(leaf, rows) for leaf, rows in consumers.items()),
            )
        )
    return tuple(layers)


def kernel_layer_call_order(
    model: nn.Module, params: Any, inputs: jax.Array, apply_kwargs: dict[str, Any]
) -> list[str]:
    """Kernel layers ('hidden_0/linear', 'output', ...) in the order the forward pass calls them.

    Parameter dicts are sorted by name, not by call order (e.g. 'hidden_10' < 'hidden_2'), so the
    order is read from an abstract forward pass.
    """
    kernels = param_labels.kernel_layers(params)
    order: list[str] = []

    def interceptor(next_fun, args, kw, context):
        path = module_path(context)
        if context.method_name == "__call__" and path in kernels and path not in order:
            order.append(path)
        return next_fun(*args, **kw)

    def forward(p, x):
        with nn.intercept_methods(interceptor):
            return model.apply({"params": p}, x, **apply_kwargs)

    jax.eval_shape(forward, params, inputs)
    return order


def _depth_of(layer: str) -> str:
    """A layer's name with a dueling stream's name taken out ('head/value_hidden_0/linear' and
    'head/advantage_hidden_0/linear' -> 'head/stream_hidden_0/linear'): parallel layers, one
    depth of the network."""
    layer = re.sub(r"(^|/)(value|advantage)_hidden_", r"\1stream_hidden_", layer)
    return re.sub(r"(^|/)output_(value|advantage)($|/)", r"\1output_stream\3", layer)


def parameter_layers(
    params: Any,
    model: nn.Module,
    inputs: jax.Array,
    apply_kwargs,
    layers: Sequence[str] | None,
    prefix: str | None,
    num_layers: int | None,
) -> list[tuple[str, ...]]:
    """Module paths (tuples) of the parameter layers selected by name, prefix or position: the
    last ``num_layers`` in call order, where a dueling head's value and advantage streams count
    as one layer per depth (the last layer of a dueling network is both output layers)."""
    if layers is not None:
        chosen = [tuple(layer.split("/")) for layer in layers]
    elif prefix is not None:
        chosen = [tuple(prefix.split("/"))]
    else:
        order = [
            diagnostics.param_layer_name(k)
            for k in kernel_layer_call_order(model, params, inputs, apply_kwargs)
        ]
        depths = list(dict.fromkeys(_depth_of(layer) for layer in order))
        if num_layers is not None and not 1 <= num_layers <= len(depths):
            raise ValueError(
                f"num_layers must be between 1 and the network's {len(depths)} parameter layers "
                f"(or None for all), got {num_layers}."
            )
        last = set(depths if num_layers is None else depths[len(depths) - num_layers :])
        chosen = [tuple(layer.split("/")) for layer in order if _depth_of(layer) in last]
    flat = traverse_util.flatten_dict(params)
    for path in chosen:
        if not any(leaf[: len(path)] == path for leaf in flat):
            known = sorted(
                diagnostics.param_layer_name(k) for k in param_labels.kernel_layers(params)
            )
            raise ValueError(
                f"No parameters under {'/'.join(path)!r}: expected a module path such as "
                f"{', '.join(known)}."
            )
    return chosen


def leaf_mask(params: Any, modules: Sequence[tuple[str, ...]]) -> Any:
    """A params-shaped tree of Python bools: True for leaves under any of `modules`."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {leaf: any(leaf[: len(m)] == m for m in modules) for leaf in flat}
    )
