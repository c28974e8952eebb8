"""Plasticity interventions behind one interface: ``state = intervention.apply(state, probe, rng)``.

`make_intervention(name, model, **options)` returns an `Intervention(name, init, apply)`:

* ``init(params) -> extra_state``: the intervention's own state, to be stored at
  ``train_state.extra[name]`` when the train state is created (``{}`` for stateless ones);
* ``apply(train_state, probe_inputs, rng) -> train_state``: pure and jittable; vmap it over seeds.

Names: 'none', 'redo', 'cbp', 'shrink_perturb', 'noisy_updates', 'reset_last_layers',
'plasticity_injection', and any added with `register_intervention` (a builder of your own).
When to apply is the caller's business; `should_intervene` and `apply_if` cover "every N steps
and/or at task boundaries".

Units and their weights (`plasticity.units`): a unit's *incoming* parameters are the last-axis
slices of its layer module's parameters, its *outgoing* weights the rows of every kernel reading
the layer's output, found by tracing the network itself. A unit whose output
reaches the next linear layer through an op that mixes units (a norm over the residual stream of a
transformer) is refused with a ValueError; in residual networks the identity path cannot be
zeroed, so recycling changes the function slightly there. Output layers are never recycled, nor
are layers whose output no linear layer reads.

Composition. Interventions only rewrite parameters, optimizer moments (the `mu`/`nu`/`trace`
fields, zeroed where parameters were replaced) and their own `extra` entry; the optimizer chain
(weight decay, L2, NaP) is untouched. After a ReDo or a reset, NaP's next projection brings every
scale-invariant kernel back to its reference norm ρ.

Plasticity injection (Nikishin et al. 2023) changes how the network computes its outputs, so
trainers must call `injected_apply(model, params, train_state.extra, x)` instead of
`model.apply` (for the loss and for acting) when it is used; see `make_plasticity_injection`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.flatten_util import ravel_pytree

from plasticity import diagnostics, mesh, networks, param_labels, units
from plasticity.train_state import TrainState, map_optimizer_moments

INTERVENTIONS = (
    "none",
    "redo",
    "cbp",
    "shrink_perturb",
    "noisy_updates",
    "reset_last_layers",
    "plasticity_injection",
)


class Intervention(NamedTuple):
    """A plasticity intervention: `init(params)` makes its extra state, `apply` rewrites a state."""

    name: str
    init: Callable[[Any], Any]
    apply: Callable[[TrainState, jax.Array, jax.Array], TrainState]


# ---------------------------------------------------------------------------------------------
# Schedules.


def should_intervene(
    step, task_boundary=False, every_steps: int = 0, at_task_boundaries: bool = False
) -> jax.Array:
    """Whether to intervene now: every `every_steps` steps (step > 0) and/or at a task boundary.

    `step` and `task_boundary` may be traced; `every_steps=0` switches the periodic part off.
    """
    if every_steps < 0:
        raise ValueError(f"every_steps must be >= 0, got {every_steps}.")
    step = jnp.asarray(step)
    periodic = jnp.logical_and(step > 0, step % every_steps == 0) if every_steps else False
    boundary = jnp.logical_and(at_task_boundaries, jnp.asarray(task_boundary, bool))
    return jnp.logical_or(periodic, boundary)


def apply_if(
    intervention: Intervention,
    condition,
    state: TrainState,
    probe_inputs: jax.Array,
    rng: jax.Array,
) -> TrainState:
    """`intervention.apply` when `condition` holds, else `state` unchanged: a `lax.cond` that,
    vmapped over runs, runs the intervention only when some run's condition holds
    (`plasticity.mesh.cond_when_any`; not reverse-differentiable, as interventions need not be).
    """
    return mesh.cond_when_any(
        condition,
        lambda operand: intervention.apply(*operand),
        lambda operand: operand[0],
        (state, probe_inputs, rng),
    )


# ---------------------------------------------------------------------------------------------
# Rewriting units.


def _zero_moments(opt_state: Any, params: Any, replaced: Any) -> Any:
    """Zeroes optimizer moments where `replaced` (a params-shaped tree of bool masks) is True."""
    return map_optimizer_moments(
        opt_state,
        params,
        lambda moments: jax.tree_util.tree_map(
            lambda m, r: jnp.where(r, jnp.zeros_like(m), m), moments, replaced
        ),
    )


NORM_RECYCLING = ("reinitialize", "preserve_function")


def check_norm_recycling(mode: str) -> str:
    """Returns `mode` if it is a known way of recycling units under a norm, else a ValueError."""
    if mode not in NORM_RECYCLING:
        raise ValueError(
            f"Unknown norm_recycling {mode!r}: expected one of {', '.join(NORM_RECYCLING)}."
        )
    return mode


def _norm_leaves(params: Any) -> set[tuple]:
    """Paths of every normalization γ and β in `params`."""
    labels = traverse_util.flatten_dict(param_labels.label_params(params))
    return {path for path, label in labels.items() if label in param_labels.NORM_LABELS}


def recycle_units(
    params: Any,
    fresh: Any,
    layers: Sequence[units.UnitLayer],
    masks: dict[str, jax.Array],
    norm_recycling: str = "reinitialize",
) -> tuple[Any, Any]:
    """Recycles the masked units: fresh incoming parameters from `fresh`, zero outgoing kernel
    rows. Returns (params, replaced) with `replaced` a params-shaped tree of bool masks of every
    entry that changed (for resetting optimizer moments).

    `norm_recycling` says what happens in a layer with a norm after its linear map:
    * 'reinitialize' (default, the published procedure): kernel column, bias and the norm's γ, β
      all come from `fresh`. The new column changes the mean and variance the norm computes over
      the layer's units, so every unit of the layer, and the network's outputs, change.
    * 'preserve_function': the kernel column is kept, so the norm's statistics are unchanged;
      only the unit's γ, β come from `fresh` (the network's init: 1 and 0). With its outgoing
      rows zeroed no other unit sees a change; the unit restarts from its old direction.
    Layers without a norm are recycled the same way in both modes (fresh incoming weights), which
    changes no other unit.

    Outgoing rows are zeroed after every incoming slice is replaced, so a recycled unit feeding
    another recycled unit contributes nothing. In either case the outputs lose only what the
    recycled units contributed before (their activity through the zeroed rows): nothing for units
    silent on the inputs, little for dormant ones (score ≤ τ), not exactly nothing for τ > 0.
    """
    check_norm_recycling(norm_recycling)
    flat = dict(traverse_util.flatten_dict(params))
    fresh_flat = traverse_util.flatten_dict(fresh)
    norm_leaves = _norm_leaves(params)
    replaced = {path: jnp.zeros(x.shape, bool) for path, x in flat.items()}
    for layer in layers:
        mask = masks[layer.name]
        normed = any(leaf in norm_leaves for leaf in layer.incoming)
        keep_linear = normed and norm_recycling == "preserve_function"
        for leaf in layer.incoming:
            if keep_linear and leaf not in norm_leaves:
                continue
            flat[leaf] = jnp.where(mask, fresh_flat[leaf], flat[leaf])
            replaced[leaf] = replaced[leaf] | mask
    for layer in layers:
        # Feature k belongs to unit k mod C; the extra False entry catches rows marked -1.
        feature_mask = jnp.concatenate(
            [jnp.tile(masks[layer.name], layer.copies), jnp.zeros((1,), bool)]
        )
        for consumer in layer.consumers:
            rows = feature_mask[jnp.asarray(consumer.row_features)][:, None]
            flat[consumer.leaf] = jnp.where(
                rows, jnp.zeros_like(flat[consumer.leaf]), flat[consumer.leaf]
            )
            replaced[consumer.leaf] = replaced[consumer.leaf] | rows
    return traverse_util.unflatten_dict(flat), traverse_util.unflatten_dict(replaced)


def kaiming_uniform_incoming(
    fresh: Any, layers: Sequence[units.UnitLayer], rng: jax.Array, gain: float = float(np.sqrt(2.0))
) -> Any:
    """`fresh` with the incoming kernels of `layers` redrawn Kaiming-uniform and their biases 0.

    Each kernel leaf (dense (in, out) or conv (h, w, in, out)) gets U(−b, b) entries with
    b = gain·√(3/fan_in), fan_in = all axes but the last: variance gain²/fan_in, He et al.'s
    initialization in its uniform form (√2 for ReLU), which Dohare et al. use for replaced units.
    A noisy layer's σ kernel and the norm's γ, β keep the network's initialization.
    """
    flat = dict(traverse_util.flatten_dict(fresh))
    norm_leaves = _norm_leaves(fresh)
    leaves = sorted({leaf for layer in layers for leaf in layer.incoming})
    keys = jax.random.split(rng, max(len(leaves), 1))
    for key, leaf in zip(keys, leaves):
        if leaf in norm_leaves:
            continue
        if leaf[-1] == "kernel":
            shape = flat[leaf].shape
            bound = gain * np.sqrt(3.0 / max(int(np.prod(shape[:-1])), 1))
            flat[leaf] = jax.random.uniform(
                key, shape, flat[leaf].dtype, minval=-bound, maxval=bound
            )
        elif leaf[-1] == "bias":
            flat[leaf] = jnp.zeros_like(flat[leaf])
    return traverse_util.unflatten_dict(flat)


def _own_state(state: TrainState, name: str) -> Any:
    if name not in state.extra:
        raise ValueError(
            f"train_state.extra has no {name!r} entry: create the train state with "
            f"extra={{{name!r}: intervention.init(params)}}."
        )
    return state.extra[name]


@dataclasses.dataclass
class BuildContext:
    """What every intervention builder gets about the network, resolved once from the options:
    ``model`` (the Flax module), ``apply_kwargs`` (extra ``model.apply`` arguments, e.g. noise
    rngs; `diagnostics.resolve_apply_kwargs` resolves them for a key) and ``init_fn(rng,
    inputs)`` (fresh parameters). `check_options` runs a builder with all three None."""

    model: nn.Module
    apply_kwargs: diagnostics.ApplyKwargs
    init_fn: Callable[[jax.Array, jax.Array], Any]
    _units: dict = dataclasses.field(default_factory=dict)

    def units(self, params: Any, inputs: jax.Array) -> tuple[units.UnitLayer, ...]:
        shapes = tuple(
            (path, tuple(x.shape)) for path, x in traverse_util.flatten_dict(params).items()
        )
        key = (shapes, tuple(inputs.shape[1:]), str(inputs.dtype))
        if key not in self._units:
            self._units[key] = units.analyse_units(self.model, params, inputs, self.apply_kwargs)
        return self._units[key]

    def activations(self, params: Any, inputs: jax.Array, rng: jax.Array):
        kwargs = diagnostics.resolve_apply_kwargs(self.apply_kwargs, rng)
        return networks.hidden_activations(self.model, {"params": params}, inputs, **kwargs)[1]


# ---------------------------------------------------------------------------------------------
# The interventions.


def make_redo(
    context: BuildContext, tau: float = 0.1, norm_recycling: str = "reinitialize"
) -> Intervention:
    """ReDo (Sokar et al. 2023, Dopamine's semantics): units with dormant score s_i ≤ τ on the
    probe batch get fresh incoming weights from the network's initializer (and norm γ, β), zero
    outgoing weights, and zeroed optimizer moments for both. With CReLU a unit is dormant when
    all its copies are.

    Under a norm, the default `norm_recycling='reinitialize'` is the published procedure and
    changes the network's outputs: the fresh columns move the mean and variance that the norm
    divides every unit of the layer by (docs/algorithms.md, "ReDo"). 'preserve_function' keeps
    the recycled units' kernel columns and resets only their γ, β: the outputs lose only the
    recycled units' own former contribution (none for silent units, little for dormant ones),
    but the units restart from their old directions. See `recycle_units`.
    """
    if tau < 0:
        raise ValueError(f"ReDo threshold tau must be >= 0, got {tau}.")
    check_norm_recycling(norm_recycling)

    def apply(state: TrainState, probe_inputs: jax.Array, rng: jax.Array) -> TrainState:
        layers = [layer for layer in context.units(state.params, probe_inputs) if layer.consumers]
        apply_rng, init_rng = jax.random.split(rng)
        acts = context.activations(state.params, probe_inputs, apply_rng)
        masks = {}
        for layer in layers:
            scores = diagnostics.dormant_scores(acts[layer.name]["postact"])
            masks[layer.name] = jnp.all((scores <= tau).reshape(layer.copies, layer.units), axis=0)
        fresh = context.init_fn(init_rng, probe_inputs)
        params, replaced = recycle_units(state.params, fresh, layers, masks, norm_recycling)
        return state.replace(
            params=params, opt_state=_zero_moments(state.opt_state, state.params, replaced)
        )

    return Intervention("redo", lambda params: {}, apply)


def _cbp_key(kernel_layer: str) -> str:
    return kernel_layer.replace("/", ".")  # '/' is awkward in checkpoint paths


def outgoing_weight_mass(params: Any, layer: units.UnitLayer) -> jax.Array:
    """Per post-activation feature, Σ|w| over every outgoing kernel row it feeds."""
    flat = traverse_util.flatten_dict(params)
    width = layer.units * layer.copies
    mass = jnp.zeros((width,), jnp.float32)
    for consumer in layer.consumers:
        kernel = jnp.abs(flat[consumer.leaf])
        per_row = jnp.sum(jnp.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1), axis=1)
        index = np.where(consumer.row_features < 0, width, consumer.row_features)
        mass = (
            mass + jax.ops.segment_sum(per_row, jnp.asarray(index), num_segments=width + 1)[:width]
        )
    return mass


def incoming_weight_magnitude(params: Any, layer: units.UnitLayer) -> jax.Array:
    """Per unit, the mean |w| of its incoming kernel entries (every axis but the last; a noisy
    layer's μ kernel; a residual block's unit averages over its last conv's and its shortcut's
    together): how far a gradient step must move the unit's weights to change what it computes."""
    flat = traverse_util.flatten_dict(params)
    kernels = [flat[leaf] for leaf in layer.incoming if leaf[-1] == "kernel"]
    entries = jnp.concatenate([jnp.abs(k).reshape(-1, k.shape[-1]) for k in kernels])
    return jnp.mean(entries, axis=0)


CBP_REINIT = ("kaiming_uniform", "network")
CBP_UTILITIES = ("contribution", "adaptable_contribution")


def check_cbp_activation(options: Mapping[str, Any], activation: str) -> None:
    """One-line ValueError for continual backprop's adaptable contribution on a network whose
    units have several features (CReLU): it follows one running mean per unit."""
    if options.get("utility") == "adaptable_contribution" and activation == "crelu":
        raise ValueError(
            "intervention cbp's utility='adaptable_contribution' follows one running mean "
            "activation per unit, and a CReLU unit has two features: use utility='contribution' "
            "or another network.activation"
        )


def make_cbp(
    context: BuildContext,
    replacement_rate: float = 1e-4,
    maturity_threshold: int = 100,
    decay_rate: float = 0.99,
    steps_per_call: int = 1,
    reinit: str = "kaiming_uniform",
    kaiming_gain: float = float(np.sqrt(2.0)),
    norm_recycling: str = "reinitialize",
    utility: str = "contribution",
) -> Intervention:
    """Continual backprop (Dohare et al. 2024) applied once per call, i.e. meant for every step.

    Per hidden unit i of each recyclable layer, with h_i its post-activation on the probe batch,
    w_{ik} its outgoing weights and η = `decay_rate`:

        age_i ← age_i + 1
        u_i ← η·u_i + (1 − η)·c_i      (u starts at 0), where c_i is, by `utility`:
          'contribution'            E|h_i|·Σ_k |w_{ik}|                    (the paper's)
          'adaptable_contribution'  E|h_i − m̂_i|·Σ_k |w_{ik}| / mean_j |v_{ji}|

    The second is the authors' released code's (their configs for the permuted-digits and
    bit-flipping tasks use it): m_i ← η·m_i + (1 − η)·E h_i is a running mean of the unit's
    activation, m̂_i = m_i / (1 − η^{age_i}) its bias-corrected value, and v_{ji} the unit's
    incoming kernel weights (mean over every input axis), so a unit whose output barely moves
    around its mean, or whose incoming weights are large (slow to adapt), ranks low.

    Units with age_i > `maturity_threshold` are eligible. Each layer accumulates
    `replacement_rate` × (number of eligible units) per call and replaces the integer part of the
    accumulation (the fraction carries over) among the eligible units of lowest bias-corrected
    utility û_i = u_i / (1 − η^{age_i}) (Adam-style correction, as in the authors' code).
    A replaced unit gets incoming weights drawn Kaiming-uniform, U(−b, b) with
    b = `kaiming_gain`·√(3/fan_in) (√2: ReLU), bias 0 and the norm's γ, β from the network's
    init (``reinit='kaiming_uniform'``, the paper's; ``'network'`` takes every incoming
    parameter from the network's own initializer); zero outgoing weights; zeroed optimizer
    moments for both; u_i = m_i = 0 and age_i = 0. `norm_recycling` as in `recycle_units`.

    Differences from the authors' code: Σ_k over the outgoing weights where their code averages (a
    constant factor per layer, which changes no ranking, for dense units read by a dense layer and
    conv units read by a conv layer; where a dense layer reads a conv layer's positions, their
    convGnT averages per position the product of each weight and the pooled activation it reads,
    which can rank units differently from the product of the two sums taken here); E over the inputs
    given to each call, recomputing the activations after the update where their code reuses the
    update's forward pass (the continual trainer gives it the minibatch of the update just made by
    default, ``intervention.probe``; the RL trainers a batch sampled from the replay); no adjustment
    of the next layer's bias by the replaced unit's mean activation (their released GnT code resets
    that mean before reading it, so the adjustment adds nothing there). `steps_per_call = N` scales
    the decay, ages and budget as if the call stood for N steps. Utilities live in ``extra['cbp']``,
    keyed by each hidden kernel layer.
    """
    if not 0.0 <= replacement_rate <= 1.0:
        raise ValueError(f"replacement_rate must be in [0, 1], got {replacement_rate}.")
    if not 0.0 <= decay_rate < 1.0:
        raise ValueError(f"decay_rate must be in [0, 1), got {decay_rate}.")
    if steps_per_call < 1 or maturity_threshold < 0:
        raise ValueError("steps_per_call must be >= 1 and maturity_threshold >= 0.")
    if reinit not in CBP_REINIT:
        raise ValueError(f"Unknown CBP reinit {reinit!r}: expected one of {', '.join(CBP_REINIT)}.")
    if utility not in CBP_UTILITIES:
        raise ValueError(
            f"Unknown CBP utility {utility!r}: expected one of {', '.join(CBP_UTILITIES)}."
        )
    check_norm_recycling(norm_recycling)
    adaptable = utility == "adaptable_contribution"

    def init(params: Any) -> dict[str, Any]:
        flat = traverse_util.flatten_dict(params)
        layers = param_labels.kernel_layers(params, ("normed_kernel", "kernel"))
        state = {}
        for layer, paths in layers.items():
            width = flat[paths[0]].shape[-1]
            entry = {
                "utility": jnp.zeros((width,), jnp.float32),
                "age": jnp.zeros((width,), jnp.int32),
                "to_replace": jnp.zeros([], jnp.float32),
            }
            if adaptable:
                entry["mean_activation"] = jnp.zeros((width,), jnp.float32)
            state[_cbp_key(layer)] = entry
        return {"layers": state, "num_replaced": jnp.zeros([], jnp.int32)}

    def update_layer(layer: units.UnitLayer, entry: dict, postact: jax.Array, params: Any):
        features = postact.reshape(-1, postact.shape[-1])
        decay = decay_rate**steps_per_call
        age = entry["age"] + steps_per_call
        if adaptable:
            if layer.copies != 1:
                raise ValueError(
                    f"cbp's adaptable contribution needs one feature per unit; {layer.name} has "
                    f"{layer.copies} (CReLU): use utility='contribution'"
                )
            mean = decay * entry["mean_activation"] + (1.0 - decay) * jnp.mean(features, axis=0)
            corrected_mean = mean / (1.0 - decay_rate ** age.astype(jnp.float32))
            deviation = jnp.mean(jnp.abs(features - corrected_mean), axis=0)
            magnitude = incoming_weight_magnitude(params, layer)
            contribution = (
                deviation
                * outgoing_weight_mass(params, layer)
                / jnp.maximum(magnitude, jnp.finfo(jnp.float32).tiny)
            )
        else:
            contribution = jnp.mean(jnp.abs(features), axis=0) * outgoing_weight_mass(params, layer)
            contribution = jnp.sum(contribution.reshape(layer.copies, layer.units), axis=0)
        utility_now = decay * entry["utility"] + (1.0 - decay) * contribution
        eligible = age > maturity_threshold
        budget = entry["to_replace"] + replacement_rate * steps_per_call * jnp.sum(eligible)
        count = jnp.floor(budget)
        corrected = utility_now / (1.0 - decay_rate ** age.astype(jnp.float32))
        ranks = jnp.argsort(jnp.argsort(jnp.where(eligible, corrected, jnp.inf)))
        replace = eligible & (ranks < count)
        new_entry = {
            "utility": jnp.where(replace, 0.0, utility_now),
            "age": jnp.where(replace, 0, age),
            "to_replace": budget - count,
        }
        if adaptable:
            new_entry["mean_activation"] = jnp.where(replace, 0.0, mean)
        return replace, new_entry

    def apply(state: TrainState, probe_inputs: jax.Array, rng: jax.Array) -> TrainState:
        own = _own_state(state, "cbp")
        layers = [layer for layer in context.units(state.params, probe_inputs) if layer.consumers]
        apply_rng, init_rng = jax.random.split(rng)
        acts = context.activations(state.params, probe_inputs, apply_rng)
        entries = dict(own["layers"])
        masks = {}
        for layer in layers:
            key = _cbp_key(layer.state_key)
            masks[layer.name], entries[key] = update_layer(
                layer, entries[key], acts[layer.name]["postact"], state.params
            )

        def replace_units(operand):
            params, opt_state, masks, init_rng, probe_inputs = operand
            fresh_rng, kaiming_rng = jax.random.split(init_rng)
            fresh = context.init_fn(fresh_rng, probe_inputs)
            if reinit == "kaiming_uniform":
                fresh = kaiming_uniform_incoming(fresh, layers, kaiming_rng, kaiming_gain)
            new_params, replaced = recycle_units(params, fresh, layers, masks, norm_recycling)
            return new_params, _zero_moments(opt_state, params, replaced)

        replaced_count = sum((jnp.sum(m) for m in masks.values()), jnp.zeros([], jnp.int32))
        # Most calls replace nothing (one unit in thousands of steps at the paper's rates): draw
        # a fresh network only when some unit is replaced (vmapped runs: when any run replaces).
        params, opt_state = mesh.cond_when_any(
            replaced_count > 0,
            replace_units,
            lambda operand: operand[:2],
            (state.params, state.opt_state, masks, init_rng, probe_inputs),
        )
        extra = dict(state.extra)
        extra["cbp"] = {"layers": entries, "num_replaced": own["num_replaced"] + replaced_count}
        return state.replace(params=params, extra=extra, opt_state=opt_state)

    return Intervention("cbp", init, apply)


SHRINK_NOISE = ("init", "gaussian")


def make_shrink_perturb(
    context: BuildContext,
    shrink: float = 0.6,
    perturb: float = 0.01,
    noise: str = "init",
    labels: Sequence[str] | None = None,
) -> Intervention:
    """Shrink and perturb (Ash & Adams 2020): θ ← λθ + σε on every parameter (or those whose
    label is in `labels`). ε is a fresh initialization (``noise='init'``, the original) drawn with
    ``init_fn(rng, probe_inputs)``, or standard Gaussian noise drawn as one vector
    ``jax.random.normal(rng, (num_params,))`` unravelled like the parameters
    (`jax.flatten_util.ravel_pytree`). Moments are kept."""
    if noise not in SHRINK_NOISE:
        raise ValueError(
            f"Unknown shrink-and-perturb noise {noise!r}: expected one of "
            f"{', '.join(SHRINK_NOISE)}."
        )
    if labels is not None:
        labels = param_labels.check_labels(labels, "shrink_perturb labels")

    def apply(state: TrainState, probe_inputs: jax.Array, rng: jax.Array) -> TrainState:
        if noise == "init":
            eps = context.init_fn(rng, probe_inputs)
        else:
            flat, unravel = ravel_pytree(state.params)
            eps = unravel(jax.random.normal(rng, flat.shape, flat.dtype))
        selected = (
            jax.tree_util.tree_map(lambda _: True, state.params)
            if labels is None
            else param_labels.mask_for(state.params, labels)
        )
        params = jax.tree_util.tree_map(
            lambda p, e, s: shrink * p + perturb * e if s else p, state.params, eps, selected
        )
        return state.replace(params=params)

    return Intervention("shrink_perturb", lambda params: {}, apply)


def make_noisy_updates(
    context: BuildContext, scale: float = 1e-4, labels: Sequence[str] | None = None
) -> Intervention:
    """Noisy updates, an arm of NaP's intervention grid: θ ← θ + σε with ε standard Gaussian, on
    every parameter (or those whose label is in `labels`), to be scheduled after every update.
    σ = `scale`; the paper does not state its value, 1e-4 is this project's default. The
    shrink-and-perturb rewrite with λ = 1 and Gaussian noise; moments are kept."""
    if not scale >= 0:
        raise ValueError(f"noisy_updates scale must be >= 0, got {scale!r}")
    noisy = make_shrink_perturb(context, 1.0, scale, "gaussian", labels)
    return Intervention("noisy_updates", noisy.init, noisy.apply)


def _check_layer_names(layers: Sequence[str] | None, where: str) -> None:
    """One-line ValueError for ``layers`` given as one string (read letter by letter otherwise)."""
    if isinstance(layers, str):
        raise ValueError(f"{where}: layers must be a sequence of layer names, e.g. ({layers!r},)")


def make_reset_last_layers(
    context: BuildContext,
    num_layers: int | None = 1,
    layers: Sequence[str] | None = None,
    prefix: str | None = None,
    reset_moments: bool = True,
) -> Intervention:
    """Resets (Nikishin et al. 2022): re-initialize the last `num_layers` parameter layers in call
    order (None: every layer; a dueling head's two streams are one layer per depth), or the named
    `layers`, or every parameter under module `prefix`. A layer is a module owning a kernel, with
    its norm (e.g. 'hidden_1' = linear + norm). Their optimizer moments are zeroed unless
    ``reset_moments=False``."""
    _check_layer_names(layers, "reset_last_layers")

    def apply(state: TrainState, probe_inputs: jax.Array, rng: jax.Array) -> TrainState:
        apply_rng, init_rng = jax.random.split(rng)
        kwargs = diagnostics.resolve_apply_kwargs(context.apply_kwargs, apply_rng)
        modules = units.parameter_layers(
            state.params, context.model, probe_inputs, kwargs, layers, prefix, num_layers
        )
        mask = units.leaf_mask(state.params, modules)
        fresh = context.init_fn(init_rng, probe_inputs)
        params = jax.tree_util.tree_map(lambda p, f, m: f if m else p, state.params, fresh, mask)
        opt_state = state.opt_state
        if reset_moments:
            opt_state = _zero_moments(opt_state, state.params, mask)
        return state.replace(params=params, opt_state=opt_state)

    return Intervention("reset_last_layers", lambda params: {}, apply)


def make_plasticity_injection(
    context: BuildContext,
    num_layers: int | None = 2,
    layers: Sequence[str] | None = None,
    prefix: str | None = None,
) -> Intervention:
    """Plasticity injection (Nikishin et al. 2023), once: the head θ (last `num_layers` parameter
    layers in call order, a dueling head's streams side by side, or `layers`, or the module
    `prefix`, e.g. 'head') is frozen and the network becomes

        f(x) = h_θ(φ(x)) + h_θ'(φ(x)) − h_θ'₀(φ(x)),   θ' trainable, θ'₀ = θ' at injection, frozen.

    The parameter tree keeps its structure: the trainable θ' takes the head's place in `params`
    (fresh init, zeroed moments), θ and θ'₀ are stored in ``extra['plasticity_injection']``, and
    `injected_apply` computes f. At injection f equals the old network. Later calls are no-ops.
    The heads combine at the output layers' raw outputs (before any softmax or dueling
    aggregation), so distributional and dueling heads stay consistent.
    """
    _check_layer_names(layers, "plasticity_injection")

    def init(params: Any) -> dict[str, Any]:
        # Two separate zero trees: a state holding one buffer twice cannot be donated.
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
        return {
            "frozen": zeros(),
            "initial": zeros(),
            "head": jax.tree_util.tree_map(lambda _: jnp.zeros([], bool), params),
            "injected": jnp.zeros([], bool),
        }

    def apply(state: TrainState, probe_inputs: jax.Array, rng: jax.Array) -> TrainState:
        own = _own_state(state, "plasticity_injection")
        apply_rng, init_rng = jax.random.split(rng)
        kwargs = diagnostics.resolve_apply_kwargs(context.apply_kwargs, apply_rng)
        modules = units.parameter_layers(
            state.params, context.model, probe_inputs, kwargs, layers, prefix, num_layers
        )
        mask = units.leaf_mask(state.params, modules)
        fresh = context.init_fn(init_rng, probe_inputs)
        done = own["injected"]
        keep = lambda old, new: jax.tree_util.tree_map(lambda o, n: jnp.where(done, o, n), old, new)
        injected_params = jax.tree_util.tree_map(
            lambda p, f, m: f if m else p, state.params, fresh, mask
        )
        new_own = {
            "frozen": keep(
                own["frozen"],
                jax.tree_util.tree_map(
                    lambda p, m: p if m else jnp.zeros_like(p), state.params, mask
                ),
            ),
            "initial": keep(
                own["initial"],
                jax.tree_util.tree_map(lambda f, m: f if m else jnp.zeros_like(f), fresh, mask),
            ),
            "head": keep(own["head"], jax.tree_util.tree_map(jnp.asarray, mask)),
            "injected": jnp.ones([], bool),
        }
        replaced = jax.tree_util.tree_map(lambda m: jnp.logical_and(m, ~done), mask)
        extra = dict(state.extra)
        extra["plasticity_injection"] = new_own
        return state.replace(
            params=keep(state.params, injected_params),
            extra=extra,
            opt_state=_zero_moments(state.opt_state, state.params, replaced),
        )

    return Intervention("plasticity_injection", init, apply)


def injected_apply(
    model: nn.Module, params: Any, extra: dict[str, Any], x: jax.Array, **apply_kwargs
) -> Any:
    """The network's outputs with plasticity injection: h_θ + h_θ' − h_θ'₀ on a shared torso.

    `extra` is ``train_state.extra`` (holding 'plasticity_injection') or that entry itself. Before
    the injection it returns ``model.apply`` exactly. Runs the model three times (the old and the
    initial heads with stop-gradient parameters); the torso receives gradients from all three, as
    in the paper, and the head terms are added at every output layer ('output*' modules).
    """
    own = extra.get("plasticity_injection", extra)
    if not {"frozen", "initial", "head", "injected"} <= set(own):
        raise ValueError(
            "injected_apply needs train_state.extra with a 'plasticity_injection' "
            "entry made by make_intervention('plasticity_injection', ...).init."
        )
    swap = lambda stored: jax.tree_util.tree_map(
        lambda p, s, h: jnp.where(h, jax.lax.stop_gradient(s), p), params, stored, own["head"]
    )

    def record(p):
        outputs: dict[str, list[jax.Array]] = {}

        def interceptor(next_fun, args, kw, context):
            out = next_fun(*args, **kw)
            if (
                context.method_name == "__call__"
                and context.module.name
                and context.module.name.startswith("output")
            ):
                outputs.setdefault(units.module_path(context), []).append(out)
            return out

        with nn.intercept_methods(interceptor):
            model.apply({"params": p}, x, **apply_kwargs)
        return outputs

    old, initial = record(swap(own["frozen"])), record(swap(own["initial"]))
    weight = own["injected"].astype(jnp.float32)
    seen: dict[str, int] = {}

    def combine(next_fun, args, kw, context):
        out = next_fun(*args, **kw)
        if (
            context.method_name == "__call__"
            and context.module.name
            and context.module.name.startswith("output")
        ):
            path = units.module_path(context)
            i = seen.get(path, 0)
            seen[path] = i + 1
            out = out + weight.astype(out.dtype) * (old[path][i] - initial[path][i])
        return out

    with nn.intercept_methods(combine):
        return model.apply({"params": params}, x, **apply_kwargs)


def make_none(context: BuildContext) -> Intervention:
    """The identity intervention (a baseline arm needs no special case)."""
    return Intervention("none", lambda params: {}, lambda state, probe_inputs, rng: state)


_BUILDERS = {
    "none": make_none,
    "redo": make_redo,
    "cbp": make_cbp,
    "shrink_perturb": make_shrink_perturb,
    "noisy_updates": make_noisy_updates,
    "reset_last_layers": make_reset_last_layers,
    "plasticity_injection": make_plasticity_injection,
}


def register_intervention(name: str, builder: Callable[..., Intervention]) -> None:
    """Adds an intervention that every trainer runs by name (``--config.intervention.name=<name>``
    once the module that registers it is imported, e.g. by an ``--experiment`` file).

    ``builder(context, **options) -> Intervention``: ``context`` is a `BuildContext`; its other
    keyword arguments are the intervention's options (``--config.intervention.options.<x>``),
    refused by name and checked by running the builder on a stand-in context (all None), so a
    builder checks its options and closes over them without touching the network. The
    `Intervention`'s ``apply(train_state, probe_inputs, rng)`` is pure and jittable; its state,
    if any, lives in ``train_state.extra[name]`` (made by ``init(params)``). A built-in name
    is a ValueError; registering a name again replaces its builder (a config file may be loaded
    more than once)."""
    if name in INTERVENTIONS:
        raise ValueError(f"{name!r} is a built-in intervention; register yours by another name")
    _BUILDERS[name] = builder


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """One-line ValueErrors for an unknown intervention, an option it does not take or a value
    it refuses, so that a launcher refuses them before anything is written. The values are
    checked by the builder itself, run on a stand-in network: builders only check their options
    and close over them; the network is first used when the intervention is applied."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown intervention {name!r}: expected one of {', '.join(_BUILDERS)}.")
    accepted = [p for p in inspect.signature(_BUILDERS[name]).parameters if p != "context"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise ValueError(f"intervention {name!r} has no option {unknown[0]!r}: {takes}")
    num_layers = options.get("num_layers")
    if num_layers is not None and (not isinstance(num_layers, int) or num_layers < 1):
        raise ValueError(f"num_layers must be >= 1 (or None for all), got {num_layers!r}")
    try:
        _BUILDERS[name](BuildContext(model=None, apply_kwargs=None, init_fn=None), **options)
    except TypeError as error:
        raise ValueError(f"Bad options for intervention {name!r}: {error}") from None


def make_intervention(
    name: str,
    model: nn.Module,
    *,
    apply_kwargs: diagnostics.ApplyKwargs = None,
    init_fn: Callable[[jax.Array, jax.Array], Any] | None = None,
    **options,
) -> Intervention:
    """The intervention called `name` for `model`.

    Common options: `apply_kwargs` (a dict or rng → dict of `model.apply` keyword arguments, e.g.
    noise rngs), `init_fn(rng, inputs) -> params` (fresh parameters; default `model.init`). Other
    options are the keyword arguments of the matching ``make_<name>`` function:
      redo: tau=0.1, norm_recycling='reinitialize' · cbp: replacement_rate=1e-4,
      maturity_threshold=100, decay_rate=0.99, steps_per_call=1, reinit='kaiming_uniform',
      kaiming_gain=√2, norm_recycling='reinitialize', utility='contribution' ·
      shrink_perturb: shrink=0.6, perturb=0.01, noise='init', labels=None ·
      noisy_updates: scale=1e-4, labels=None ·
      reset_last_layers: num_layers=1, layers=None, prefix=None, reset_moments=True ·
      plasticity_injection: num_layers=2, layers=None, prefix=None.
    """
    check_options(name, options)  # every option and value: the builder below cannot refuse them
    context = BuildContext(
        model, apply_kwargs, init_fn or diagnostics.default_init_fn(model, apply_kwargs)
    )
    return _BUILDERS[name](context, **options)
