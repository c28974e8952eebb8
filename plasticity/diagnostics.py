"""Plasticity diagnostics, compiled: pure functions of (parameters, probe batch) → flat metrics.

`make_diagnostics_fn(model, loss_fn, names, **options)` returns

    fn(params, previous_params, inputs, targets, rng, learning_rate) -> {key: jax.Array}

jittable and vmappable over seeds (vmap params, previous_params and rng; the batch may be shared).
``loss_fn(params, inputs, targets) -> scalar`` is the training loss (for gradients and curvature);
``previous_params`` are the parameters before the last update (for update ratios); ``learning_rate``
is the current (scheduled) learning rate (for effective learning rates).

Keys are '<metric>/<layer>' for per-layer values and '<metric>' for totals over the network.
Activation layers are the hidden layers that `networks.hidden_activations` reports (e.g.
'hidden_0', 'torso/conv_2', 'stage_1_block_0'); parameter layers are the modules owning a kernel,
named by their path without the trailing '/linear' (e.g. 'hidden_0', 'output', 'head/output_value').

Diagnostic names (the `names` argument) and the keys each one writes:

  'dormant'          'dormant_<τ>/<layer>', 'dormant_<τ>' for τ in `dormant_thresholds` (formatted
                     with '%g': 'dormant_0', 'dormant_0.025', 'dormant_0.1'). ReDo score
                     s_i = E|h_i| / mean_k E|h_k| on post-activations (Sokar et al. 2023); a unit is
                     dormant if s_i ≤ τ. Expectations run over the batch and spatial positions.
  'dead'             'dead/<layer>', 'dead': units whose pre-activation is > 0 on at most a
                     fraction `activity_tolerance` of (example, position) pairs (default 0: never).
  'linearized'       'linearized/<layer>', 'linearized': units > 0 on at least 1 − tolerance of them.
  'dohare_inactive'  'dohare_inactive/<layer>', 'dohare_inactive': units active on fewer than
                     `dohare_threshold` (1%) of inputs (Dohare et al. 2024).
  'srank'            'srank/<layer>': Kumar et al.'s srank (δ = `srank_delta`) of the feature
                     matrix (the first `rank_examples` probe examples × flattened
                     post-activations; so srank ≤ rank_examples).
  'effective_rank'   'effective_rank/<layer>': exp entropy of σ/‖σ‖₁ of the same matrix.
  'feature_svd'      'feature_top_singular_value', 'feature_condition_number' (σ_max/σ_min) of
                     the penultimate features (`penultimate_layer`, default the last activation
                     layer called), from an exact SVD of the same rows.
  'preact_stats'     'preact_mean/<layer>', 'preact_std/<layer>', 'preact_mean_abs/<layer>': the mean
                     over units of each unit's pre-activation mean, std, and |mean| (drift).
  'preact_hist'      'preact_hist/<layer>': an ARRAY of counts of pre-activation values over the bins
                     of `histogram_edges` (values outside are counted in the end bins).
  'weight_norm'      'weight_norm/<layer>' (Frobenius norm of the layer's kernels), 'weight_norm'
                     (all kernels), 'param_norm' (every parameter).
  'grad_norm'        'grad_norm/<layer>' (kernels), 'grad_norm' (every parameter), on the batch.
  'update_ratio'     'update_ratio/<layer>' = ‖W − W_prev‖/‖W_prev‖, 'update_ratio' (all params).
  'effective_lr'     'effective_lr/<layer>' = η/‖W‖^p, p = `effective_lr_exponent` (2: exact for
                     SGD on scale-invariant layers; ~1 describes Adam).
  'hessian'          'hessian_top_eigenvalue' (power iteration, `hessian_iterations` HVPs) and
                     'hessian_top_eigenvalue_rel_change', |λ_K − λ_{K−1}|/|λ_K| of the last
                     iteration: large means the value has not converged (see `curvature`).
  'ntk'              'ntk_trace', 'ntk_top_eigenvalue', 'ntk_effective_rank', 'ntk_offdiagonal_mass'
                     and 'jacobian_norm' = √(ntk_trace / n) on the first `ntk_examples` (64)
                     inputs (mode `ntk_mode`, see `curvature`; in 'mean' mode both are of the
                     mean output).
  'probe'            'probe_loss', 'probe_loss_fresh': MSE reached on fixed random targets after
                     `probe_steps` Adam steps from the current parameters and from a fresh init.

Diagnostics of your own join these by name with `register_diagnostic`.

Every value is a scalar except 'preact_hist/*'. Keys depend only on the network and the options,
never on values, so a trainer can write them as columns. Inside a vmapped `lax.scan` compute them
in an outer scan over blocks of K steps rather than under `lax.cond` (vmap turns a cond into a
select, which would run the diagnostics every step).

On CPU, the SVD / eigh behind the rank diagnostics run through LAPACK in SciPy's OpenBLAS, whose
thread pool competes with XLA's threads: with its default threads a call was ~10× slower on a busy
2-core host (default set every 100 steps: 2.4× the training time instead of 1.03×). Export
``OPENBLAS_NUM_THREADS=1`` or call `limit_blas_threads()` once in a launcher.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from plasticity import curvature, effective_lr, linalg, networks, param_labels

ACTIVATION_DIAGNOSTICS = (
    "dormant",
    "dead",
    "linearized",
    "dohare_inactive",
    "srank",
    "effective_rank",
    "feature_svd",
    "preact_stats",
    "preact_hist",
)
PARAMETER_DIAGNOSTICS = ("weight_norm", "grad_norm", "update_ratio", "effective_lr")
CURVATURE_DIAGNOSTICS = ("hessian", "ntk", "probe")
ALL_DIAGNOSTICS = ACTIVATION_DIAGNOSTICS + PARAMETER_DIAGNOSTICS + CURVATURE_DIAGNOSTICS

# Cheap enough to run every 100 steps at < 20% overhead (see benchmarks/diagnostics_cost.py):
# one forward and one backward pass on the probe batch plus one SVD per hidden layer.
DEFAULT_DIAGNOSTICS = (
    "dormant",
    "dead",
    "linearized",
    "dohare_inactive",
    "srank",
    "effective_rank",
    "feature_svd",
    "preact_stats",
    "weight_norm",
    "grad_norm",
    "update_ratio",
    "effective_lr",
)

DORMANT_THRESHOLDS = (0.0, 0.025, 0.1)
RANK_METHODS = ("svd", "gram")
HISTOGRAM_EDGES = tuple(float(x) for x in np.linspace(-4.0, 4.0, 33))

ApplyKwargs = Mapping[str, Any] | Callable[[jax.Array], Mapping[str, Any]] | None


@dataclasses.dataclass(frozen=True)
class DiagnosticsOptions:
    """Options of `make_diagnostics_fn` (all keyword arguments; see the module docstring).

    apply_kwargs: extra `model.apply` keyword arguments, or a function rng → such a dict (e.g.
      ``lambda key: {'rngs': {'noise': key}}`` for noisy networks, or ``{'deterministic': True}``).
    output_fn: maps the model's outputs to the array used by the NTK and the probe; the default
      takes the first field of a tuple output (``ValueOutputs.q_values``).
    init_fn: rng, inputs → fresh parameters (probe from a fresh network); the default is
      ``model.init`` with 'params' and 'noise' streams.
    rank_examples: rows of the feature matrices for srank / effective rank / feature SVD (None:
      the whole probe batch). Singular values cost O(n²d); 128 keeps the default set cheap.
    rank_method: 'svd' (default) is the LAPACK SVD, backward stable: every singular value is
      accurate to a few float32 ulps of σ_max, so srank and effective rank are those of the
      matrix up to ~1e-5 relative, exactly low-rank features included. 'gram' takes
      σ = √eig(F Fᵀ) (or FᵀF, the smaller side), ~1.4× cheaper on CPU but squaring F costs half
      the digits: σ below ~√(eps·max(n, d))·σ_max ≈ 5e-3·σ_max come out as noise, which
      inflates the effective rank of rank-1 features to ~1.08 and can add 1 to srank. Use it only
      when the spectrum is known to be well above that floor.
    """

    dormant_thresholds: Sequence[float] = DORMANT_THRESHOLDS
    activity_tolerance: float = 0.0
    dohare_threshold: float = 0.01
    srank_delta: float = 0.01
    rank_examples: int | None = 128
    rank_method: str = "svd"
    penultimate_layer: str | None = None
    effective_lr_exponent: float = 2.0
    histogram_edges: Sequence[float] = HISTOGRAM_EDGES
    hessian_iterations: int = 20
    ntk_examples: int = 64
    ntk_mode: str = "trace"
    probe_steps: int = 200
    probe_learning_rate: float = 1e-3
    probe_target_scale: float = 1.0
    apply_kwargs: ApplyKwargs = None
    output_fn: Callable[[Any], jax.Array] | None = None
    init_fn: Callable[[jax.Array, jax.Array], Any] | None = None


class DiagnosticInputs(NamedTuple):
    """What a diagnostic of your own reads (`register_diagnostic`): the parameters now and
    before the last update, the probe batch and its targets, the scheduled learning rate, the
    hidden layers' activations of one forward pass ({layer: {'preact': ..., 'postact': ...}},
    `networks.hidden_activations`), the training loss ``loss_fn(params, inputs, targets)`` and
    the options."""

    params: Any
    previous_params: Any
    inputs: Any
    targets: Any
    learning_rate: jax.Array
    activations: Mapping[str, Mapping[str, jax.Array]]
    loss_fn: Callable[[Any, Any, Any], jax.Array]
    options: DiagnosticsOptions


_REGISTERED: dict[str, Callable[[DiagnosticInputs], Mapping[str, jax.Array]]] = {}


def register_diagnostic(
    name: str, fn: Callable[[DiagnosticInputs], Mapping[str, jax.Array]]
) -> None:
    """Adds a diagnostic every trainer computes when ``name`` is in its ``diagnostics.names``
    (once the module that registers it is imported, e.g. by an ``--experiment`` file).

    ``fn(DiagnosticInputs) -> {key: scalar}``, pure and jittable, with keys '<name>/<layer>' per
    layer and '<name>' for a total as the built-in ones have (the report draws the per-layer
    keys of a diagnostic no standard figure shows in a figure of its own). A built-in name is
    a ValueError; registering a name again replaces its function (a config file may be loaded
    more than once)."""
    if name in ALL_DIAGNOSTICS:
        raise ValueError(f"{name!r} is a built-in diagnostic; register yours by another name")
    _REGISTERED[name] = fn


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Returns `names` as a tuple if every one is a known diagnostic (built in or registered),
    else a one-line ValueError."""
    if isinstance(names, str):
        raise ValueError(f"Diagnostic names must be a sequence of names, got the string {names!r}.")
    known = ALL_DIAGNOSTICS + tuple(_REGISTERED)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"Unknown diagnostics {unknown}: expected names from {', '.join(known)}.")
    return tuple(names)


def make_options(**options) -> DiagnosticsOptions:
    """A `DiagnosticsOptions` from keyword arguments, refusing unknown or invalid ones."""
    fields = {f.name for f in dataclasses.fields(DiagnosticsOptions)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(
            f"Unknown diagnostics options {unknown}: expected some of {', '.join(sorted(fields))}."
        )
    opts = DiagnosticsOptions(**options)
    if not 0.0 <= opts.activity_tolerance < 0.5:
        raise ValueError(f"activity_tolerance must be in [0, 0.5), got {opts.activity_tolerance}.")
    if not 0.0 < opts.srank_delta < 1.0:
        raise ValueError(f"srank_delta must be in (0, 1), got {opts.srank_delta}.")
    if opts.rank_examples is not None and opts.rank_examples < 1:
        raise ValueError(f"rank_examples must be >= 1 or None, got {opts.rank_examples}.")
    if opts.rank_method not in RANK_METHODS:
        raise ValueError(
            f"Unknown rank_method {opts.rank_method!r}: expected one of {', '.join(RANK_METHODS)}."
        )
    if opts.ntk_examples < 1:
        raise ValueError(f"ntk_examples must be >= 1, got {opts.ntk_examples}.")
    if opts.ntk_mode not in curvature.NTK_MODES:
        raise ValueError(
            f"Unknown ntk_mode {opts.ntk_mode!r}: expected one of {', '.join(curvature.NTK_MODES)}."
        )
    if len(opts.histogram_edges) < 2 or np.any(np.diff(opts.histogram_edges) <= 0):
        raise ValueError("histogram_edges must be at least two increasing values.")
    thresholds = opts.dormant_thresholds
    if isinstance(thresholds, (str, int, float)) or not all(
        isinstance(t, (int, float)) and t >= 0 for t in thresholds
    ):
        raise ValueError(
            f"dormant_thresholds must be a sequence of numbers >= 0, e.g. (0.1,), got {thresholds!r}."
        )
    if not 0.0 <= opts.dohare_threshold < 1.0:  # a fraction of the inputs
        raise ValueError(f"dohare_threshold must be in [0, 1), got {opts.dohare_threshold}.")
    for name in ("hessian_iterations", "probe_steps"):
        if getattr(opts, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(opts, name)}.")
    return opts


# ---------------------------------------------------------------------------------------------
# Model plumbing shared with `plasticity.interventions`.


def resolve_apply_kwargs(apply_kwargs: ApplyKwargs, rng: jax.Array) -> dict[str, Any]:
    """The `model.apply` keyword arguments for this call: a dict, or built from `rng`."""
    if apply_kwargs is None:
        return {}
    if callable(apply_kwargs):
        return dict(apply_kwargs(rng))
    return dict(apply_kwargs)


def first_output(outputs: Any) -> jax.Array:
    """The array of a model's outputs: the first field of a tuple (e.g. Q-values), else itself."""
    if isinstance(outputs, tuple):
        return outputs[0]
    return outputs


def default_init_fn(
    model: nn.Module, apply_kwargs: ApplyKwargs = None
) -> Callable[[jax.Array, jax.Array], Any]:
    """rng, inputs → a fresh 'params' collection from `model.init` ('params' and 'noise' streams)."""

    def init(rng: jax.Array, inputs: jax.Array) -> Any:
        params_rng, noise_rng = jax.random.split(rng)
        kwargs = resolve_apply_kwargs(apply_kwargs, noise_rng)
        kwargs.pop("rngs", None)
        return model.init({"params": params_rng, "noise": noise_rng}, inputs, **kwargs)["params"]

    return init


def param_layer_name(kernel_layer: str) -> str:
    """'hidden_0/linear' → 'hidden_0': names a parameter layer like its activation layer."""
    return kernel_layer[: -len("/linear")] if kernel_layer.endswith("/linear") else kernel_layer


# ---------------------------------------------------------------------------------------------
# Per-layer statistics of activations (each tested against a NumPy reference).


def _per_unit(x: jax.Array) -> jax.Array:
    """(…, units) → (samples, units): batch and spatial axes merged."""
    return x.reshape(-1, x.shape[-1])


def dormant_scores(postact: jax.Array) -> jax.Array:
    """ReDo scores s_i = E|h_i| / mean_k E|h_k| (0 everywhere for an all-zero layer). Scale-free
    however small the layer's activations: no floor on the denominator but zero itself."""
    mean_abs = jnp.mean(jnp.abs(_per_unit(postact)), axis=0)
    layer_mean = jnp.mean(mean_abs)
    positive = layer_mean > 0
    return jnp.where(positive, mean_abs / jnp.where(positive, layer_mean, 1.0), 0.0)


def active_fractions(preact: jax.Array) -> jax.Array:
    """Per unit, the fraction of (example, position) pairs where the pre-activation is > 0."""
    return jnp.mean((_per_unit(preact) > 0).astype(jnp.float32), axis=0)


def dead_units(preact: jax.Array, tolerance: float = 0.0) -> jax.Array:
    """Units (bool) active on at most a fraction `tolerance` of inputs: ReLU gives no gradient."""
    return active_fractions(preact) <= tolerance


def linearized_units(preact: jax.Array, tolerance: float = 0.0) -> jax.Array:
    """Units (bool) active on at least 1 − `tolerance` of inputs: ReLU acts as the identity."""
    return active_fractions(preact) >= 1.0 - tolerance


def feature_matrix(postact: jax.Array) -> jax.Array:
    """(examples, features): each example's post-activations flattened (spatial × channels)."""
    return postact.reshape(postact.shape[0], -1).astype(jnp.float32)


def singular_values(features: jax.Array, method: str = "svd") -> jax.Array:
    """Singular values of a (examples, features) matrix, descending, min(n, d) of them.

    'svd' is accurate to a few float32 ulps of σ_max for every value; 'gram' is √eig of the
    smaller Gram matrix, cheaper but limited by float32 to σ ≳ √(eps·max(n, d))·σ_max (smaller
    ones come out as noise of that size, or 0). See `DiagnosticsOptions.rank_method`. Vmapped on
    a CPU, the decompositions run one matrix at a time (`plasticity.linalg`: a batched LAPACK
    call can deadlock XLA:CPU's thread pool).
    """
    if method == "svd":
        return linalg.svdvals(features)
    n, d = features.shape
    gram = features @ features.T if n <= d else features.T @ features
    eigenvalues = linalg.eigvalsh(gram)[::-1]
    return jnp.sqrt(jnp.clip(eigenvalues, 0.0, None))


def srank(values: jax.Array, delta: float = 0.01) -> jax.Array:
    """Smallest k with Σ_{i≤k} σ_i / Σ σ_i ≥ 1 − δ (Kumar et al. 2021): the same for any positive
    scale of σ; 0 for a zero matrix, NaN for non-finite singular values."""
    total = jnp.sum(values)
    cumulative = jnp.cumsum(values) / jnp.where(total > 0, total, 1.0)
    k = jnp.sum(cumulative < 1.0 - delta) + 1
    rank = jnp.where(total > 0, k, 0).astype(jnp.float32)
    return jnp.where(jnp.isfinite(total), rank, jnp.nan)


def effective_rank(values: jax.Array) -> jax.Array:
    """exp of the entropy of σ/‖σ‖₁ (Roy & Vetterli 2007); 0 for a zero matrix."""
    return curvature.spectrum_effective_rank(values)


def condition_number(values: jax.Array, shape: Sequence[int]) -> jax.Array:
    """σ_max / σ_min over the min(n, d) singular values of an (n, d) matrix; inf (null in
    metrics.jsonl) when σ_min is at most σ_max · max(n, d) · ε (float32): the matrix is singular
    to working precision (numpy's rank tolerance), and any finite ratio would be rounding noise."""
    tolerance = values[0] * max(shape) * jnp.finfo(jnp.float32).eps
    return jnp.where(values[-1] > tolerance, values[0] / values[-1], jnp.inf)


def preact_statistics(preact: jax.Array) -> dict[str, jax.Array]:
    """Mean over units of each unit's mean, std and |mean| of its pre-activations."""
    per_unit = _per_unit(preact).astype(jnp.float32)
    means = jnp.mean(per_unit, axis=0)
    return {
        "preact_mean": jnp.mean(means),
        "preact_std": jnp.mean(jnp.std(per_unit, axis=0)),
        "preact_mean_abs": jnp.mean(jnp.abs(means)),
    }


def histogram_counts(values: jax.Array, edges: Sequence[float]) -> jax.Array:
    """Counts of `values` in the bins [e_i, e_{i+1}); values outside go to the end bins."""
    edges = jnp.asarray(edges, jnp.float32)
    num_bins = edges.shape[0] - 1
    index = jnp.clip(jnp.searchsorted(edges, values.reshape(-1), side="right") - 1, 0, num_bins - 1)
    return jnp.bincount(index, length=num_bins).astype(jnp.float32)


def threshold_key(tau: float) -> str:
    """'dormant_0', 'dormant_0.025', ...: the key prefix for a dormancy threshold."""
    return f"dormant_{tau:g}"


def _fraction_metrics(name: str, masks: dict[str, jax.Array]) -> dict[str, jax.Array]:
    out = {f"{name}/{layer}": jnp.mean(mask.astype(jnp.float32)) for layer, mask in masks.items()}
    total_units = sum(mask.size for mask in masks.values())
    if total_units:
        out[name] = sum(jnp.sum(mask.astype(jnp.float32)) for mask in masks.values()) / total_units
    return out


def activation_metrics(
    activations: dict[str, dict[str, jax.Array]], names: Sequence[str], opts: DiagnosticsOptions
) -> dict[str, jax.Array]:
    """The activation diagnostics in `names` from `networks.hidden_activations` output."""
    out: dict[str, jax.Array] = {}
    layers = {
        layer: acts for layer, acts in activations.items() if "preact" in acts and "postact" in acts
    }
    if "dormant" in names:
        scores = {layer: dormant_scores(acts["postact"]) for layer, acts in layers.items()}
        for tau in opts.dormant_thresholds:
            out.update(
                _fraction_metrics(
                    threshold_key(tau), {layer: s <= tau for layer, s in scores.items()}
                )
            )
    fractions = {layer: active_fractions(acts["preact"]) for layer, acts in layers.items()}
    if "dead" in names:
        out.update(
            _fraction_metrics(
                "dead", {layer: a <= opts.activity_tolerance for layer, a in fractions.items()}
            )
        )
    if "linearized" in names:
        out.update(
            _fraction_metrics(
                "linearized",
                {layer: a >= 1.0 - opts.activity_tolerance for layer, a in fractions.items()},
            )
        )
    if "dohare_inactive" in names:
        out.update(
            _fraction_metrics(
                "dohare_inactive",
                {layer: a < opts.dohare_threshold for layer, a in fractions.items()},
            )
        )
    if {"srank", "effective_rank", "feature_svd"} & set(names):
        penultimate = opts.penultimate_layer or (list(layers)[-1] if layers else None)
        if penultimate is not None and penultimate not in layers:
            raise ValueError(
                f"penultimate_layer {penultimate!r} is not an activation layer: "
                f"expected one of {', '.join(layers)}."
            )
        for layer, acts in layers.items():
            features = feature_matrix(acts["postact"][: opts.rank_examples])
            wants_svd = "feature_svd" in names and layer == penultimate
            exact = singular_values(features, "svd") if wants_svd else None
            if "srank" in names or "effective_rank" in names:
                reuse = exact is not None and opts.rank_method == "svd"
                values = exact if reuse else singular_values(features, opts.rank_method)
                if "srank" in names:
                    out[f"srank/{layer}"] = srank(values, opts.srank_delta)
                if "effective_rank" in names:
                    out[f"effective_rank/{layer}"] = effective_rank(values)
            if wants_svd:
                out["feature_top_singular_value"] = exact[0]
                out["feature_condition_number"] = condition_number(exact, features.shape)
    if "preact_stats" in names:
        for layer, acts in layers.items():
            for key, value in preact_statistics(acts["preact"]).items():
                out[f"{key}/{layer}"] = value
    if "preact_hist" in names:
        for layer, acts in layers.items():
            out[f"preact_hist/{layer}"] = histogram_counts(acts["preact"], opts.histogram_edges)
    return out


# ---------------------------------------------------------------------------------------------
# Per-layer statistics of parameters.


def _global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(
        sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree))
    )


def kernel_norms_by_layer(tree: Any, layers: dict[str, list[tuple]]) -> dict[str, jax.Array]:
    """{parameter layer: joint Frobenius norm of its kernel leaves in `tree`}."""
    flat = traverse_util.flatten_dict(tree)
    return {
        param_layer_name(layer): jnp.sqrt(sum(jnp.sum(jnp.square(flat[p])) for p in paths))
        for layer, paths in layers.items()
    }


def parameter_metrics(
    params: Any,
    previous_params: Any,
    grads: Any | None,
    learning_rate,
    names: Sequence[str],
    opts: DiagnosticsOptions,
) -> dict[str, jax.Array]:
    """Weight norms, gradient norms, update ratios and effective learning rates per layer."""
    out: dict[str, jax.Array] = {}
    layers = param_labels.kernel_layers(params)
    norms = kernel_norms_by_layer(params, layers)
    if "weight_norm" in names:
        out.update({f"weight_norm/{layer}": norm for layer, norm in norms.items()})
        out["weight_norm"] = jnp.sqrt(sum(jnp.square(norm) for norm in norms.values()))
        out["param_norm"] = _global_norm(params)
    if "grad_norm" in names:
        grad_norms = kernel_norms_by_layer(grads, layers)
        out.update({f"grad_norm/{layer}": norm for layer, norm in grad_norms.items()})
        out["grad_norm"] = _global_norm(grads)
    if "update_ratio" in names:
        ratios = effective_lr.relative_update_norms(previous_params, params)
        out.update({f"update_ratio/{param_layer_name(layer)}": r for layer, r in ratios.items()})
        delta = jax.tree_util.tree_map(jnp.subtract, params, previous_params)
        out["update_ratio"] = _global_norm(delta) / jnp.maximum(
            _global_norm(previous_params), 1e-12
        )
    if "effective_lr" in names:
        rate = jnp.asarray(learning_rate, jnp.float32)
        out.update(
            {
                f"effective_lr/{layer}": rate
                / jnp.maximum(norm, 1e-12) ** opts.effective_lr_exponent
                for layer, norm in norms.items()
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# The compiled entry point.


def make_diagnostics_fn(
    model: nn.Module,
    loss_fn: Callable[[Any, Any, Any], jax.Array],
    names: Sequence[str] = DEFAULT_DIAGNOSTICS,
    **options,
) -> Callable[..., dict[str, jax.Array]]:
    """Builds fn(params, previous_params, inputs, targets, rng, learning_rate) → flat metrics.

    `names` picks diagnostics from `ALL_DIAGNOSTICS` (default `DEFAULT_DIAGNOSTICS`); `options`
    are the fields of `DiagnosticsOptions`. Unknown names or options raise a ValueError here, at
    build time. The returned function is pure (jit it, vmap it over seeds).
    """
    names = check_names(names)
    opts = make_options(**options)
    output_fn = opts.output_fn or first_output
    init_fn = opts.init_fn or default_init_fn(model, opts.apply_kwargs)
    registered = [name for name in names if name in _REGISTERED]
    wants_activations = bool(set(names) & set(ACTIVATION_DIAGNOSTICS)) or bool(registered)
    wants_parameters = bool(set(names) & set(PARAMETER_DIAGNOSTICS))

    def diagnostics(params, previous_params, inputs, targets, rng, learning_rate):
        apply_rng, hessian_rng, probe_rng = jax.random.split(rng, 3)
        apply_kwargs = resolve_apply_kwargs(opts.apply_kwargs, apply_rng)
        out: dict[str, jax.Array] = {}
        if wants_activations:
            _, activations = networks.hidden_activations(
                model, {"params": params}, inputs, **apply_kwargs
            )
            out.update(activation_metrics(activations, names, opts))
            seen = DiagnosticInputs(
                params, previous_params, inputs, targets, learning_rate, activations, loss_fn, opts
            )
            for name in registered:
                out.update(_REGISTERED[name](seen))
        if wants_parameters:
            grads = jax.grad(loss_fn)(params, inputs, targets) if "grad_norm" in names else None
            out.update(
                parameter_metrics(params, previous_params, grads, learning_rate, names, opts)
            )
        if "hessian" in names:
            value, change = curvature.hessian_power_iteration(
                lambda p: loss_fn(p, inputs, targets), params, hessian_rng, opts.hessian_iterations
            )
            out["hessian_top_eigenvalue"] = value
            out["hessian_top_eigenvalue_rel_change"] = change

        def predict(p, x):
            outputs = output_fn(model.apply({"params": p}, x, **apply_kwargs))
            return outputs.reshape(x.shape[0], -1).astype(jnp.float32)

        if "ntk" in names:
            ntk_inputs = inputs[: opts.ntk_examples]
            out.update(
                curvature.ntk_statistics(
                    curvature.empirical_ntk(predict, params, ntk_inputs, opts.ntk_mode)
                )
            )
        if "probe" in names:
            target_rng, init_rng = jax.random.split(probe_rng)
            shape = jax.eval_shape(predict, params, inputs).shape
            probe_targets = opts.probe_target_scale * jax.random.normal(target_rng, shape)
            fit = lambda p: curvature.plasticity_probe_loss(
                predict, p, inputs, probe_targets, opts.probe_steps, opts.probe_learning_rate
            )
            out["probe_loss"] = fit(params)
            out["probe_loss_fresh"] = fit(init_fn(init_rng, inputs))
        return out

    return diagnostics


def diagnostic_keys(
    model: nn.Module,
    loss_fn: Callable,
    params: Any,
    inputs: Any,
    targets: Any,
    names: Sequence[str] = DEFAULT_DIAGNOSTICS,
    **options,
) -> list[str]:
    """The keys `make_diagnostics_fn(...)` writes for this network and batch (shape-only trace)."""
    fn = make_diagnostics_fn(model, loss_fn, names, **options)
    shapes = jax.eval_shape(fn, params, params, inputs, targets, jax.random.key(0), 1.0)
    return sorted(shapes)


def limit_blas_threads(threads: int = 1):
    """Limits the BLAS/LAPACK thread pools already loaded in this process (SciPy's OpenBLAS, used
    by XLA:CPU for SVD and eigh) to `threads`; returns the `threadpoolctl` limiter (call its
    ``restore_original_limits()`` to undo). Needs `threadpoolctl` (a scikit-learn dependency)."""
    try:
        import threadpoolctl  # noqa: PLC0415 - optional, only launchers call this
    except ImportError as error:
        raise ValueError(
            "limit_blas_threads needs threadpoolctl (pip install threadpoolctl), or export "
            "OPENBLAS_NUM_THREADS=1 before starting Python."
        ) from error
    jnp.linalg.svd(jnp.ones((2, 2)))  # loads the LAPACK library so that its pool can be limited
    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
