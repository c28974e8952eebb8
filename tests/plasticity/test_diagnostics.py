"""Diagnostics against NumPy references: activations, ranks, norms, curvature, NTK, probe."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity import curvature, diagnostics, networks

NET = networks.MLP((6, 5), 3, "none")
X = np.random.default_rng(0).standard_normal((48, 4)).astype(np.float32)
Y = np.random.default_rng(1).standard_normal((48, 3)).astype(np.float32)
TAUS = (0.0, 0.025, 0.1, 0.5)
EDGES = tuple(np.linspace(-2.0, 2.0, 9))
LEARNING_RATE = 3e-3


def _random_params(model, x, seed):
    """Parameters drawn with NumPy (compiling `model.init` is slow on a small CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: (
            jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(max(s.shape[0], 1)), jnp.float32)
            if len(s.shape) > 1
            else jnp.asarray(0.1 * rng.standard_normal(s.shape), jnp.float32)
        ),
        shapes,
    )


def _planted(seed=2):
    """hidden_0: unit 0 dead (bias −100), unit 1 linearized (bias +100)."""
    params = _random_params(NET, X, seed)
    bias = params["hidden_0"]["linear"]["bias"].at[0].set(-100.0).at[1].set(100.0)
    params["hidden_0"]["linear"]["bias"] = bias
    return params


def _mse(params, inputs, targets):
    out = NET.apply({"params": params}, inputs)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(out - targets), axis=-1))


@functools.lru_cache(maxsize=None)
def _compiled(names, **options):
    return jax.jit(diagnostics.make_diagnostics_fn(NET, _mse, names, **options))


DEFAULT_FN = functools.partial(
    _compiled,
    diagnostics.DEFAULT_DIAGNOSTICS + ("preact_hist",),
    dormant_thresholds=TAUS,
    histogram_edges=EDGES,
)


def _numpy(params):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)


def _numpy_forward(p, x):
    pre0 = x @ p["hidden_0"]["linear"]["kernel"] + p["hidden_0"]["linear"]["bias"]
    h0 = np.maximum(pre0, 0)
    pre1 = h0 @ p["hidden_1"]["linear"]["kernel"] + p["hidden_1"]["linear"]["bias"]
    h1 = np.maximum(pre1, 0)
    out = h1 @ p["output"]["kernel"] + p["output"]["bias"]
    return {"hidden_0": (pre0, h0), "hidden_1": (pre1, h1)}, out


def _numpy_grads(p, x, y):
    acts, out = _numpy_forward(p, x)
    (pre0, h0), (pre1, h1) = acts["hidden_0"], acts["hidden_1"]
    d_out = (out - y) / x.shape[0]
    d_pre1 = (d_out @ p["output"]["kernel"].T) * (pre1 > 0)
    d_pre0 = (d_pre1 @ p["hidden_1"]["linear"]["kernel"].T) * (pre0 > 0)
    return {
        "output": {"kernel": h1.T @ d_out, "bias": d_out.sum(0)},
        "hidden_1": {"linear": {"kernel": h0.T @ d_pre1, "bias": d_pre1.sum(0)}},
        "hidden_0": {"linear": {"kernel": x.T @ d_pre0, "bias": d_pre0.sum(0)}},
    }


def _srank(s, delta=0.01):
    ratios = np.cumsum(s) / s.sum()
    return int(np.argmax(ratios >= 1 - delta)) + 1


def _effective_rank(s):
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _kernel(p, layer):
    return p[layer]["kernel"] if layer == "output" else p[layer]["linear"]["kernel"]


def test_every_default_diagnostic_matches_numpy_on_a_planted_network():
    params = _planted()
    previous = jax.tree_util.tree_map(
        lambda a: a + 0.01 * np.random.default_rng(3).standard_normal(a.shape).astype(np.float32),
        params,
    )
    out = DEFAULT_FN()(params, previous, X, Y, jax.random.key(0), LEARNING_RATE)
    p, prev = _numpy(params), _numpy(previous)
    acts, _ = _numpy_forward(p, X.astype(np.float64))
    check = lambda key, value: np.testing.assert_allclose(
        out[key], value, rtol=2e-4, atol=1e-5, err_msg=key
    )
    units = {}
    for layer, (pre, post) in acts.items():
        mean_abs = np.abs(post).mean(0)
        scores = mean_abs / mean_abs.mean()
        active = (pre > 0).mean(0)
        units[layer] = {"dead": active <= 0, "linearized": active >= 1, "inactive": active < 0.01}
        for tau in TAUS:
            check(f"dormant_{tau:g}/{layer}", np.mean(scores <= tau))
        for name, mask in (
            ("dead", active <= 0),
            ("linearized", active >= 1),
            ("dohare_inactive", active < 0.01),
        ):
            check(f"{name}/{layer}", mask.mean())
        s = np.linalg.svd(post, compute_uv=False)
        check(f"srank/{layer}", _srank(s))
        check(f"effective_rank/{layer}", _effective_rank(s))
        check(f"preact_mean/{layer}", pre.mean(0).mean())
        check(f"preact_std/{layer}", pre.std(0).mean())
        check(f"preact_mean_abs/{layer}", np.abs(pre.mean(0)).mean())
        counts, _ = np.histogram(np.clip(pre, EDGES[0], EDGES[-1] - 1e-9), bins=np.array(EDGES))
        np.testing.assert_array_equal(out[f"preact_hist/{layer}"], counts)
    # The planted units are what the fractions count.
    assert units["hidden_0"]["dead"][0] and units["hidden_0"]["linearized"][1]
    assert out["dead/hidden_0"] >= 1 / 6 and out["linearized/hidden_0"] >= 1 / 6
    assert out["dormant_0/hidden_0"] >= 1 / 6
    for name in ("dead", "linearized"):
        total = sum(units[layer][name].sum() for layer in units) / 11
        check(name, total)
    s = np.linalg.svd(acts["hidden_1"][1], compute_uv=False)
    check("feature_top_singular_value", s[0])
    if s[-1] > 1e-3 * s[0]:
        check("feature_condition_number", s[0] / s[-1])
    else:  # a dead unit makes the features singular: infinitely ill-conditioned
        assert float(out["feature_condition_number"]) == np.inf

    grads = _numpy_grads(p, X.astype(np.float64), Y.astype(np.float64))
    all_sq = lambda tree: sum(np.sum(a**2) for a in jax.tree_util.tree_leaves(tree))
    for layer in ("hidden_0", "hidden_1", "output"):
        w, w_prev = _kernel(p, layer), _kernel(prev, layer)
        check(f"weight_norm/{layer}", np.linalg.norm(w))
        check(f"grad_norm/{layer}", np.linalg.norm(_kernel(grads, layer)))
        check(f"update_ratio/{layer}", np.linalg.norm(w - w_prev) / np.linalg.norm(w_prev))
        check(f"effective_lr/{layer}", LEARNING_RATE / np.linalg.norm(w) ** 2)
    check(
        "weight_norm",
        np.sqrt(sum(np.sum(_kernel(p, l) ** 2) for l in ("hidden_0", "hidden_1", "output"))),
    )
    check("param_norm", np.sqrt(all_sq(p)))
    check("grad_norm", np.sqrt(all_sq(grads)))
    delta = jax.tree_util.tree_map(np.subtract, p, prev)
    check("update_ratio", np.sqrt(all_sq(delta) / all_sq(prev)))


def test_keys_are_fixed_by_the_network_and_options():
    keys = diagnostics.diagnostic_keys(NET, _mse, _planted(), X, Y)
    per_layer = [
        "dead",
        "dohare_inactive",
        "dormant_0",
        "dormant_0.025",
        "dormant_0.1",
        "effective_rank",
        "linearized",
        "preact_mean",
        "preact_mean_abs",
        "preact_std",
        "srank",
    ]
    expected = {f"{m}/{l}" for m in per_layer for l in ("hidden_0", "hidden_1")}
    expected |= {
        f"{m}/{l}"
        for m in ("weight_norm", "grad_norm", "update_ratio", "effective_lr")
        for l in ("hidden_0", "hidden_1", "output")
    }
    expected |= {
        "dead",
        "dohare_inactive",
        "dormant_0",
        "dormant_0.025",
        "dormant_0.1",
        "linearized",
        "feature_top_singular_value",
        "feature_condition_number",
        "weight_norm",
        "param_norm",
        "grad_norm",
        "update_ratio",
    }
    assert set(keys) == expected


def test_vmapped_over_seeds_equals_per_seed():
    seeds = [4, 5, 6]
    params = [_planted(s) for s in seeds]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params)
    rngs = jax.random.split(jax.random.key(1), 3)
    fn = diagnostics.make_diagnostics_fn(
        NET,
        _mse,
        diagnostics.DEFAULT_DIAGNOSTICS + ("preact_hist",),
        dormant_thresholds=TAUS,
        histogram_edges=EDGES,
    )
    batched = jax.jit(jax.vmap(fn, in_axes=(0, 0, None, None, 0, None)))(
        stacked, stacked, X, Y, rngs, LEARNING_RATE
    )
    # The two programs may round a sum differently (≤ 3e-7 relative measured, e.g. preact_mean);
    # the ranks come from the same LAPACK SVD per matrix and agree bit for bit. (The Gram route
    # once made this test fail: √eig of a float32 Gram matrix turns rounding differences of 1e-7
    # into 1e-3·σ_max noise singular values, moving effective_rank by 1.3e-5.)
    for i, p in enumerate(params):
        single = DEFAULT_FN()(p, p, X, Y, rngs[i], LEARNING_RATE)
        assert set(single) == set(batched)
        for key, value in single.items():
            np.testing.assert_allclose(batched[key][i], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_rank_statistics_of_known_spectra():
    rng = np.random.default_rng(7)
    u, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    v, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    for spectrum in (
        [3.0, 3.0, 3.0] + [0.0] * 9,
        [10.0, 5.0, 2.0, 1.0, 0.5, 0.05] + [0.0] * 6,
        list(np.geomspace(1.0, 1e-3, 12)),
    ):
        s = np.asarray(spectrum)
        features = (u[:, :12] * s) @ v.T
        values = np.asarray(diagnostics.singular_values(jnp.asarray(features, jnp.float32)))
        np.testing.assert_allclose(values, s, atol=1e-5)
        for matrix in (features, features.T):  # the Gram route takes the smaller side
            gram = diagnostics.singular_values(jnp.asarray(matrix, jnp.float32), "gram")
            np.testing.assert_allclose(gram, s, atol=2e-3 * s[0])
        assert int(diagnostics.srank(jnp.asarray(s))) == _srank(s)
        np.testing.assert_allclose(
            diagnostics.effective_rank(jnp.asarray(s)), _effective_rank(s), rtol=1e-5
        )
    flat = jnp.asarray([3.0, 3.0, 3.0, 0.0])
    assert int(diagnostics.srank(flat)) == 3
    np.testing.assert_allclose(diagnostics.effective_rank(flat), 3.0, rtol=1e-6)
    assert float(diagnostics.srank(jnp.zeros(4))) == 0.0
    # Both ranks ignore the spectrum's scale, down to totals below 1e-30; NaN in, NaN out.
    decaying = np.asarray([3.0, 2.0, 1.0, 0.5])
    for scale in (1e-20, 1e-33, 1e-36):
        tiny = jnp.asarray(decaying * scale, jnp.float32)
        assert int(diagnostics.srank(tiny)) == _srank(decaying)
        np.testing.assert_allclose(
            diagnostics.effective_rank(tiny), _effective_rank(decaying), rtol=1e-5
        )
    nan = jnp.asarray([3.0, np.nan, 1.0])
    assert np.isnan(diagnostics.srank(nan)) and np.isnan(diagnostics.effective_rank(nan))
    np.testing.assert_allclose(
        diagnostics.condition_number(jnp.asarray([4.0, 2.0, 0.5]), (8, 3)), 8.0
    )


def _entropy_error_bound(s, ulps=8.0):
    """A float32 bound on |Δ log effective rank| for a computed spectrum of true spectrum `s`.

    The SVD is backward stable: every computed σ is within c·eps·σ_max of the exact one (Weyl),
    with c a small constant covering the SVD's backward error and the rounding of F's entries to
    float32 (measured ≤ 1.3 on these 128 × 256 matrices; `ulps` = 8 here). With
    Δ = c·eps·σ_max/Σσ, each p_i = σ_i/Σσ moves by ≤ Δ + p_i·kΔ, and p log p moves by at most
    its slope 1 + |log p| (taken at max(p, Δ)) times that: the bound is their sum.
    """
    s = np.asarray(s, np.float64)
    p = s / s.sum()
    delta = ulps * np.finfo(np.float32).eps * s[0] / s.sum()
    slope = 1.0 + np.abs(np.log(np.maximum(p, delta)))
    return float(np.sum((delta + p * len(s) * delta) * slope))


@pytest.mark.parametrize("shape", [(128, 256), (48, 12)])
def test_default_rank_method_is_exact_on_low_rank_and_geometric_spectra(shape):
    """srank and effective rank of F = U diag(σ) Vᵀ with known σ, through the default options.

    Rank 1, 2, 5, full and geometric spectra: srank must equal NumPy's on σ exactly (every case
    keeps the cumulative sum ≥ 1e-4 away from 1 − δ, far above float32 error) and the effective
    rank must be within the float32 bound above (≤ 2e-3, and ≤ 1e-5 for full rank); the Gram
    route misses these by 4e-2 to 1e-1 (1.08 for rank 1) and by one in srank.
    """
    n, d = shape
    k = min(n, d)
    rng = np.random.default_rng(30)
    u, _ = np.linalg.qr(rng.standard_normal((n, k)))
    v, _ = np.linalg.qr(rng.standard_normal((d, k)))
    pad = lambda values: np.concatenate([values, np.zeros(k - len(values))])
    spectra = {
        "rank 1": pad([1.0]),
        "rank 2": pad([3.0, 1.0]),
        "rank 5": pad([5.0, 4.0, 3.0, 2.0, 1.0]),
        "full rank": np.ones(k),
        "geometric 0.5": 0.5 ** np.arange(k),
        "geometric 0.9": 0.9 ** np.arange(k),
    }
    opts = diagnostics.make_options()
    for name, s in spectra.items():
        cumulative = np.cumsum(s) / s.sum()
        assert np.min(np.abs(cumulative - (1 - opts.srank_delta))) > 1e-4, name  # no near-tie
        features = jnp.asarray((u * s) @ v.T, jnp.float32)
        acts = {"layer": {"preact": features, "postact": features}}
        out = diagnostics.activation_metrics(acts, ("srank", "effective_rank"), opts)
        assert int(out["srank/layer"]) == _srank(s), name
        expected = _effective_rank(s)
        bound = _entropy_error_bound(s)
        assert bound < 2e-3, name
        np.testing.assert_allclose(
            out["effective_rank/layer"], expected, rtol=bound, atol=0, err_msg=name
        )


def test_conv_activations_average_over_batch_and_positions():
    rng = np.random.default_rng(8)
    pre = rng.standard_normal((5, 3, 3, 4)).astype(np.float32)
    pre[..., 2] -= 10.0  # never active
    post = np.maximum(pre, 0)
    flat_pre, flat_post = pre.reshape(-1, 4), post.reshape(-1, 4)
    mean_abs = np.abs(flat_post).mean(0)
    np.testing.assert_allclose(
        diagnostics.dormant_scores(jnp.asarray(post)), mean_abs / mean_abs.mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        diagnostics.active_fractions(jnp.asarray(pre)), (flat_pre > 0).mean(0), rtol=1e-6
    )
    np.testing.assert_array_equal(diagnostics.dead_units(jnp.asarray(pre)), [0, 0, 1, 0])
    np.testing.assert_array_equal(diagnostics.feature_matrix(jnp.asarray(post)).shape, (5, 36))
    edges = (-1.0, 0.0, 0.5, 1.0)
    counts, _ = np.histogram(np.clip(pre, -1.0, 1.0 - 1e-9), bins=np.array(edges))
    np.testing.assert_array_equal(diagnostics.histogram_counts(jnp.asarray(pre), edges), counts)


def test_condition_number_is_infinite_only_for_numerically_singular_features():
    """σ₁/σ_min against float64 NumPy for well-conditioned features; inf, not σ₁ over a floor,
    once a zero feature makes them singular (a dormant unit's column)."""
    features = np.random.default_rng(13).standard_normal((64, 16)).astype(np.float32)
    values = np.linalg.svd(features.astype(np.float64), compute_uv=False)
    ratio = diagnostics.condition_number(jnp.asarray(values, jnp.float32), features.shape)
    np.testing.assert_allclose(float(ratio), values[0] / values[-1], rtol=1e-5)
    features[:, 5] = 0.0
    exact = diagnostics.singular_values(jnp.asarray(features), "svd")
    assert float(diagnostics.condition_number(exact, features.shape)) == np.inf
    # The threshold is NumPy's rank tolerance σ₁·max(n, d)·ε: a (64, 16) matrix whose σ_min lies
    # between σ₁·16·ε and σ₁·64·ε is singular to working precision (inf), one just above is not.
    eps = float(np.finfo(np.float32).eps)
    planted = lambda smallest: jnp.asarray([1.0, 0.5, smallest], jnp.float32)
    assert float(diagnostics.condition_number(planted(32 * eps), (64, 16))) == np.inf
    ratio = diagnostics.condition_number(planted(128 * eps), (64, 16))
    np.testing.assert_allclose(float(ratio), 1 / (128 * eps), rtol=1e-6)


def test_dormant_scores_do_not_depend_on_the_layers_scale():
    """The score is a ratio: a layer scaled by 1e-12 (float32 normal numbers still) scores as it
    does at scale 1, and only an all-zero layer scores 0 everywhere."""
    post = np.abs(np.random.default_rng(12).standard_normal((64, 16))).astype(np.float32)
    post[:, 3] *= 0.01  # one dormant unit
    reference = np.abs(post.astype(np.float64)).mean(0)
    reference /= reference.mean()
    for scale in (1.0, 1e-6, 1e-12):
        scores = diagnostics.dormant_scores(jnp.asarray(post * np.float32(scale)))
        np.testing.assert_allclose(scores, reference, rtol=1e-5, err_msg=f"scale {scale}")
    np.testing.assert_array_equal(diagnostics.dormant_scores(jnp.zeros((8, 5))), np.zeros(5))


def test_hessian_top_eigenvalue_matches_dense_eigendecomposition():
    model = networks.MLP((4,), 2, "none")
    x = np.random.default_rng(9).standard_normal((16, 3)).astype(np.float32)
    y = np.random.default_rng(10).standard_normal((16, 2)).astype(np.float32)
    params = _random_params(model, x, 11)
    loss = lambda p, inputs, targets: jnp.mean(
        jnp.square(model.apply({"params": p}, inputs) - targets)
    )
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    dense = np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), x, y)))(flat), np.float64)
    eigenvalues = np.linalg.eigvalsh((dense + dense.T) / 2)
    top = eigenvalues[np.argmax(np.abs(eigenvalues))]
    fn = jax.jit(diagnostics.make_diagnostics_fn(model, loss, ("hessian",), hessian_iterations=200))
    out = fn(params, params, x, y, jax.random.key(12), 0.1)
    np.testing.assert_allclose(out["hessian_top_eigenvalue"], top, rtol=1e-3)
    assert 0.0 <= float(out["hessian_top_eigenvalue_rel_change"]) < 1e-3


def test_curvature_runs_in_the_parameters_float_type():
    """bfloat16 parameters: the power iteration and the NTK carry their own float type (a fixed
    float32 carry was a type error in the loop)."""
    params = {"w": jnp.asarray([1.0, 2.0, 3.0], jnp.bfloat16)}
    loss = lambda p: jnp.sum(jnp.asarray([1.0, 2.0, 3.0], jnp.bfloat16) * p["w"] ** 2)
    value, _ = curvature.hessian_power_iteration(loss, params, jax.random.key(0), 30)
    assert value.dtype == jnp.bfloat16 and float(value) == pytest.approx(6.0, rel=2e-2)
    kernel = curvature.empirical_ntk(
        lambda p, x: x * p["w"], params, jnp.ones((2, 3), jnp.bfloat16)
    )
    assert kernel.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(kernel, np.float32), 3.0)  # Σ_c (∂x_c w_c / ∂w_c)² = 3


def test_curvature_building_blocks_against_hand_computed_values():
    """A random direction has unit global norm over all leaves; the NTK of x ↦ x·W pairs each
    example with its own row (K = X Xᵀ summed over the C outputs: C · X Xᵀ); an indefinite kernel's
    negative eigenvalue is clipped, so [[0, 1], [1, 0]] has effective rank 1; a zero spectrum has
    rank 0 (a dead layer), not 1; zero iterations or probe steps and an unknown NTK mode are
    refused."""
    direction = curvature.random_direction(
        {"w": jnp.ones(7), "b": jnp.ones((2, 3))}, jax.random.key(0)
    )
    total = sum(float(jnp.sum(jnp.square(leaf))) for leaf in jax.tree.leaves(direction))
    assert total == pytest.approx(1.0, rel=1e-6)
    x = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    kernel = curvature.empirical_ntk(lambda w, x: x @ w, jnp.ones((3, 2)), x)
    np.testing.assert_allclose(kernel, 2.0 * np.diag([1.0, 4.0]))
    indefinite = curvature.ntk_statistics(jnp.asarray([[0.0, 1.0], [1.0, 0.0]]))
    assert float(indefinite["ntk_effective_rank"]) == pytest.approx(1.0, rel=1e-6)
    assert float(diagnostics.effective_rank(jnp.zeros(4))) == 0.0
    square = lambda p: jnp.sum(p**2)  # noqa: E731
    with pytest.raises(ValueError, match="hessian_iterations must be >= 1, got 0"):
        curvature.hessian_power_iteration(square, jnp.ones(2), jax.random.key(0), 0)
    with pytest.raises(ValueError, match="probe_steps must be >= 1, got 0"):
        curvature.plasticity_probe_loss(lambda p, x: x * p, jnp.ones(()), x, x, 0)
    with pytest.raises(ValueError, match="Unknown NTK mode 'full'"):
        curvature.empirical_ntk(lambda w, x: x @ w, jnp.ones((3, 2)), x, "full")


@pytest.mark.parametrize("ratio", [0.89, 0.3])
def test_hessian_power_iteration_reports_its_last_relative_change(ratio):
    """On L(θ) = ½θᵀAθ with known eigenvalues (λ₁ = 1, λ₂ = `ratio`), 20 iterations: value and
    relative change equal a float64 NumPy power iteration from the same start; with λ₂/λ₁ = 0.89
    the value is ~1% low and the change says so (the error lies between the change and
    change/(1 − (λ₂/λ₁)²)); with 0.3 both are at float32 rounding."""
    eigenvalues = np.array([1.0, ratio, 0.25, 0.2, 0.1, 0.05, 0.02, 0.01])
    q, _ = np.linalg.qr(np.random.default_rng(31).standard_normal((8, 8)))
    a = (q * eigenvalues) @ q.T
    loss = lambda p: 0.5 * p["w"] @ jnp.asarray(a, jnp.float32) @ p["w"]
    params, key = {"w": jnp.ones(8, jnp.float32)}, jax.random.key(32)
    run = jax.jit(lambda p, k: curvature.hessian_power_iteration(loss, p, key, k), static_argnums=1)
    value, change = run(params, 20)
    vector = np.asarray(curvature.random_direction(params, key)["w"], np.float64)
    previous = current = 0.0
    for _ in range(20):
        product = a @ vector
        previous, current = current, vector @ product
        vector = product / np.linalg.norm(product)
    np.testing.assert_allclose(value, current, rtol=1e-5)
    error = 1.0 - float(value)
    if ratio == 0.89:
        expected_change = abs(current - previous) / current
        # float32 λ carries ~1e-7 absolute error, ≤ 1e-3 of a change of 6e-4.
        np.testing.assert_allclose(change, expected_change, rtol=1e-2)
        assert error > 1e-3  # 20 iterations are not enough here
        assert float(change) < error < float(change) / (1 - ratio**2)
    else:
        assert float(change) < 1e-6 and abs(error) < 1e-6
    assert float(run(params, 1)[1]) == 1.0  # one iteration: nothing to compare with


def _numpy_ntk(p, x, mode):
    """K for f(x) = W₂ᵀ relu(W₁ᵀx + b₁) + b₂, written out by hand."""
    w1, b1, w2 = (
        p["hidden_0"]["linear"]["kernel"],
        p["hidden_0"]["linear"]["bias"],
        p["output"]["kernel"],
    )
    pre = x @ w1 + b1
    h, gate = np.maximum(pre, 0), (pre > 0).astype(np.float64)
    outputs = w2.shape[1]
    inputs_term = x @ x.T + 1.0
    features_term = h @ h.T + 1.0
    if mode == "trace":
        w2_sq = (w2**2).sum(1)
        return outputs * features_term + inputs_term * ((gate * w2_sq) @ gate.T)
    w2_mean = w2.mean(1)
    return features_term / outputs + inputs_term * ((gate * w2_mean**2) @ gate.T)


@pytest.mark.parametrize("mode", ["trace", "mean"])
def test_ntk_statistics_match_the_analytic_kernel(mode):
    model = networks.MLP((7,), 3, "none")
    x = np.random.default_rng(13).standard_normal((12, 4)).astype(np.float32)
    params = _random_params(model, x, 14)
    fn = jax.jit(
        diagnostics.make_diagnostics_fn(
            model, lambda *a: 0.0, ("ntk",), ntk_examples=9, ntk_mode=mode
        )
    )
    out = fn(params, params, x, None, jax.random.key(0), 0.1)
    kernel = _numpy_ntk(_numpy(params), x[:9].astype(np.float64), mode)
    eigenvalues = np.clip(np.linalg.eigvalsh(kernel), 0, None)
    off = np.abs(kernel).sum() - np.abs(np.diag(kernel)).sum()
    expected = {
        "ntk_trace": np.trace(kernel),
        "ntk_top_eigenvalue": eigenvalues[-1],
        "ntk_effective_rank": _effective_rank(eigenvalues),
        "ntk_offdiagonal_mass": off / np.abs(kernel).sum(),
        "jacobian_norm": np.sqrt(np.trace(kernel) / 9),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(out[key], value, rtol=1e-4, err_msg=key)


def test_probe_matches_a_numpy_adam_fit():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((20, 5))
    targets = rng.standard_normal((20, 2))
    w = rng.standard_normal((5, 2))
    steps, lr, b1, b2, eps = 30, 0.05, 0.9, 0.999, 1e-8
    m, v, p = np.zeros_like(w), np.zeros_like(w), w.copy()
    for t in range(1, steps + 1):
        g = 2.0 * x.T @ (x @ p - targets) / targets.size
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    expected = np.mean((x @ p - targets) ** 2)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    got = jax.jit(
        lambda w0: curvature.plasticity_probe_loss(
            lambda q, inputs: inputs @ q, w0, f32(x), f32(targets), steps, lr
        )
    )(f32(w))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_probe_loses_plasticity_on_a_dead_network():
    """Same targets and budget for both probes; a network whose hidden units are all dead can only
    move its output bias, so it fits worse than a healthy one."""
    healthy = _random_params(NET, X, 19)
    dead = jax.tree_util.tree_map(lambda a: a, healthy)
    for layer in ("hidden_0", "hidden_1"):
        dead[layer]["linear"]["bias"] = jnp.full_like(dead[layer]["linear"]["bias"], -100.0)
    fn = jax.jit(
        diagnostics.make_diagnostics_fn(
            NET,
            _mse,
            ("probe",),
            probe_steps=400,
            probe_learning_rate=3e-2,
            init_fn=lambda rng, inputs: healthy,
        )
    )
    same = fn(healthy, healthy, X, Y, jax.random.key(21), 0.1)
    np.testing.assert_allclose(same["probe_loss"], same["probe_loss_fresh"], rtol=1e-6)
    out = fn(dead, dead, X, Y, jax.random.key(21), 0.1)
    assert float(out["probe_loss"]) > 0.5  # unit-variance targets: only their mean is fitted
    assert float(out["probe_loss_fresh"]) < 0.8 * float(out["probe_loss"])


def test_ntk_on_a_noisy_distributional_q_network_uses_q_values():
    model = networks.QNetwork(
        networks.MLP((8,), 0, "layernorm"),
        networks.ValueHead(3, (8,), num_atoms=5, noisy=True, norm="layernorm"),
    )
    x = np.random.default_rng(16).standard_normal((6, 4)).astype(np.float32)
    params = _random_params(model, x, 17)
    fn = jax.jit(
        diagnostics.make_diagnostics_fn(
            model,
            lambda *a: 0.0,
            ("ntk",),
            ntk_examples=4,
            ntk_mode="mean",
            apply_kwargs=lambda key: {"rngs": {"noise": key}},
        )
    )
    out = fn(params, params, x, None, jax.random.key(18), 0.1)
    assert set(out) == {
        "ntk_trace",
        "ntk_top_eigenvalue",
        "ntk_effective_rank",
        "ntk_offdiagonal_mass",
        "jacobian_norm",
    }
    assert all(np.isfinite(float(v)) for v in out.values()) and float(out["ntk_trace"]) > 0
    assert 0.0 < float(out["ntk_offdiagonal_mass"]) < 1.0


def test_bad_names_and_options_fail_with_one_line():
    with pytest.raises(ValueError, match="Unknown diagnostics"):
        diagnostics.make_diagnostics_fn(NET, _mse, ("dormant", "sharpness"))
    with pytest.raises(ValueError, match="sequence of names"):
        diagnostics.make_diagnostics_fn(NET, _mse, "dormant")
    with pytest.raises(ValueError, match="Unknown diagnostics options"):
        diagnostics.make_diagnostics_fn(NET, _mse, ("dormant",), taus=(0.1,))
    with pytest.raises(ValueError, match="rank_method"):
        diagnostics.make_diagnostics_fn(NET, _mse, ("srank",), rank_method="qr")
    with pytest.raises(ValueError, match="ntk_mode"):
        diagnostics.make_diagnostics_fn(NET, _mse, ("ntk",), ntk_mode="full")
    fn = diagnostics.make_diagnostics_fn(NET, _mse, ("feature_svd",), penultimate_layer="output")
    with pytest.raises(ValueError, match="penultimate_layer"):
        jax.eval_shape(fn, _planted(), _planted(), X, Y, jax.random.key(0), 0.1)


def test_limit_blas_threads_caps_the_lapack_pool():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    limiter = diagnostics.limit_blas_threads(1)
    try:
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
    finally:
        limiter.restore_original_limits()


def test_option_values_are_refused_when_the_function_is_built():
    for options, expected in (
        ({"dormant_thresholds": 0.1}, "dormant_thresholds must be a sequence"),
        ({"dormant_thresholds": (0.1, -1.0)}, "dormant_thresholds must be a sequence"),
        ({"dohare_threshold": 2.0}, r"dohare_threshold must be in \[0, 1\)"),
        ({"hessian_iterations": 0}, "hessian_iterations must be >= 1"),
        ({"probe_steps": -1}, "probe_steps must be >= 1"),
    ):
        with pytest.raises(ValueError, match=expected):
            diagnostics.make_options(**options)


def test_a_network_without_hidden_layers_has_parameter_diagnostics_only():
    model = networks.MLP((), 3, "none")
    x = jnp.ones((4, 5))
    params = model.init(jax.random.key(0), x)["params"]
    assert networks.hidden_activations(model, {"params": params}, x)[1] == {}
    loss = lambda p, inputs, targets: jnp.mean(model.apply({"params": p}, inputs) ** 2)
    measure = diagnostics.make_diagnostics_fn(model, loss, ("dormant", "weight_norm"))
    metrics = measure(params, params, x, None, jax.random.key(1), 0.1)
    assert "weight_norm/output" in metrics and not any(k.startswith("dormant") for k in metrics)


def test_activity_options_set_the_dead_linearized_and_dohare_thresholds():
    """The fractions under non-default `activity_tolerance` (2%) and `dohare_threshold` (1.2%), on
    200 examples where a tolerance matters: unit 0 fires on 3 of them (1.5%), unit 1 on 1 (0.5%),
    unit 2 on 197 (98.5%), unit 3 on about half. Each fraction equals NumPy's count of units on
    the option's side of its threshold; every active fraction is a multiple of 1/200, at least
    0.002 from each threshold, far beyond float32 rounding. With 48 rows (the planted network's
    batch) any fraction below 1% is 0, so the default-option test cannot see these options."""
    pre = np.random.default_rng(40).standard_normal((200, 4)).astype(np.float32)
    pre[:, :3] = -1.0
    pre[:3, 0] = pre[:1, 1] = pre[3:, 2] = 1.0
    acts = {"l": {"preact": jnp.asarray(pre), "postact": jnp.maximum(jnp.asarray(pre), 0)}}
    active = (pre > 0).mean(0)
    for tolerance, threshold in ((0.0, 0.01), (0.02, 0.012)):
        opts = diagnostics.make_options(activity_tolerance=tolerance, dohare_threshold=threshold)
        out = diagnostics.activation_metrics(acts, ("dead", "linearized", "dohare_inactive"), opts)
        for name, mask in (
            ("dead", active <= tolerance),
            ("linearized", active >= 1 - tolerance),
            ("dohare_inactive", active < threshold),
        ):
            for key in (name, f"{name}/l"):
                assert float(out[key]) == mask.mean(), (key, tolerance)
    # The planted units make the options matter: with the 2% tolerance units 0 and 1 are dead
    # and unit 2 linearized; Dohare's 1.2% counts unit 1 only, which the tolerance 0 does not.
    assert float(out["dead/l"]) == 0.5 and float(out["linearized/l"]) == 0.25
    assert float(out["dohare_inactive/l"]) == 0.25 and not np.any(active <= 0)


def test_rank_options_set_the_feature_rows_and_the_srank_delta():
    """srank of the first `rank_examples` rows with `srank_delta`, against NumPy's srank of the
    SVD of those rows. Features: 200 examples × 64 columns with geometric column scales: 16 rows
    give 16 (all 200 rows: 41, a rank 16 rows cannot have), δ = 0.3 gives 11 on the default 128
    rows (δ = 0.01: 40), 32 rows with δ = 0.1 give 16. No cumulative sum lies within 1e-3 of
    1 − δ (2e-3 at the closest), far beyond float32 rounding, so the counts are exact."""
    rng = np.random.default_rng(41)
    scales = np.geomspace(1.0, 1e-3, 64)
    features = (rng.standard_normal((200, 64)) * scales).astype(np.float32)
    acts = {"l": {"preact": jnp.asarray(features), "postact": jnp.asarray(features)}}
    for options in (
        {"rank_examples": 16},
        {"srank_delta": 0.3},
        {"rank_examples": 32, "srank_delta": 0.1},
    ):
        opts = diagnostics.make_options(**options)
        rows = features[: opts.rank_examples].astype(np.float64)
        s = np.linalg.svd(rows, compute_uv=False)
        cumulative = np.cumsum(s) / s.sum()
        assert np.min(np.abs(cumulative - (1 - opts.srank_delta))) > 1e-3, options
        out = diagnostics.activation_metrics(acts, ("srank",), opts)
        assert int(out["srank/l"]) == _srank(s, opts.srank_delta), options
        if "rank_examples" in options:
            assert int(out["srank/l"]) <= opts.rank_examples


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu", "identity"])
def test_dormant_scores_of_signed_activations_average_magnitudes(activation):
    """ReDo's score is E|h_i| / mean_k E|h_k|: for activations that take both signs (tanh, leaky
    ReLU, identity; all offered by `layers.ACTIVATIONS`) the magnitude matters, not the signed
    mean, which is near 0 for a unit symmetric about 0 however large its activations are. NumPy
    reference in float64; float32 means of 256 values agree to ~1e-6."""
    rng = np.random.default_rng(42)
    pre = rng.standard_normal((256, 4)) * np.array([1.0, 3.0, 0.1, 1.0]) + [0.0, 0.0, 0.0, 1.5]
    post = {
        "tanh": np.tanh(pre),
        "leaky_relu": np.where(pre > 0, pre, 0.3 * pre),
        "identity": pre,
    }[activation]
    mean_abs = np.abs(post).mean(0)
    scores = diagnostics.dormant_scores(jnp.asarray(post, jnp.float32))
    np.testing.assert_allclose(scores, mean_abs / mean_abs.mean(), rtol=1e-5)
    # Unit 1 (large, symmetric) outscores unit 3 (shifted): its signed mean is the smaller one.
    assert float(scores[1]) > float(scores[3]) and abs(post[:, 1].mean()) < post[:, 3].mean()


def test_update_ratio_divides_by_the_previous_parameters():
    """update_ratio = ‖θ − θ_prev‖ / ‖θ_prev‖, in total and per layer. With θ = θ_prev / 2 (the
    kind of step a shrink or a reset makes, when the value is read) it is 0.5 to float32
    rounding; dividing by ‖θ‖ would give 1. (In the planted test θ and θ_prev differ by 1%,
    too little to tell.)"""
    params = _planted()
    previous = jax.tree_util.tree_map(lambda a: 2.0 * a, params)
    opts = diagnostics.make_options()
    out = diagnostics.parameter_metrics(params, previous, None, 0.1, ("update_ratio",), opts)
    assert set(out) == {"update_ratio"} | {
        f"update_ratio/{l}" for l in ("hidden_0", "hidden_1", "output")
    }
    for key, value in out.items():
        np.testing.assert_allclose(value, 0.5, rtol=1e-6, err_msg=key)


def test_a_noisy_layers_weight_and_grad_norms_cover_both_its_kernels():
    """A noisy layer has two kernels (μ: 'kernel', σ: 'sigma_kernel'); its weight_norm and
    grad_norm are their joint Frobenius norm, NumPy over both (the σ kernel is a trained weight
    as much as μ is; Rainbow logs these norms). Leaves drawn with NumPy: the norms of a random
    tree, so any leaf left out or counted twice shows."""
    head = networks.ValueHead(3, (8,), noisy=True, norm="none")
    params = _random_params(head, X, 43)
    grads = _random_params(head, X, 44)
    opts = diagnostics.make_options()
    out = diagnostics.parameter_metrics(
        params, params, grads, 0.1, ("weight_norm", "grad_norm"), opts
    )
    for tree, name in ((params, "weight_norm"), (grads, "grad_norm")):
        layers = {"hidden_0": tree["hidden_0"]["linear"], "output": tree["output"]}
        for layer, leaves in layers.items():
            kernels = [np.asarray(leaves[k], np.float64) for k in ("kernel", "sigma_kernel")]
            expected = np.sqrt(sum(np.sum(k**2) for k in kernels))
            np.testing.assert_allclose(
                out[f"{name}/{layer}"], expected, rtol=1e-5, err_msg=f"{name}/{layer}"
            )


def test_dohare_inactive_counts_units_active_on_fewer_than_the_threshold():
    """Dohare et al.'s inactive units fire on *fewer* than the threshold's fraction of inputs:
    with a threshold of 1/4 and 4 examples, a unit active on exactly 1 of them (1/4, exact in
    float32) is not inactive; one active on none is."""
    pre = np.array([[1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]], np.float32)
    acts = {"l": {"preact": jnp.asarray(pre), "postact": jnp.maximum(jnp.asarray(pre), 0)}}
    opts = diagnostics.make_options(dohare_threshold=0.25)
    out = diagnostics.activation_metrics(acts, ("dohare_inactive",), opts)
    assert float(out["dohare_inactive/l"]) == 0.5


def test_srank_stops_at_the_first_k_that_reaches_one_minus_delta():
    """srank is the smallest k with Σ_{i≤k} σ_i / Σ σ ≥ 1 − δ: reaching 1 − δ exactly counts.
    Four equal singular values with δ = 1/4 reach 3/4 at k = 3 (every ratio here is exact in
    float32), so srank is 3, not 4."""
    assert int(diagnostics.srank(jnp.ones(4), 0.25)) == 3
    assert int(diagnostics.srank(jnp.asarray([3.0, 1.0]), 0.25)) == 1


def test_a_value_on_a_bin_edge_is_counted_in_the_bin_it_opens():
    """Bins are [e_i, e_{i+1}): a pre-activation of exactly 0 (common: a zero-padded frame
    through a zero bias) falls in the bin starting at 0, not in the one ending there."""
    edges = (-1.0, 0.0, 1.0, 2.0)
    counts = diagnostics.histogram_counts(jnp.asarray([0.0, 1.0, 1.0, -0.5]), edges)
    np.testing.assert_array_equal(counts, [1.0, 1.0, 2.0])
