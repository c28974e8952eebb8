"""One optimizer factory: base optimizer, schedules, weight decay, L2, L2-init, clipping, NaP.

The chain, in order (each piece present only when switched on):

  clip_by_global_norm → coupled L2 (g += λ·θ) → L2-init (g += λ·(θ − θ₀)) → base optimizer
  (sgd | momentum | adam | rmsprop) → decoupled weight decay (u += wd·θ) → per-layer schedule →
  −learning-rate schedule → NaP projection

Conventions (stated because papers differ):
* ``l2`` and ``l2_init`` are gradient coefficients: g += λθ is the gradient of (λ/2)‖θ‖². A paper
  writing the loss as λ‖θ − θ₀‖² means ``l2_init = 2λ`` here.
* ``weight_decay`` is decoupled (AdamW, Loshchilov & Hutter): it is multiplied by the learning
  rate schedule but not by the optimizer's preconditioner, as in `optax.adamw`.
* Masks: by default weight decay and L2 touch kernels only (hidden and output); biases and norm
  (γ, β) are excluded unless ``decay_biases_and_norms``. L2-init pulls every parameter.
* Hyper-parameters ``learning_rate``, ``weight_decay``, ``l2`` and ``l2_init`` may be traced
  arrays, so one compiled program can vmap over a grid of them.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from plasticity import nap, param_labels, schedules
from plasticity.config_tools import check_range, closest_field, flatten

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
GAMMA_BETA_ELSEWHERE = ("free", "regularize")  # NaP's (γ, β) of the norms it does not project


def check_optimizer_name(name: str) -> None:
    """One-line ValueError for an optimizer name the factory does not know, for config checks
    that run before anything is built."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def check_optimizer_config(config: ml_collections.ConfigDict, where: str = "optimizer") -> None:
    """One-line ValueErrors, before anything is built, for an optimizer section `make_optimizer`
    would refuse or that cannot train: the optimizer and schedule names, NaP's (γ, β) modes,
    period and coefficient, a learning rate that is not a positive number, a negative or
    non-finite weight decay, L2 coefficient or clipping norm (a negative one would step up the
    loss), the chosen optimizer's decays outside [0, 1), a negative ε or schedule field."""
    check_optimizer_name(config.name)
    if config.schedule.name not in schedules.SCHEDULES:
        raise ValueError(
            f"unknown schedule {config.schedule.name!r}; known: {', '.join(schedules.SCHEDULES)}"
        )
    if config.nap.enabled:
        nap.check_gamma_beta(config.nap.gamma_beta)
        if int(config.nap.period) < 1:
            raise ValueError(f"{where}.nap.period must be >= 1, got {config.nap.period}")
        elsewhere = config.nap.get("gamma_beta_elsewhere", "free")
        if elsewhere not in GAMMA_BETA_ELSEWHERE:
            raise ValueError(
                f"{where}.nap.gamma_beta_elsewhere={elsewhere!r}: expected one of "
                f"{', '.join(GAMMA_BETA_ELSEWHERE)}"
            )
        check_range(f"{where}.nap.gamma_beta_l2", config.nap.get("gamma_beta_l2", 0.0), 0.0)
        moments = config.nap.get("moments", "keep")
        if moments not in nap.MOMENT_MODES:
            raise ValueError(
                f"{where}.nap.moments={moments!r}: expected one of {', '.join(nap.MOMENT_MODES)}"
            )
    check_range(f"{where}.learning_rate", config.learning_rate, 0.0, low_open=True)
    for field in ("weight_decay", "l2", "l2_init", "max_grad_norm"):  # 0: off
        check_range(f"{where}.{field}", config.get(field) or 0.0, 0.0)
    # What the chosen optimizer reads: decays and β in [0, 1), ε >= 0.
    read = {"adam": ("b1", "b2", "eps"), "momentum": ("momentum",)}
    read["rmsprop"] = ("rmsprop_decay", "eps")
    for field in read.get(config.name, ()):
        high = None if field == "eps" else 1.0
        check_range(f"{where}.{field}", config[field], 0.0, high, high_open=True)
    for field in ("warmup_steps", "total_steps", "init_value", "end_value"):
        check_range(f"{where}.schedule.{field}", config.schedule.get(field) or 0, 0.0)


def check_known_fields(config: ml_collections.ConfigDict | Mapping) -> None:
    """One-line ValueError for a field `make_optimizer` does not read (a misspelt
    ``learning_rat`` would otherwise leave the default rate in place without a word), naming
    the closest known field."""
    known = list(flatten(default_optimizer_config()))
    for field in flatten(config):
        if field not in known:
            raise ValueError(f"unknown optimizer field {field!r}{closest_field(field, known)}")


def default_optimizer_config() -> ml_collections.ConfigDict:
    """Every field `make_optimizer` reads, with defaults (Adam 1e-3, nothing else on)."""
    return ml_collections.ConfigDict(
        dict(
            name="adam",
            learning_rate=1e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            momentum=0.9,
            nesterov=False,
            rmsprop_decay=0.9,
            rmsprop_centered=False,
            schedule=dict(
                name="constant",
                warmup_steps=0,
                init_value=0.0,
                end_value=0.0,
                total_steps=0,
                boundaries=(),
            ),
            max_grad_norm=0.0,
            weight_decay=0.0,
            l2=0.0,
            l2_init=0.0,
            decay_biases_and_norms=False,
            nap=dict(
                enabled=False,
                period=1,
                gamma_beta="project",
                gamma_beta_elsewhere="free",
                gamma_beta_l2=1e-4,
                moments="keep",
            ),
        )
    )


def _is_on(value) -> bool:
    """A coefficient switches its transform on when traced (a grid value) or a non-zero number."""
    return isinstance(value, jax.Array) or float(value) != 0.0


def decay_mask(params: Any, include_biases_and_norms: bool = False) -> Any:
    """True on the parameters weight decay / L2 acts on: kernels, plus biases and γ/β if asked."""
    labels = param_labels.KERNEL_LABELS
    if include_biases_and_norms:
        labels = labels + ("bias",) + param_labels.NORM_LABELS
    return param_labels.mask_for(params, labels)


def _normed_layer_norm_mask(params: Any, excluded: Sequence[str] = ()) -> Any:
    """True on the (γ, β) of norms inside normed layers, except the norm layers in `excluded`."""
    paths = {
        path
        for name, group in param_labels.norm_layers(params).items()
        if name not in excluded
        for path in group
    }
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: path in paths for path in flat})


def _gamma_beta_regularizer(
    nap_config: ml_collections.ConfigDict, invariant_norms: Sequence[str]
) -> optax.GradientTransformation | None:
    """The L2-init pull on norm (γ, β) that NaP's ``gamma_beta`` setting asks for, if any.

    'regularize' pulls every normed layer's (γ, β); ``gamma_beta_elsewhere='regularize'`` pulls
    those not projected: with 'project' those not in `invariant_norms`, with 'free' (which
    projects none) all of them; otherwise none.
    """
    mode = nap.check_gamma_beta(nap_config.gamma_beta)
    elsewhere = nap_config.get("gamma_beta_elsewhere", "free")
    if elsewhere not in GAMMA_BETA_ELSEWHERE:
        raise ValueError(
            f"Unknown NaP gamma_beta_elsewhere {elsewhere!r}: expected one of "
            f"{', '.join(GAMMA_BETA_ELSEWHERE)}."
        )
    if mode == "regularize":
        return add_l2_init(nap_config.gamma_beta_l2, _normed_layer_norm_mask)
    if elsewhere == "regularize":  # mode 'project' or 'free'
        excluded = tuple(invariant_norms) if mode == "project" else ()
        mask = lambda params: _normed_layer_norm_mask(params, excluded)
        return add_l2_init(nap_config.gamma_beta_l2, mask)
    return None


class L2InitState(NamedTuple):
    initial_params: Any


def add_l2_init(coefficient, mask: Any = None) -> optax.GradientTransformation:
    """L2-init (Kumar et al. 2023): g += λ(θ − θ₀), θ₀ the parameters at `init`.

    `mask` (a pytree or a callable of params) restricts the pull; None pulls every parameter.
    """

    def init_fn(params):
        return L2InitState(initial_params=jax.tree_util.tree_map(jnp.asarray, params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("add_l2_init needs the current parameters: call update(g, s, params).")
        pull = jax.tree_util.tree_map(
            lambda p, p0: coefficient * (p - p0), params, state.initial_params
        )
        mask_tree = mask(params) if callable(mask) else mask
        if mask_tree is not None:
            pull = jax.tree_util.tree_map(
                lambda m, x: x if m else jnp.zeros_like(x), mask_tree, pull
            )
        return jax.tree_util.tree_map(jnp.add, updates, pull), state

    return optax.GradientTransformation(init_fn, update_fn)


def base_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The preconditioning part of the optimizer, before any learning rate is applied."""
    if config.name == "sgd":
        return optax.identity()
    if config.name == "momentum":
        return optax.trace(decay=config.momentum, nesterov=config.nesterov)
    if config.name == "adam":
        return optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)
    if config.name == "rmsprop":
        if config.get("rmsprop_centered", False):  # DQN's RMSProp divides by the centred 2nd moment
            return optax.scale_by_stddev(decay=config.rmsprop_decay, eps=config.eps)
        return optax.scale_by_rms(decay=config.rmsprop_decay, eps=config.eps)
    raise ValueError(f"Unknown optimizer {config.name!r}: expected one of {', '.join(OPTIMIZERS)}.")


def fit_open_schedule(
    optimizer: ml_collections.ConfigDict, total_steps: int, starts: Sequence[int]
) -> ml_collections.ConfigDict:
    """``optimizer`` with the schedule fields a config leaves open fitted to a run of
    ``total_steps`` updates whose tasks or games start at update counts ``starts``:
    ``schedule.total_steps`` 0 spans the run, and ``cosine_restarts`` without boundaries restarts
    at every start inside it. ``optimizer`` itself when nothing is open; a constant schedule is
    never open."""
    schedule = optimizer.schedule
    open_total = schedule.name != "constant" and not schedule.total_steps
    open_boundaries = schedule.name == "cosine_restarts" and not tuple(schedule.boundaries)
    if not (open_total or open_boundaries):
        return optimizer
    fitted = ml_collections.ConfigDict(optimizer.to_dict())
    if open_total:
        fitted.schedule.total_steps = int(total_steps)
    if open_boundaries:
        inside = sorted({int(s) for s in starts if 0 < int(s) < int(total_steps)})
        fitted.schedule.boundaries = tuple(inside)
    return fitted


def check_schedule_builds(optimizer: ml_collections.ConfigDict, where: str = "optimizer") -> None:
    """One-line ValueError naming the config section when ``optimizer``'s (fitted) schedule
    cannot be built, e.g. a warm-up as long as the whole schedule."""
    try:
        learning_rate_schedule(optimizer)
    except ValueError as error:
        raise ValueError(f"{where}.schedule ({optimizer.schedule.name}): {error}") from None


def learning_rate_schedule(config: ml_collections.ConfigDict, learning_rate=None) -> optax.Schedule:
    """The schedule of `config.schedule` peaking at `learning_rate` (default config's)."""
    peak = config.learning_rate if learning_rate is None else learning_rate
    s = config.schedule
    return schedules.make_schedule(
        s.name,
        peak,
        total_steps=s.total_steps,
        warmup_steps=s.warmup_steps,
        init_value=s.init_value,
        end_value=s.end_value,
        boundaries=tuple(s.boundaries),
    )


def make_optimizer(
    config: ml_collections.ConfigDict | Mapping,
    *,
    learning_rate=None,
    weight_decay=None,
    l2=None,
    l2_init=None,
    layer_schedule: schedules.ImplicitLayerSchedule
    | tuple[Sequence[int], Mapping[str, Any]]
    | None = None,
    nap_invariant_norms: Sequence[str] | None = None,
) -> optax.GradientTransformation:
    """Builds the optimizer chain described in the module docstring from `config`.

    Keyword overrides replace the config's values and may be traced arrays (grid search under
    vmap). `layer_schedule` adds a per-layer schedule: an `schedules.ImplicitLayerSchedule`
    (e.g. `schedules.layer_schedule_from_metrics(rows)`, a baseline's implicit schedule replayed
    by `scale_by_implicit_layer_schedule`) or ``(table_steps, {layer: factors})`` for
    `scale_by_layer_schedule`.
    `nap_invariant_norms` (from `nap.scale_invariant_norms(model, inputs)`) names the norm layers
    whose (γ, β) NaP projects under ``nap.gamma_beta='project'``; the other (γ, β) are left free,
    or pulled towards init with ``nap.gamma_beta_elsewhere='regularize'`` (coefficient
    ``nap.gamma_beta_l2``). Without it no (γ, β) is projected. NaP on a network without norms
    fails at `init` with a one-line ValueError.
    """
    config = ml_collections.ConfigDict(config)
    check_known_fields(config)
    pick = lambda override, value: value if override is None else override
    weight_decay = pick(weight_decay, config.weight_decay)
    l2 = pick(l2, config.l2)
    l2_init = pick(l2_init, config.l2_init)
    mask = lambda params: decay_mask(params, config.decay_biases_and_norms)

    chain = []
    if config.max_grad_norm:
        chain.append(optax.clip_by_global_norm(config.max_grad_norm))
    if _is_on(l2):
        chain.append(optax.add_decayed_weights(l2, mask))
    if _is_on(l2_init):
        chain.append(add_l2_init(l2_init))
    invariant_norms = tuple(nap_invariant_norms or ())
    if config.nap.enabled:
        regularizer = _gamma_beta_regularizer(config.nap, invariant_norms)
        if regularizer is not None:
            chain.append(regularizer)
    chain.append(base_optimizer(config))
    if _is_on(weight_decay):
        chain.append(optax.add_decayed_weights(weight_decay, mask))
    if isinstance(layer_schedule, schedules.ImplicitLayerSchedule):
        chain.append(
            schedules.scale_by_implicit_layer_schedule(
                layer_schedule.steps, layer_schedule.norms, layer_schedule.exponent
            )
        )
    elif layer_schedule is not None:
        chain.append(schedules.scale_by_layer_schedule(*layer_schedule))
    chain.append(optax.scale_by_learning_rate(learning_rate_schedule(config, learning_rate)))
    if config.nap.enabled:
        nap_config = config.nap
        moments = nap_config.get("moments", "keep")
        return nap.nap_chain(
            chain, nap_config.period, nap_config.gamma_beta, invariant_norms, moments
        )
    return optax.chain(*chain)


def optimizer_learning_rate(config: ml_collections.ConfigDict, count, learning_rate=None):
    """The learning rate the schedule gives at update `count` (for logging)."""
    return learning_rate_schedule(ml_collections.ConfigDict(config), learning_rate)(count)
