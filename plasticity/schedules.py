"""Learning-rate schedules, including cosine restarted at task boundaries and per-layer replays.

All schedules map an update count to a learning rate with jnp operations only, so the peak value
may be a traced array (a vmapped hyper-parameter grid) and the count a traced step.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Sequence

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
    """η linearly from `learning_rate` at t=0 to `end_value` at `decay_steps`, then held. It has
    no warm-up: a config's ``warmup_steps`` and ``init_value`` are read by the cosine schedules
    (and by the RL launchers' restart at every game), not by this one."""
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
    if starts[0] < 0:
        raise ValueError(f"Task boundaries {list(boundaries)} must be >= 0.")
    if starts[-1] >= total_steps:
        raise ValueError(
            f"Task boundaries {list(boundaries)} must lie below total_steps ({total_steps})."
        )
    shortest = min(np.diff([*starts, total_steps]))
    if warmup_steps and shortest <= warmup_steps:
        raise ValueError(
            f"a task of {shortest} updates never reaches the peak: every task must exceed "
            f"warmup_steps ({warmup_steps})."
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


# ---------------------------------------------------------------------------------------------
# Per-layer schedules: replaying a baseline's implicit learning-rate decay under NaP.


def _metric_name(kernel_layer: str) -> str:
    """'hidden_0/linear' → 'hidden_0': the name diagnostics rows give a parameter layer."""
    return kernel_layer[: -len("/linear")] if kernel_layer.endswith("/linear") else kernel_layer


def resolve_layer_names(params: Any, names: Sequence[str]) -> dict[str, str]:
    """{name: kernel layer} for layer names as diagnostics log them ('hidden_0', 'torso/conv_1',
    'output') or as `plasticity.param_labels` does ('hidden_0/linear'). Any name that is neither
    is refused with one line naming it and the known layers."""
    kernel_layers = param_labels.kernel_layers(params)
    known = {layer: layer for layer in kernel_layers}
    known.update({_metric_name(layer): layer for layer in kernel_layers})
    unknown = sorted(name for name in names if name not in known)
    if unknown:
        raise ValueError(
            f"Unknown layers {unknown} in the layer schedule: expected some of "
            f"{', '.join(sorted(_metric_name(layer) for layer in kernel_layers))}."
        )
    resolved = {name: known[name] for name in names}
    if len(set(resolved.values())) < len(resolved):
        raise ValueError(
            f"The layer schedule names one layer twice: {sorted(resolved)} (a layer may be "
            "named 'hidden_0' or 'hidden_0/linear', not both)."
        )
    return resolved


def _layer_leaves(params: Any, layers: Mapping[str, str]) -> dict[str, list[tuple]]:
    """{name: leaf paths owned by its kernel layer's module} (kernel, σ kernel, bias)."""
    flat = traverse_util.flatten_dict(params)
    return {
        name: [path for path in flat if param_labels.layer_name(path) == layer]
        for name, layer in layers.items()
    }


def _check_table(table_steps: Sequence[int], table: Mapping[str, Any], what: str) -> None:
    steps = np.asarray(table_steps)
    if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"Layer schedule steps must be increasing, got {list(table_steps)}.")
    if not table:
        raise ValueError(f"A layer schedule needs the {what} of at least one layer.")
    for layer, values in table.items():
        if np.shape(values) != steps.shape:
            raise ValueError(
                f"Layer schedule {what} of {layer!r} have shape {np.shape(values)}, expected "
                f"one value per step {steps.shape}."
            )
        if what == "norms" and not np.all(np.asarray(values, np.float64) > 0):
            raise ValueError(f"Layer schedule norms of {layer!r} must be > 0, got {list(values)}.")


def implicit_layer_factors(
    norm_table: Mapping[str, np.ndarray], exponent: float = 2.0
) -> dict[str, np.ndarray]:
    """Per-layer factors (ρ_l/‖W_l(t)‖)^p from a baseline's recorded kernel norms.

    ‖W_l(t)‖ is the baseline's norm of layer l at the recorded times and ρ_l its first entry (the
    initial norm). With p = 2 this is the SGD effective-learning-rate decay η_l = η·ρ_l²/‖W_l‖² that
    NaP removes; p = 1 approximates it for Adam-like optimizers, whose angular step scales as 1/‖W‖.
    To replay a run, prefer `scale_by_implicit_layer_schedule`, which interpolates ‖W‖² between
    recorded steps and uses the new run's own ρ.
    """
    return {
        layer: (np.asarray(norms[0]) / np.asarray(norms)) ** exponent
        for layer, norms in norm_table.items()
    }


class LayerScheduleState(NamedTuple):
    count: jax.Array


def scale_by_layer_schedule(
    table_steps: Sequence[int], layer_factors: Mapping[str, Any]
) -> optax.GradientTransformation:
    """Multiplies each layer's update by its factor at the current count (linear interpolation
    of the factor between `table_steps`, held beyond the ends).

    `layer_factors` maps layer names (as diagnostics log them, 'hidden_0', or as
    `plasticity.param_labels` names them, 'hidden_0/linear') to factors at `table_steps`; the
    factor scales every parameter of that layer's linear module (kernel and bias, not the norm's
    γ, β). Layers absent from the table are left unscaled; names of no layer are refused at `init`.
    For replaying a baseline's implicit schedule use `scale_by_implicit_layer_schedule`.
    """
    _check_table(table_steps, layer_factors, "factors")
    steps = jnp.asarray(table_steps, jnp.float32)
    factors = {layer: jnp.asarray(values, jnp.float32) for layer, values in layer_factors.items()}

    def init_fn(params):
        resolve_layer_names(params, list(factors))
        return LayerScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        count = state.count.astype(jnp.float32)
        leaves = _layer_leaves(updates, resolve_layer_names(updates, list(factors)))
        flat = dict(traverse_util.flatten_dict(updates))
        for name, paths in leaves.items():
            factor = jnp.interp(count, steps, factors[name])
            for path in paths:
                flat[path] = flat[path] * factor.astype(flat[path].dtype)
        return traverse_util.unflatten_dict(flat), LayerScheduleState(count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


class ImplicitLayerSchedule(NamedTuple):
    """A baseline run's kernel norms ‖W_l(t)‖ at recorded update counts, to replay under NaP.

    steps: increasing update counts (a metrics row's ``step``: updates done when measured);
    norms: {layer: norms at those steps}; exponent: p in η_l(t) = η·(ρ_l/‖W_l(t)‖)^p (2 for SGD,
    ~1 for Adam-like optimizers).
    """

    steps: tuple[int, ...]
    norms: dict[str, np.ndarray]
    exponent: float = 2.0


class ImplicitLayerScheduleState(NamedTuple):
    count: jax.Array
    initial_squared_norms: dict[str, jax.Array]  # ρ_l² of this run, keys with '.' for '/'


def scale_by_implicit_layer_schedule(
    table_steps: Sequence[int], layer_norms: Mapping[str, Any], exponent: float = 2.0
) -> optax.GradientTransformation:
    """Replays a baseline's implicit per-layer learning-rate schedule (NaP paper, per-layer arm).

    At update count t each listed layer's update is multiplied by (ρ_l² / ‖W_l(t)‖²)^{p/2}, with
    ‖W_l(t)‖ the baseline's kernel norm (`layer_norms`, recorded at `table_steps`), ‖W_l(t)‖²
    interpolated linearly between recorded steps (held beyond the ends), and ρ_l this run's own
    initial kernel norm, measured at `init` and kept in the state. Under NaP, which holds the
    kernel at ρ_l, the angular step of SGD is then η·factor/ρ_l² = η/‖W_l(t)‖²: the baseline's,
    whatever ρ_l is; with a norm logged at every step the NaP run retraces the baseline's function
    exactly (see the tests). ‖W‖², not the factor, is interpolated because it is the quantity the
    baseline's SGD divides by; between sparse records it grows roughly linearly, so this is also
    the better interpolant. Layer names as diagnostics log them or as `param_labels` names them;
    unknown ones are refused at `init`.
    """
    _check_table(table_steps, layer_norms, "norms")
    steps = jnp.asarray(table_steps, jnp.float32)
    squared = {
        name: jnp.square(jnp.asarray(norms, jnp.float32)) for name, norms in layer_norms.items()
    }
    key = lambda name: name.replace("/", ".")

    def init_fn(params):
        leaves = _layer_leaves(params, resolve_layer_names(params, list(squared)))
        flat = traverse_util.flatten_dict(params)
        labels = traverse_util.flatten_dict(param_labels.label_params(params))
        initial = {
            key(name): sum(
                jnp.sum(jnp.square(flat[p]))
                for p in paths
                if labels[p] in param_labels.KERNEL_LABELS
            )
            for name, paths in leaves.items()
        }
        return ImplicitLayerScheduleState(jnp.zeros([], jnp.int32), initial)

    def update_fn(updates, state, params=None):
        del params
        count = state.count.astype(jnp.float32)
        leaves = _layer_leaves(updates, resolve_layer_names(updates, list(squared)))
        flat = dict(traverse_util.flatten_dict(updates))
        for name, paths in leaves.items():
            ratio = state.initial_squared_norms[key(name)] / jnp.interp(count, steps, squared[name])
            factor = ratio ** (exponent / 2.0)
            for path in paths:
                flat[path] = flat[path] * factor.astype(flat[path].dtype)
        new_state = ImplicitLayerScheduleState(state.count + 1, state.initial_squared_norms)
        return traverse_util.unflatten_dict(flat), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_output_layer(name: str) -> bool:
    return name.split("/")[-1].startswith("output")


def layer_schedule_from_metrics(
    rows: Iterable[Mapping[str, Any]],
    exponent: float = 2.0,
    layers: Sequence[str] | None = None,
    **select: Any,
) -> ImplicitLayerSchedule:
    """The implicit per-layer schedule of a logged run, from its ``weight_norm/<layer>`` rows.

    `rows` are metrics.jsonl rows (dicts with ``step``); rows without ``weight_norm/*`` keys are
    skipped, and `select` keeps the rows whose fields equal the given values (e.g. ``seed=0,
    variant='layernorm'``), since one file can hold several runs. `layers` defaults to every
    logged layer except output layers: those are not scale invariant, NaP leaves their norm free,
    so they have no implicit schedule to replay. Pass the result as ``layer_schedule`` to
    `plasticity.optim.make_optimizer`. Norms, not ``effective_lr/*`` rows, are read because the
    latter fold in the baseline's own explicit learning rate.
    """
    prefix = "weight_norm/"
    table: dict[int, dict[str, float]] = {}
    for row in rows:
        if not any(k.startswith(prefix) for k in row):
            continue
        if any(row.get(field) != value for field, value in select.items()):
            continue
        step = int(row["step"])
        if step in table:
            raise ValueError(
                f"Several runs have weight_norm rows at step {step}: select one run with "
                f"keyword filters such as seed=..., variant=... (fields of the rows)."
            )
        table[step] = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
    if not table:
        matching = f" matching {select}" if select else ""
        raise ValueError(
            f"No metrics rows with weight_norm/<layer> keys{matching}: log the 'weight_norm' "
            "diagnostic in the baseline run."
        )
    steps = sorted(table)
    logged = sorted(set().union(*(set(values) for values in table.values())))
    chosen = [name for name in logged if not _is_output_layer(name)] if layers is None else layers
    if not chosen:
        raise ValueError(f"No layers to schedule: choose some of {', '.join(logged)}.")
    missing = sorted(set(chosen) - set(logged))
    if missing:
        raise ValueError(
            f"Layers {missing} have no weight_norm rows: expected some of {', '.join(logged)}."
        )
    norms = {}
    for name in chosen:
        values = np.asarray([table[step].get(name) for step in steps], dtype=object)
        if any(v is None or not np.isfinite(float(v)) for v in values):
            raise ValueError(
                f"weight_norm/{name} is missing or not finite at some logged step: the "
                "baseline run diverged or skipped rows; select other rows."
            )
        norms[name] = values.astype(np.float64)
    return ImplicitLayerSchedule(tuple(steps), norms, float(exponent))
