"""Interventions: ReDo, continual backprop, shrink-and-perturb, resets, plasticity injection.

Each is checked on a tiny network with planted structure against what its definition says must
happen, including its composition with NaP and weight decay.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from jax.flatten_util import ravel_pytree

from plasticity import interventions, nap, networks, optim, units
from plasticity.train_state import create_train_state, map_optimizer_moments, apply_gradients

X = jax.random.normal(jax.random.key(0), (32, 5))
Y = jax.random.normal(jax.random.key(1), (32, 3))
MLP = networks.MLP((8, 6), 3, "none")
ADAM = optax.adam(1e-2)


def _params(model, x=X, seed=3):
    """Random parameters without compiling `model.init` (slow to compile on a small CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if len(leaf.shape) == 1:  # biases, norm offsets around 0 and norm scales around 1
            centre = 1.0 if path[-1].key == "scale" else 0.0
            return jnp.asarray(centre + 0.1 * rng.standard_normal(leaf.shape), jnp.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _fresh_init(model, x=X):
    """A cheap stand-in for `model.init`: always the same second draw, whatever the key."""
    fresh = _params(model, x, seed=99)
    return lambda rng, inputs: fresh


def _set(params, path, value):
    flat = dict(traverse_util.flatten_dict(params))
    flat[path] = value
    return traverse_util.unflatten_dict(flat)


def _state_with_unit_moments(params, tx=ADAM, extra=None):
    """A train state whose Adam moments are all ones, so that resets are visible."""
    state = create_train_state(params, tx, jax.random.key(3), extra)
    ones = map_optimizer_moments(
        state.opt_state, params, lambda m: jax.tree_util.tree_map(jnp.ones_like, m)
    )
    return state.replace(opt_state=ones)


def _kernel(params, layer):
    return (
        params[layer]["kernel"] if layer.startswith("output") else params[layer]["linear"]["kernel"]
    )


def _adam_moments(state):
    return state.opt_state[0].mu, state.opt_state[0].nu


def _planted_mlp():
    """hidden_0 units 0 and 3 and hidden_1 unit 2 never fire (bias −100): dormant at τ = 0."""
    params = _params(MLP)
    b0 = params["hidden_0"]["linear"]["bias"].at[jnp.array([0, 3])].set(-100.0)
    b1 = params["hidden_1"]["linear"]["bias"].at[2].set(-100.0)
    params = _set(params, ("hidden_0", "linear", "bias"), b0)
    return _set(params, ("hidden_1", "linear", "bias"), b1)


@functools.lru_cache(maxsize=None)
def _postact_fn(model):
    return jax.jit(
        lambda p, x: {
            layer: a["postact"]
            for layer, a in networks.hidden_activations(model, {"params": p}, x)[1].items()
        }
    )


@functools.lru_cache(maxsize=None)
def _forward_fn(model):
    return jax.jit(lambda p, x: model.apply({"params": p}, x))


def _forward(model, params, x=X):
    return _forward_fn(model)(params, x)


def _postacts(model, params, x=X):
    return {layer: np.asarray(h) for layer, h in _postact_fn(model)(params, x).items()}


MLP_FRESH = _fresh_init(MLP)


@functools.lru_cache(maxsize=None)
def _jitted(name, **options):
    """A compiled `apply` for the MLP, re-initializing from `MLP_FRESH`, shared across tests."""
    return jax.jit(interventions.make_intervention(name, MLP, init_fn=MLP_FRESH, **options).apply)


def test_redo_recycles_planted_dormant_units_and_keeps_outputs():
    params = _planted_mlp()
    state = _state_with_unit_moments(params)
    before = _postacts(MLP, params)
    dormant = {layer: np.flatnonzero(h.max(axis=0) == 0) for layer, h in before.items()}
    assert {0, 3} <= set(dormant["hidden_0"]) and 2 in dormant["hidden_1"]
    alive = {
        layer: np.setdiff1d(np.arange(h.shape[1]), dormant[layer]) for layer, h in before.items()
    }

    after_state = _jitted("redo", tau=0.0)(state, X, jax.random.key(4))
    new = after_state.params
    after = _postacts(MLP, new)
    # Recycled units fire again; the other units of the first layer are untouched.
    for layer in before:
        assert np.all(after[layer][:, dormant[layer]].max(axis=0) > 0), layer
    np.testing.assert_allclose(
        after["hidden_0"][:, alive["hidden_0"]], before["hidden_0"][:, alive["hidden_0"]], rtol=1e-6
    )
    # Outgoing weights are zero, so the network computes the same function.
    np.testing.assert_array_equal(new["hidden_1"]["linear"]["kernel"][dormant["hidden_0"]], 0.0)
    np.testing.assert_array_equal(new["output"]["kernel"][dormant["hidden_1"]], 0.0)
    np.testing.assert_allclose(_forward(MLP, new), _forward(MLP, params), rtol=1e-5, atol=1e-6)
    # Incoming weights (kernel column and bias) come from the fresh initialization.
    fresh = MLP_FRESH(None, X)
    for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(
            new["hidden_0"]["linear"][leaf][..., dormant["hidden_0"]],
            fresh["hidden_0"]["linear"][leaf][..., dormant["hidden_0"]],
        )
    # Adam moments are zeroed exactly on the recycled entries (incoming columns, outgoing rows).
    expected_k1 = np.ones((8, 6))
    expected_k1[dormant["hidden_0"], :] = 0.0
    expected_k1[:, dormant["hidden_1"]] = 0.0
    expected_out = np.ones((6, 3))
    expected_out[dormant["hidden_1"]] = 0.0
    for moments in _adam_moments(after_state):
        k0 = np.asarray(moments["hidden_0"]["linear"]["kernel"])
        np.testing.assert_array_equal(k0[:, dormant["hidden_0"]], 0.0)
        np.testing.assert_array_equal(k0[:, alive["hidden_0"]], 1.0)
        np.testing.assert_array_equal(moments["hidden_1"]["linear"]["kernel"], expected_k1)
        np.testing.assert_array_equal(moments["output"]["kernel"], expected_out)
        np.testing.assert_array_equal(moments["output"]["bias"], 1.0)


def test_redo_leaves_a_healthy_network_alone():
    params = _params(MLP)
    assert all(h.max(axis=0).min() > 0 for h in _postacts(MLP, params).values())
    state = create_train_state(params, ADAM, jax.random.key(3))
    new = _jitted("redo", tau=0.0)(state, X, jax.random.key(4)).params
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_redo_on_a_cnn_zeroes_the_dense_rows_of_a_flattened_channel():
    model = networks.SmallCNN((3, 4), (5,), 2, "none")
    x = jax.random.normal(jax.random.key(5), (4, 8, 8, 1))
    params = _params(model, x)
    bias = params["conv_1"]["linear"]["bias"].at[1].set(-100.0)
    params = _set(params, ("conv_1", "linear", "bias"), bias)
    before = _postacts(model, params, x)
    dormant = {layer: h.reshape(-1, h.shape[-1]).max(axis=0) == 0 for layer, h in before.items()}
    assert dormant["conv_1"][1]
    state = create_train_state(params, ADAM, jax.random.key(3))
    redo = interventions.make_intervention("redo", model, tau=0.0, init_fn=_fresh_init(model, x))
    new = jax.jit(redo.apply)(state, x, jax.random.key(6)).params
    dense = np.asarray(new["hidden_0"]["linear"]["kernel"])  # (2·2·4, 5): flatten is (h, w, c)
    channel = np.arange(dense.shape[0]) % 4
    np.testing.assert_array_equal(dense[dormant["conv_1"][channel]], 0.0)
    kept_rows, kept_columns = ~dormant["conv_1"][channel], ~dormant["hidden_0"]
    np.testing.assert_array_equal(
        dense[np.ix_(kept_rows, kept_columns)],
        np.asarray(params["hidden_0"]["linear"]["kernel"])[np.ix_(kept_rows, kept_columns)],
    )
    np.testing.assert_allclose(
        _forward(model, new, x), _forward(model, params, x), rtol=1e-5, atol=1e-6
    )


def test_cbp_replaces_the_expected_number_of_lowest_utility_units():
    model = networks.MLP((16, 16), 3, "none")
    params = _params(model)
    cbp = interventions.make_intervention(
        "cbp",
        model,
        replacement_rate=0.1,
        maturity_threshold=0,
        decay_rate=0.9,
        init_fn=_fresh_init(model),
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    apply = jax.jit(cbp.apply)

    # First call: utility = (1 − η)·E|h|·Σ|w_out|, bias-corrected back to E|h|·Σ|w_out|.
    h = _postacts(model, params)["hidden_0"]
    contribution = np.abs(h).mean(0) * np.abs(
        np.asarray(params["hidden_1"]["linear"]["kernel"])
    ).sum(1)
    first = apply(state, X, jax.random.key(7))
    replaced_units = np.flatnonzero(
        np.asarray(first.params["hidden_1"]["linear"]["kernel"]).sum(1) == 0
    )
    np.testing.assert_array_equal(replaced_units, np.argsort(contribution)[:1])

    # 16 eligible units × 0.1 per call: floor(1.6·k) replaced after k calls, per layer.
    state = first
    for calls in range(2, 6):
        state = apply(state, X, jax.random.key(7 + calls))
        assert int(state.extra["cbp"]["num_replaced"]) == 2 * int(np.floor(1.6 * calls + 1e-9))
    layer = state.extra["cbp"]["layers"]["hidden_0.linear"]
    np.testing.assert_allclose(layer["to_replace"], 1.6 * 5 - np.floor(1.6 * 5), atol=1e-5)
    assert 1 <= int(jnp.sum(layer["age"] < 5)) <= int(np.floor(1.6 * 5))  # some were re-replaced


def _numpy_relu_mlp(p, x):
    """Post-activations of each hidden layer of a no-norm ReLU MLP, in float64."""
    acts, h = [], np.asarray(x, np.float64)
    for layer in sorted(k for k in p if k.startswith("hidden_")):
        h = np.maximum(h @ p[layer]["linear"]["kernel"] + p[layer]["linear"]["bias"], 0.0)
        acts.append(h)
    return acts


@pytest.mark.parametrize("utility_name", interventions.CBP_UTILITIES)
def test_cbp_utility_ages_and_replacements_match_a_numpy_reference(utility_name):
    """Six calls of continual backprop on a 5 → 10 → 8 → 3 ReLU MLP against a NumPy transcription
    of the docstring: age + 1, u ← ηu + (1 − η)·c with c = E|h|·Σ|w_out| (the paper's
    contribution) or E|h − m̂|·Σ|w_out| / mean|w_in| (the authors' code's adaptable contribution,
    m̂ the bias-corrected running mean of h), eligible when age > maturity, the floor of the
    accumulated rate × eligible replaced by lowest u/(1 − η^age), then u = m = age = 0."""
    model = networks.MLP((10, 8), 3, "none")
    params = _params(model)
    eta, rate, maturity = 0.9, 0.15, 2
    cbp = interventions.make_intervention(
        "cbp",
        model,
        replacement_rate=rate,
        maturity_threshold=maturity,
        decay_rate=eta,
        init_fn=_fresh_init(model),
        utility=utility_name,
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    apply = jax.jit(cbp.apply)
    keys = {"hidden_0.linear": ("hidden_0", 10), "hidden_1.linear": ("hidden_1", 8)}
    reference = {key: (np.zeros(n), np.zeros(n, int), 0.0) for key, (_, n) in keys.items()}
    means = {key: np.zeros(n) for key, (_, n) in keys.items()}
    total_replaced = 0
    for call in range(6):
        p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), state.params)
        acts = dict(zip(("hidden_0", "hidden_1"), _numpy_relu_mlp(p, X)))
        next_kernel = {
            "hidden_0": p["hidden_1"]["linear"]["kernel"],
            "hidden_1": p["output"]["kernel"],
        }
        expected_replace = {}
        for key, (layer, _) in keys.items():
            utility, age, budget = reference[key]
            age = age + 1
            h = acts[layer]
            if utility_name == "contribution":
                contribution = np.abs(h).mean(0) * np.abs(next_kernel[layer]).sum(1)
            else:
                means[key] = eta * means[key] + (1 - eta) * h.mean(0)
                deviation = np.abs(h - means[key] / (1 - eta**age)).mean(0)
                incoming = np.abs(p[layer]["linear"]["kernel"]).mean(0)
                contribution = deviation * np.abs(next_kernel[layer]).sum(1) / incoming
            utility = eta * utility + (1 - eta) * contribution
            eligible = age > maturity
            budget += rate * eligible.sum()
            count = int(np.floor(budget + 1e-9))
            corrected = np.where(eligible, utility / (1 - eta**age), np.inf)
            replace = np.zeros(len(age), bool)
            replace[np.argsort(corrected, kind="stable")[:count]] = True
            replace &= eligible
            expected_replace[key] = replace
            total_replaced += int(replace.sum())
            reference[key] = (
                np.where(replace, 0.0, utility),
                np.where(replace, 0, age),
                budget - count,
            )
            means[key] = np.where(replace, 0.0, means[key])
        state = apply(state, X, jax.random.key(40 + call))
        for key, (utility, age, budget) in reference.items():
            got = state.extra["cbp"]["layers"][key]
            np.testing.assert_allclose(got["utility"], utility, rtol=1e-5, atol=1e-7, err_msg=key)
            np.testing.assert_array_equal(got["age"], age, err_msg=key)
            np.testing.assert_allclose(got["to_replace"], budget, atol=1e-5, err_msg=key)
            if utility_name == "adaptable_contribution":
                np.testing.assert_allclose(got["mean_activation"], means[key], rtol=1e-5, atol=1e-7)
            layer = keys[key][0]
            new_outgoing = (
                state.params["hidden_1"]["linear"]["kernel"]
                if layer == "hidden_0"
                else state.params["output"]["kernel"]
            )
            np.testing.assert_array_equal(np.asarray(new_outgoing)[expected_replace[key]], 0.0)
    assert total_replaced >= 3  # the schedule above really replaces units
    assert int(state.extra["cbp"]["num_replaced"]) == total_replaced


def test_cbp_redraws_incoming_weights_kaiming_uniform_by_default():
    """Every unit replaced once (rate 1, maturity 0): hidden kernel entries U(−b, b) with
    b = √2·√(3/fan_in) (variance 2/fan_in, twice LeCun's), biases 0; reinit='network' takes the
    network's own initialization instead."""
    model = networks.MLP((64,), 3, "none")
    x = jax.random.normal(jax.random.key(0), (16, 100))
    params = _params(model, x)
    fresh = _fresh_init(model, x)
    bound = np.sqrt(2.0) * np.sqrt(3.0 / 100)
    for reinit in ("kaiming_uniform", "network"):
        cbp = interventions.make_intervention(
            "cbp",
            model,
            replacement_rate=1.0,
            maturity_threshold=0,
            reinit=reinit,
            init_fn=fresh,
        )
        state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
        new = jax.jit(cbp.apply)(state, x, jax.random.key(5)).params
        kernel = np.asarray(new["hidden_0"]["linear"]["kernel"])
        np.testing.assert_array_equal(new["output"]["kernel"], 0.0)  # all 64 units replaced
        if reinit == "network":
            np.testing.assert_array_equal(kernel, fresh(None, x)["hidden_0"]["linear"]["kernel"])
            continue
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
        # 6,400 draws: the sample variance of U(−b, b) is within 1.1% (one s.d.) of b²/3.
        np.testing.assert_allclose(kernel.var(), bound**2 / 3, rtol=0.05)
        np.testing.assert_allclose(kernel.mean(), 0.0, atol=0.01)
        np.testing.assert_array_equal(new["hidden_0"]["linear"]["bias"], 0.0)


def _planted_layernorm_mlp():
    """LayerNorm MLP with hidden_0 unit 2 and hidden_1 unit 4 silenced by γ = 0, β = −1."""
    model = networks.MLP((8, 6), 3, "layernorm")
    params = _params(model)
    for layer, unit in (("hidden_0", 2), ("hidden_1", 4)):
        scale = params[layer]["norm"]["scale"].at[unit].set(0.0)
        offset = params[layer]["norm"]["bias"].at[unit].set(-1.0)
        params = _set(
            _set(params, (layer, "norm", "scale"), scale), (layer, "norm", "bias"), offset
        )
    return model, params, {"hidden_0": 2, "hidden_1": 4}


@pytest.mark.parametrize("mode", ["reinitialize", "preserve_function"])
def test_redo_under_layernorm_does_what_its_norm_recycling_mode_says(mode):
    """'preserve_function' keeps the recycled units' kernel columns (so the norm's statistics),
    resets their γ, β to init and zeroes their outgoing rows: outputs unchanged. 'reinitialize'
    (default) also redraws the columns, which moves every unit's normalization: outputs change."""
    model, params, planted = _planted_layernorm_mlp()
    fresh = _fresh_init(model)
    state = _state_with_unit_moments(params)
    options = {} if mode == "reinitialize" else {"norm_recycling": mode}
    redo = interventions.make_intervention("redo", model, tau=0.0, init_fn=fresh, **options)
    after = jax.jit(redo.apply)(state, X, jax.random.key(4))
    new, init = after.params, fresh(None, X)
    rows = {"hidden_0": slice(None), "hidden_1": np.arange(8) != 2}  # hidden_0 unit 2's row is 0
    for layer, unit in planted.items():
        np.testing.assert_array_equal(
            new[layer]["norm"]["scale"][unit], init[layer]["norm"]["scale"][unit]
        )
        kernel = lambda p: np.asarray(p[layer]["linear"]["kernel"])[rows[layer]]
        source = init if mode == "reinitialize" else params
        np.testing.assert_array_equal(kernel(new)[:, unit], kernel(source)[:, unit])
        others = np.arange(params[layer]["norm"]["scale"].shape[0]) != unit
        np.testing.assert_array_equal(kernel(new)[:, others], kernel(params)[:, others])
        kernel_moments = np.asarray(_adam_moments(after)[0][layer]["linear"]["kernel"])
        kernel_moments = kernel_moments[rows[layer]][:, unit]
        np.testing.assert_array_equal(kernel_moments, 0.0 if mode == "reinitialize" else 1.0)
    np.testing.assert_array_equal(new["hidden_1"]["linear"]["kernel"][2], 0.0)
    np.testing.assert_array_equal(new["output"]["kernel"][4], 0.0)
    before, now = np.asarray(_forward(model, params)), np.asarray(_forward(model, new))
    scale = np.abs(before).max()
    if mode == "preserve_function":
        np.testing.assert_allclose(now, before, rtol=0, atol=1e-6 * scale)
    else:
        assert np.abs(now - before).max() > 1e-2 * scale
    with pytest.raises(ValueError, match="norm_recycling"):
        interventions.make_intervention("redo", model, norm_recycling="zero_gamma")


def test_cbp_respects_maturity_and_needs_its_state():
    model = networks.MLP((16,), 3, "none")
    params = _params(model)
    cbp = interventions.make_intervention(
        "cbp", model, replacement_rate=0.5, maturity_threshold=3, init_fn=_fresh_init(model)
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    apply = jax.jit(cbp.apply)
    for _ in range(3):
        state = apply(state, X, jax.random.key(1))
    assert int(state.extra["cbp"]["num_replaced"]) == 0  # ages 1, 2, 3: none older than 3
    with pytest.raises(ValueError, match="extra"):
        cbp.apply(create_train_state(params, ADAM, jax.random.key(3)), X, jax.random.key(1))


def test_shrink_and_perturb_matches_its_formula():
    params = _params(MLP)
    state = _state_with_unit_moments(params)
    rng = jax.random.key(8)
    flat, unravel = ravel_pytree(params)
    noises = {
        "init": MLP_FRESH(rng, X),
        "gaussian": unravel(jax.jit(jax.random.normal, static_argnums=1)(rng, flat.shape)),
    }
    for noise, eps in noises.items():
        new = _jitted("shrink_perturb", shrink=0.6, perturb=0.01, noise=noise)(state, X, rng)
        expected = jax.tree_util.tree_map(lambda p, e: 0.6 * p + 0.01 * e, params, eps)
        for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=noise)
        for m in jax.tree_util.tree_leaves(_adam_moments(new)):
            np.testing.assert_array_equal(m, 1.0)


def test_noisy_updates_add_gaussian_noise_of_their_scale():
    """θ + σε with ε the same standard Gaussian draw as shrink-and-perturb's, moments kept."""
    params = _params(MLP)
    state = _state_with_unit_moments(params)
    rng = jax.random.key(9)
    flat, unravel = ravel_pytree(params)
    eps = unravel(jax.jit(jax.random.normal, static_argnums=1)(rng, flat.shape))
    new = _jitted("noisy_updates", scale=0.003)(state, X, rng)
    expected = jax.tree_util.tree_map(lambda p, e: p + 0.003 * e, params, eps)
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    for m in jax.tree_util.tree_leaves(_adam_moments(new)):
        np.testing.assert_array_equal(m, 1.0)
    with pytest.raises(ValueError, match="noisy_updates scale must be >= 0, got -1"):
        interventions.check_options("noisy_updates", {"scale": -1.0})


def test_default_perturbation_is_a_fresh_initialization():
    """Without `init_fn`, ε comes from `model.init`: zero biases, LeCun-normal kernels."""
    model = networks.MLP((256,), 3, "none")
    x = jnp.ones((2, 64))
    params = _params(model, x)
    state = create_train_state(params, ADAM, jax.random.key(3))
    shrink = interventions.make_intervention("shrink_perturb", model, shrink=0.5, perturb=1.0)
    new = jax.jit(shrink.apply)(state, x, jax.random.key(14)).params
    eps = jax.tree_util.tree_map(lambda n, p: n - 0.5 * p, new, params)
    np.testing.assert_allclose(eps["hidden_0"]["linear"]["bias"], 0.0, atol=1e-6)
    np.testing.assert_allclose(eps["output"]["bias"], 0.0, atol=1e-6)
    std = float(jnp.std(eps["hidden_0"]["linear"]["kernel"]))
    assert abs(std - 1 / np.sqrt(64)) < 0.1 / np.sqrt(64)


@pytest.mark.parametrize(
    "num_layers,reset",
    [(1, {"output"}), (2, {"hidden_1", "output"}), (None, {"hidden_0", "hidden_1", "output"})],
)
def test_reset_last_layers(num_layers, reset):
    params = _params(MLP)
    state = _state_with_unit_moments(params)
    rng = jax.random.key(9)
    new = _jitted("reset_last_layers", num_layers=num_layers)(state, X, rng)
    fresh = MLP_FRESH(rng, X)
    mu, nu = _adam_moments(new)
    for layer in ("hidden_0", "hidden_1", "output"):
        source = fresh if layer in reset else params
        for a, b in zip(
            jax.tree_util.tree_leaves(new.params[layer]), jax.tree_util.tree_leaves(source[layer])
        ):
            np.testing.assert_array_equal(a, b)
        for m in jax.tree_util.tree_leaves((mu[layer], nu[layer])):
            np.testing.assert_array_equal(m, 0.0 if layer in reset else 1.0)


def test_last_layers_follow_call_order_not_name_order():
    model = networks.MLP((2,) * 11, 2, "none")
    params = jax.eval_shape(model.init, jax.random.key(0), X)["params"]
    order = units.kernel_layer_call_order(model, params, X, {})
    assert order[-3:] == ["hidden_9/linear", "hidden_10/linear", "output"]
    with pytest.raises(ValueError, match="hidden_0"):
        units.parameter_layers(params, model, X, {}, ["nonexistent"], None, None)
    # More layers than the network has (or none) is refused, not wrapped round from the end.
    last = lambda n: units.parameter_layers(params, model, X, {}, None, None, n)  # noqa: E731
    assert len(last(12)) == 12 and last(None) == last(12)
    for count in (0, 13, 23):
        with pytest.raises(ValueError, match="between 1 and the network's 12 parameter layers"):
            last(count)


def test_intervention_options_are_checked_before_anything_is_built():
    interventions.check_options("reset_last_layers", {"num_layers": 2, "reset_moments": False})
    interventions.check_options("none", {})
    with pytest.raises(ValueError, match="'redo' has no option 'taux': it takes tau, norm_re"):
        interventions.check_options("redo", {"taux": 0.1})
    with pytest.raises(ValueError, match="'none' has no option 'tau': it takes none"):
        interventions.check_options("none", {"tau": 0.1})
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="num_layers must be >= 1"):
            interventions.check_options("plasticity_injection", {"num_layers": bad})
    with pytest.raises(ValueError, match="Unknown intervention 'redoo'"):
        interventions.check_options("redoo", {})


def test_plasticity_injection_preserves_outputs_then_trains_a_new_head():
    model = networks.MLP((8, 8), 3, "layernorm")
    params = _params(model)
    injection = interventions.make_intervention(
        "plasticity_injection", model, num_layers=2, init_fn=_fresh_init(model)
    )
    state = create_train_state(
        params, ADAM, jax.random.key(3), {"plasticity_injection": injection.init(params)}
    )
    forward = jax.jit(lambda p, extra: interventions.injected_apply(model, p, extra, X))
    reference = _forward(model, params)
    np.testing.assert_allclose(forward(params, state.extra), reference, rtol=1e-6, atol=1e-6)

    injected = jax.jit(injection.apply)(state, X, jax.random.key(10))
    own = injected.extra["plasticity_injection"]
    assert bool(own["injected"])
    for layer in ("hidden_1", "output"):
        for a, b in zip(
            jax.tree_util.tree_leaves(own["frozen"][layer]),
            jax.tree_util.tree_leaves(params[layer]),
        ):
            np.testing.assert_array_equal(a, b)
        assert not np.allclose(_kernel(injected.params, layer), _kernel(params, layer))
    np.testing.assert_array_equal(
        injected.params["hidden_0"]["linear"]["kernel"], params["hidden_0"]["linear"]["kernel"]
    )
    np.testing.assert_allclose(
        forward(injected.params, injected.extra), reference, rtol=1e-5, atol=1e-5
    )

    def loss(p, extra):
        return jnp.mean(jnp.square(interventions.injected_apply(model, p, extra, X) - Y))

    step = jax.jit(lambda s: apply_gradients(s, jax.grad(loss)(s.params, s.extra), ADAM))
    numpy_loss = lambda s: float(np.mean((np.asarray(forward(s.params, s.extra)) - Y) ** 2))
    trained = injected
    for _ in range(15):
        trained = step(trained)
    assert numpy_loss(trained) < 0.8 * numpy_loss(injected)
    # The torso and the new head train; the frozen heads do not move.
    for layer in ("hidden_0", "hidden_1", "output"):
        assert not np.allclose(_kernel(trained.params, layer), _kernel(injected.params, layer))
    for a, b in zip(jax.tree_util.tree_leaves(trained.extra), jax.tree_util.tree_leaves(own)):
        np.testing.assert_array_equal(a, b)
    # A second injection is a no-op: the frozen head stays the first one.
    again = jax.jit(injection.apply)(trained, X, jax.random.key(11))
    for a, b in zip(
        jax.tree_util.tree_leaves((again.params, again.extra, again.opt_state)),
        jax.tree_util.tree_leaves((trained.params, trained.extra, trained.opt_state)),
    ):
        np.testing.assert_array_equal(a, b)


def test_plasticity_injection_on_a_distributional_dueling_head():
    model = networks.QNetwork(
        networks.MLP((8,), 0, "layernorm"),
        networks.ValueHead(4, (8,), dueling=True, num_atoms=5, norm="layernorm"),
    )
    params = _params(model)
    injection = interventions.make_intervention(
        "plasticity_injection", model, prefix="head", init_fn=_fresh_init(model)
    )
    state = create_train_state(
        params, ADAM, jax.random.key(3), {"plasticity_injection": injection.init(params)}
    )

    @jax.jit
    def inject_and_apply(s):
        injected = injection.apply(s, X, jax.random.key(12))
        return injected, interventions.injected_apply(model, injected.params, injected.extra, X)

    injected, out = inject_and_apply(state)
    reference = _forward(model, params)
    np.testing.assert_allclose(out.logits, reference.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.q_values, reference.q_values, rtol=1e-5, atol=1e-5)
    assert not np.allclose(
        injected.params["head"]["output_value"]["kernel"], params["head"]["output_value"]["kernel"]
    )


@pytest.mark.parametrize(
    "name, num_layers", [("reset_last_layers", 1), ("plasticity_injection", 2)]
)
def test_the_last_layers_of_a_dueling_head_are_both_streams(name, num_layers):
    """The value and advantage streams are parallel: the last layer is both output layers (not
    the advantage stream's alone, the last called), the last two also both hidden layers; an
    injection there still leaves the network's function unchanged."""
    model = networks.QNetwork(
        networks.MLP((8,), 0, "layernorm"),
        networks.ValueHead(4, (8,), dueling=True, num_atoms=1, norm="layernorm"),
    )
    params = _params(model)
    intervention = interventions.make_intervention(
        name, model, num_layers=num_layers, init_fn=_fresh_init(model)
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {name: intervention.init(params)})
    after = jax.jit(intervention.apply)(state, X, jax.random.key(12))
    flat = lambda tree: traverse_util.flatten_dict(tree)  # noqa: E731
    changed = {  # the head's modules with a rewritten parameter
        path[1]
        for path, value in flat(after.params).items()
        if not np.array_equal(value, flat(params)[path]) and path[0] == "head"
    }
    outputs = {"output_advantage", "output_value"}
    hidden = {"advantage_hidden_0", "value_hidden_0"}
    assert changed == (outputs | hidden if num_layers == 2 else outputs)
    if name == "plasticity_injection":
        out = interventions.injected_apply(model, after.params, after.extra, X)
        np.testing.assert_allclose(out.q_values, _forward(model, params).q_values, atol=1e-5)


def test_interventions_compose_with_nap_and_weight_decay():
    model = networks.MLP((8, 6), 3, "layernorm")
    params = _params(model)
    config = optim.default_optimizer_config()
    config.update(learning_rate=1e-2, weight_decay=1e-3)
    config.nap.enabled = True
    tx = optim.make_optimizer(config)
    # A dormant unit under LayerNorm: γ = 0 and β < 0 silence it on every input.
    scale = params["hidden_0"]["norm"]["scale"].at[2].set(0.0)
    offset = params["hidden_0"]["norm"]["bias"].at[2].set(-1.0)
    params = _set(
        _set(params, ("hidden_0", "norm", "scale"), scale), ("hidden_0", "norm", "bias"), offset
    )
    state = create_train_state(params, tx, jax.random.key(3))
    reference = {
        name.replace("/", "."): v
        for name, v in nap.group_norms(params, nap.projection_groups(params)).items()
    }

    def loss(p):
        return jnp.mean(jnp.square(model.apply({"params": p}, X) - Y))

    update = jax.jit(lambda s: apply_gradients(s, jax.grad(loss)(s.params), tx))
    for name, options in (
        ("redo", {"tau": 0.0}),
        ("shrink_perturb", {}),
        ("reset_last_layers", {"num_layers": None}),
    ):
        intervention = interventions.make_intervention(
            name, model, init_fn=_fresh_init(model), **options
        )
        after = jax.jit(intervention.apply)(state, X, jax.random.key(13))
        if name == "redo":
            assert float(_postacts(model, after.params)["hidden_0"][:, 2].max()) > 0
        after = update(after)
        groups = nap.projection_groups(after.params)
        for group, norm in nap.group_norms(after.params, groups).items():
            np.testing.assert_allclose(
                norm, reference[group.replace("/", ".")], rtol=1e-5, err_msg=f"{name}: {group}"
            )
        assert np.isfinite(float(loss(after.params)))


def test_should_intervene():
    cases = [  # step, boundary, every, at_boundaries, expected
        (0, False, 10, False, False),
        (10, False, 10, False, True),
        (15, False, 10, False, False),
        (15, True, 10, False, False),
        (15, True, 10, True, True),
        (15, True, 0, True, True),
        (20, False, 0, True, False),
    ]
    for step, boundary, every, at_boundaries, expected in cases:
        got = interventions.should_intervene(step, boundary, every, at_boundaries)
        assert bool(got) == expected, (step, boundary, every, at_boundaries)
    traced = jax.jit(lambda s: interventions.should_intervene(s, False, 5))(jnp.arange(11))
    np.testing.assert_array_equal(traced, (np.arange(11) % 5 == 0) & (np.arange(11) > 0))


def test_apply_if_applies_to_the_runs_whose_condition_holds_alone_or_vmapped():
    """Shrink and perturb on two vmapped runs, due on the first only: the first is shrunk as its
    own call would, the second keeps its parameters; neither due: both unchanged, and the
    intervention (its fresh network) not even computed."""
    draws = []

    def counting_init(rng, inputs):
        jax.debug.callback(lambda: draws.append(1))
        return MLP_FRESH(rng, inputs)

    shrink = interventions.make_intervention("shrink_perturb", MLP, init_fn=counting_init)
    runs = [create_train_state(_params(MLP, seed=s), ADAM, jax.random.key(s)) for s in (1, 2)]
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *runs)
    rngs = jax.random.split(jax.random.key(4), 2)
    apply_if = jax.jit(
        jax.vmap(lambda s, due, r: interventions.apply_if(shrink, due, s, X, r), (0, 0, 0))
    )
    for due in ([True, False], [False, False]):
        draws.clear()
        out = apply_if(stacked, jnp.array(due), rngs)
        jax.effects_barrier()
        assert bool(draws) == any(due)
        for run, state in enumerate(runs):
            expected = shrink.apply(state, X, rngs[run]) if due[run] else state
            for a, b in zip(
                jax.tree_util.tree_leaves(expected.params), jax.tree_util.tree_leaves(out.params)
            ):
                np.testing.assert_allclose(b[run], a, rtol=1e-6, atol=1e-7)
    alone = jax.jit(lambda s, due: interventions.apply_if(shrink, due, s, X, rngs[0]))
    kept = alone(runs[0], False)
    np.testing.assert_array_equal(
        kept.params["output"]["kernel"], runs[0].params["output"]["kernel"]
    )


def test_none_and_bad_names():
    params = _params(MLP)
    state = create_train_state(params, ADAM, jax.random.key(3))
    none = interventions.make_intervention("none", MLP)
    assert none.apply(state, X, jax.random.key(0)) is state and none.init(params) == {}
    with pytest.raises(ValueError, match="Unknown intervention"):
        interventions.make_intervention("dropout", MLP)
    with pytest.raises(ValueError, match="'redo' has no option 'threshold': it takes tau"):
        interventions.make_intervention("redo", MLP, threshold=0.1)
    with pytest.raises(ValueError, match="noise"):
        interventions.make_intervention("shrink_perturb", MLP, noise="uniform")


def test_vmapped_redo_equals_per_seed():
    seeds = np.arange(3)
    params = jax.tree_util.tree_map(lambda *p: jnp.stack(p), *[_planted_mlp_from(s) for s in seeds])
    states = jax.vmap(lambda p: create_train_state(p, ADAM, jax.random.key(0)))(params)
    rngs = jax.random.split(jax.random.key(0), 3)
    apply = interventions.make_intervention("redo", MLP, tau=0.0, init_fn=MLP_FRESH).apply
    batched = jax.jit(jax.vmap(apply, in_axes=(0, None, 0)))(states, X, rngs)
    single = _jitted("redo", tau=0.0)  # the same intervention, compiled once for all tests
    for i in range(3):
        one = single(jax.tree_util.tree_map(lambda a: a[i], states), X, rngs[i])
        for a, b in zip(
            jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(batched.params)
        ):
            np.testing.assert_allclose(a, b[i], rtol=1e-6, atol=1e-7)


def _planted_mlp_from(seed):
    params = _params(MLP, seed=int(seed))
    b0 = params["hidden_0"]["linear"]["bias"].at[jnp.array([0, 3])].set(-100.0)
    return _set(params, ("hidden_0", "linear", "bias"), b0)


def test_a_noisy_layer_has_the_same_parameters_initialized_with_or_without_noise():
    """So an intervention on a noisy network with ``apply_kwargs={'deterministic': True}`` (a
    fresh network drawn without noise) matches the trained one leaf for leaf."""
    from plasticity import layers  # noqa: PLC0415

    layer, x = layers.NoisyDense(4), jnp.ones((2, 3))
    rngs = {"params": jax.random.key(0), "noise": jax.random.key(1)}
    noisy = layer.init(rngs, x)["params"]
    plain = layer.init(rngs, x, deterministic=True)["params"]
    assert jax.tree.structure(noisy) == jax.tree.structure(plain)
    jax.tree.map(np.testing.assert_array_equal, noisy, plain)


def test_misused_layer_and_label_options_are_one_line_errors():
    """A plain string where a sequence of names belongs would be read letter by letter, and an
    unknown label selects nothing: both refused when the intervention is built."""
    model = networks.MLP((8,), 2, "none")
    for name, options, expected in (
        ("shrink_perturb", {"labels": "kernel"}, "must be a sequence of labels"),
        ("shrink_perturb", {"labels": ("kernels",)}, "unknown label 'kernels'"),
        ("reset_last_layers", {"layers": "output"}, "layers must be a sequence of layer names"),
        ("plasticity_injection", {"layers": "output"}, "layers must be a sequence of layer names"),
    ):
        with pytest.raises(ValueError, match=expected) as info:
            interventions.make_intervention(name, model, **options)
        assert "\n" not in str(info.value)
        with pytest.raises(ValueError, match=expected):
            interventions.check_options(name, options)  # what the launchers call up front


def test_redo_on_a_crelu_network_recycles_a_unit_only_when_both_its_copies_are_silent():
    """CReLU doubles a layer's features, [relu(z), relu(−z)]: feature k belongs to unit k mod C.
    Planted on a 4-unit layer: unit 1 is always positive (bias 100), so its relu(z) copy fires
    and only its relu(−z) copy is silent; unit 2 has z ≡ 0, so both copies are silent. ReDo must
    see two copies of four units, recycle unit 2 alone (incoming column from the fresh network,
    outgoing rows 2 and 2 + 4 zeroed, their moments zeroed) and leave the outputs unchanged:
    a silent unit contributes nothing, and unit 1's live copy still does."""
    model = networks.MLP((4,), 3, "none", activation="crelu")
    params = _params(model)
    kernel = params["hidden_0"]["linear"]["kernel"].at[:, 2].set(0.0)
    bias = params["hidden_0"]["linear"]["bias"].at[1].set(100.0).at[2].set(0.0)
    params = _set(params, ("hidden_0", "linear", "kernel"), kernel)
    params = _set(params, ("hidden_0", "linear", "bias"), bias)
    layers = units.analyse_units(model, params, X)
    assert [(layer.name, layer.units, layer.copies) for layer in layers] == [("hidden_0", 4, 2)]
    silent = _postacts(model, params)["hidden_0"].max(axis=0) == 0  # 8 features
    np.testing.assert_array_equal(np.flatnonzero(silent), [2, 5, 6])
    feature_unit = np.arange(8) % 4
    dormant = np.array([np.all(silent[feature_unit == u]) for u in range(4)])
    np.testing.assert_array_equal(dormant, [False, False, True, False])

    fresh = _fresh_init(model)
    redo = interventions.make_intervention("redo", model, tau=0.0, init_fn=fresh)
    after = jax.jit(redo.apply)(_state_with_unit_moments(params), X, jax.random.key(4))
    new = after.params
    for leaf in ("kernel", "bias"):
        expected = np.where(
            dormant, fresh(None, X)["hidden_0"]["linear"][leaf], params["hidden_0"]["linear"][leaf]
        )
        np.testing.assert_array_equal(new["hidden_0"]["linear"][leaf], expected, err_msg=leaf)
    rows = dormant[feature_unit]  # the outgoing rows of recycled units: features 2 and 6
    expected_out = np.where(rows[:, None], 0.0, params["output"]["kernel"])
    np.testing.assert_array_equal(new["output"]["kernel"], expected_out)
    for moments in _adam_moments(after):
        expected_moments = np.where(rows[:, None], 0.0, np.ones((8, 3)))
        np.testing.assert_array_equal(moments["output"]["kernel"], expected_moments)
    np.testing.assert_allclose(_forward(model, new), _forward(model, params), rtol=0, atol=1e-6)


def test_a_residual_blocks_incoming_parameters_exclude_its_nested_layers():
    """A ResNet block's output unit is fed by conv_1 (and the shortcut conv where there is one);
    conv_0 inside it is an activation layer of its own. Recycling a block unit re-initializes
    exactly the leaves under conv_1 and the shortcut, and recycling a conv_0 unit those under
    conv_0: the two sets are disjoint, read off the parameter paths."""
    model = networks.ResNet((1, 1), 4, 3, "layernorm")
    x = jnp.zeros((2, 8, 8, 3))
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    flat = traverse_util.flatten_dict(params)
    under = lambda *prefix: {p for p in flat if p[: len(prefix)] == prefix}  # noqa: E731
    incoming = {layer.name: set(layer.incoming) for layer in units.analyse_units(model, params, x)}
    for block, has_shortcut in (("stage_0_block_0", False), ("stage_1_block_0", True)):
        own = under(block, "conv_1") | under(block, "shortcut")
        assert bool(under(block, "shortcut")) == has_shortcut
        assert incoming[block] == own, block
        assert incoming[f"{block}/conv_0"] == under(block, "conv_0"), block
        assert not incoming[block] & incoming[f"{block}/conv_0"]


def _cbp_one_call_of_ten_steps(model, params, **options):
    """``extra['cbp']`` after one continual-backprop call standing for 10 steps (η = 0.9, rate
    0.01, maturity 5: every unit ages past maturity, none is replaced)."""
    cbp = interventions.make_intervention(
        "cbp",
        model,
        replacement_rate=0.01,
        maturity_threshold=5,
        decay_rate=0.9,
        steps_per_call=10,
        init_fn=_fresh_init(model),
        **options,
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    return jax.jit(cbp.apply)(state, X, jax.random.key(5)).extra["cbp"]


def _cbp_contribution(params):
    """E|h|·Σ|w_out| per unit of a 5 → 8 → 3 ReLU MLP's hidden layer, in float64 NumPy."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    (h,) = _numpy_relu_mlp(p, X)
    return np.abs(h).mean(0) * np.abs(p["output"]["kernel"]).sum(1)


def test_cbp_ranks_units_of_different_ages_by_bias_corrected_utility():
    """Unit 0 was just replaced (age 0, u = 0); the others are 50 calls old with u at their
    contribution c. One call (η = 0.9, rate 1/8 of 8 eligible units: one replacement) takes unit
    0 to u = 0.1·c₀, whose correction u/(1 − η^age) restores c₀: the unit replaced is the one of
    lowest contribution (NumPy), not unit 0, which only looks weak before the correction."""
    model = networks.MLP((8,), 3, "none")
    params = _params(model)
    eta = 0.9
    cbp = interventions.make_intervention(
        "cbp",
        model,
        replacement_rate=1 / 8,
        maturity_threshold=0,
        decay_rate=eta,
        init_fn=_fresh_init(model),
    )
    contribution = _cbp_contribution(params)
    young = np.arange(8) == 0
    extra = cbp.init(params)
    extra["layers"]["hidden_0.linear"] = {
        "utility": jnp.asarray(np.where(young, 0.0, contribution), jnp.float32),
        "age": jnp.asarray(np.where(young, 0, 50), jnp.int32),
        "to_replace": jnp.zeros([], jnp.float32),
    }
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": extra})
    after = jax.jit(cbp.apply)(state, X, jax.random.key(5)).extra["cbp"]["layers"]
    utility = np.where(young, (1 - eta) * contribution, contribution)
    age = np.where(young, 1, 51)
    corrected = utility / (1 - eta**age)
    assert np.argmin(utility) == 0 != np.argmin(corrected)  # the correction decides
    gap = np.sort(corrected)[1] / np.sort(corrected)[0] - 1
    assert gap > 1e-3  # no near-tie for float32 to break
    replaced = np.flatnonzero(np.asarray(after["hidden_0.linear"]["age"]) == 0)
    np.testing.assert_array_equal(replaced, [np.argmin(corrected)])


def test_cbp_steps_per_call_scale_decay_age_and_budget():
    """One call standing for N = 10 steps: u = (1 − η^N)·c from u = 0, age = N, and the budget
    grows by rate·N·eligible (0.01·10·8 = 0.8, below one unit: nothing replaced, 0.8 carried).
    NumPy reference for c; float32 agrees to ~1e-6 relative."""
    model = networks.MLP((8,), 3, "none")
    params = _params(model)
    eta, steps = 0.9, 10
    after = _cbp_one_call_of_ten_steps(model, params)
    entry = after["layers"]["hidden_0.linear"]
    expected = (1 - eta**steps) * _cbp_contribution(params)
    np.testing.assert_allclose(entry["utility"], expected, rtol=1e-5)
    np.testing.assert_array_equal(entry["age"], steps)
    np.testing.assert_allclose(entry["to_replace"], 0.01 * steps * 8, rtol=1e-6)
    assert int(after["num_replaced"]) == 0


def test_shrink_and_perturb_with_labels_leaves_the_other_parameters_alone():
    """`labels=('kernel', 'output_kernel')`: kernels become 0.5θ + 0.01ε (ε the fresh network,
    as in the formula test), biases stay bit-equal: the labels restrict the rewrite."""
    params = _params(MLP)
    state = _state_with_unit_moments(params)
    rng = jax.random.key(8)
    labels = ("kernel", "output_kernel")
    apply = _jitted("shrink_perturb", shrink=0.5, perturb=0.01, labels=labels)
    new = traverse_util.flatten_dict(apply(state, X, rng).params)
    eps = traverse_util.flatten_dict(MLP_FRESH(rng, X))
    for path, p in traverse_util.flatten_dict(params).items():
        if path[-1] == "kernel":
            np.testing.assert_allclose(new[path], 0.5 * p + 0.01 * eps[path], rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(new[path], p, err_msg=str(path))


def test_reset_last_layers_keeps_the_moments_when_asked():
    """`reset_moments=False`: the output layer is re-initialized from the fresh network, and
    every Adam moment (planted at 1) is kept, the reset layer's included (by default the reset
    layer's moments are zeroed, as `test_reset_last_layers` checks)."""
    params = _params(MLP)
    state = _state_with_unit_moments(params)
    rng = jax.random.key(9)
    new = _jitted("reset_last_layers", num_layers=1, reset_moments=False)(state, X, rng)
    for a, b in zip(
        jax.tree_util.tree_leaves(new.params["output"]),
        jax.tree_util.tree_leaves(MLP_FRESH(rng, X)["output"]),
    ):
        np.testing.assert_array_equal(a, b)
    for m in jax.tree_util.tree_leaves(_adam_moments(new)):
        np.testing.assert_array_equal(m, 1.0)


def test_cbp_on_a_cnn_reads_conv_kernels_by_input_channel_and_fan_in():
    """Continual backprop on a CNN (MinAtar's and Atari's torsos): a conv unit's outgoing
    weights are the next conv kernel's input-channel slice W[:, :, c, :], so its utility is
    (1 − η)·E|h_c|·Σ|W[:, :, c, :]| (E over batch and positions); a redrawn conv kernel is
    Kaiming-uniform over fan_in = kh·kw·in (3·3·1 = 9 for conv_0), not over its input
    channels alone (1: a bound three times larger)."""
    model = networks.SmallCNN((3, 4), (5,), 2, "none")
    x = jax.random.normal(jax.random.key(5), (4, 12, 12, 1))
    params = _params(model, x)
    fresh = _fresh_init(model, x)
    h = _postacts(model, params, x)["conv_0"]
    outgoing = np.abs(np.asarray(params["conv_1"]["linear"]["kernel"], np.float64))
    expected = 0.5 * np.abs(h).mean(axis=(0, 1, 2)) * outgoing.sum(axis=(0, 1, 3))
    cbp = interventions.make_intervention(
        "cbp", model, replacement_rate=1.0, maturity_threshold=1, decay_rate=0.5, init_fn=fresh
    )
    apply = jax.jit(cbp.apply)
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    state = apply(state, x, jax.random.key(6))  # every unit of age 1: none mature, none replaced
    utility = state.extra["cbp"]["layers"]["conv_0.linear"]["utility"]
    # The same float32 activations, reduced in another order (400 positions, 36 weights): float32
    # sums of that length differ by up to ~2e-5 relatively; reading another unit's weights, by 10%+.
    np.testing.assert_allclose(utility, expected, rtol=1e-4)
    new = apply(state, x, jax.random.key(7)).params  # age 2 > 1: every unit replaced
    kernel = np.asarray(new["conv_0"]["linear"]["kernel"])  # (3, 3, 1, 3)
    bound = np.sqrt(2.0) * np.sqrt(3.0 / 9)
    # 27 draws of U(−b, b): all below b/2 with probability 2^-27 (and the seed is fixed).
    assert 0.5 * bound < np.abs(kernel).max() <= bound


def test_cbp_adaptable_contribution_on_a_cnn_follows_each_channels_mean():
    """The authors' adaptable contribution on a conv layer (their convGnT): one running mean per
    channel over the batch and positions, m ← (1 − η)·E h after one call, and
    u = (1 − η)·E|h − m̂|·Σ|W_out[:, :, c, :]| / mean|W_in[..., c]| with m̂ = m/(1 − η)."""
    model = networks.SmallCNN((3, 4), (5,), 2, "none")
    x = jax.random.normal(jax.random.key(5), (4, 12, 12, 1))
    params = _params(model, x)
    h = np.asarray(_postacts(model, params, x)["conv_0"], np.float64)
    mean = 0.5 * h.mean(axis=(0, 1, 2))
    deviation = np.abs(h - mean / 0.5).mean(axis=(0, 1, 2))
    outgoing = np.abs(np.asarray(params["conv_1"]["linear"]["kernel"], np.float64))
    incoming = np.abs(np.asarray(params["conv_0"]["linear"]["kernel"], np.float64))
    expected = 0.5 * deviation * outgoing.sum(axis=(0, 1, 3)) / incoming.mean(axis=(0, 1, 2))
    cbp = interventions.make_intervention(
        "cbp",
        model,
        maturity_threshold=1,
        decay_rate=0.5,
        init_fn=_fresh_init(model, x),
        utility="adaptable_contribution",
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    entry = jax.jit(cbp.apply)(state, x, jax.random.key(6)).extra["cbp"]["layers"]["conv_0.linear"]
    # float32 means over 400 positions against float64 ones (see the test above): 1e-4.
    np.testing.assert_allclose(entry["mean_activation"], mean, rtol=1e-4)
    np.testing.assert_allclose(entry["utility"], expected, rtol=1e-4)


def test_cbp_adaptable_contribution_over_several_steps_on_a_tanh_network():
    """One call standing for N = 10 steps on a tanh MLP (activations of both signs): the
    running mean is m = (1 − η^N)·E h, whose bias correction m/(1 − η^age) at age N is E h
    itself, and u = (1 − η^N)·E|h − E h|·Σ|w_out| / mean|w_in|. NumPy reference in float64."""
    model = networks.MLP((8,), 3, "none", "tanh")
    params = _params(model)
    eta, steps = 0.9, 10
    after = _cbp_one_call_of_ten_steps(model, params, utility="adaptable_contribution")
    entry = after["layers"]["hidden_0.linear"]
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    h = np.tanh(
        np.asarray(X, np.float64) @ p["hidden_0"]["linear"]["kernel"]
        + p["hidden_0"]["linear"]["bias"]
    )
    assert (h < 0).any() and (h > 0).any()  # a mean of h is not a mean of |h|
    deviation = np.abs(h - h.mean(0)).mean(0)
    outgoing = np.abs(p["output"]["kernel"]).sum(1)
    incoming = np.abs(p["hidden_0"]["linear"]["kernel"]).mean(0)
    # float32 against float64 over 32 examples: ~1e-6 relative; the mutants differ by 1e-2+.
    np.testing.assert_allclose(entry["mean_activation"], (1 - eta**steps) * h.mean(0), rtol=1e-4)
    expected = (1 - eta**steps) * deviation * outgoing / incoming
    np.testing.assert_allclose(entry["utility"], expected, rtol=1e-4)
    np.testing.assert_array_equal(entry["age"], steps)
    assert int(after["num_replaced"]) == 0


def test_cbp_adaptable_contribution_reads_a_noisy_layers_mean_kernel():
    """On a noisy head (Rainbow's), a unit's incoming magnitude is mean|μ kernel|, not its σ
    kernel's (which starts at one constant for every unit)."""
    model = networks.QNetwork(
        networks.MLP((6,), 0, "none"),
        networks.ValueHead(num_actions=3, hidden_sizes=(4,), norm="none", noisy=True),
    )
    kwargs = {"rngs": {"noise": jax.random.key(1)}}
    shapes = jax.eval_shape(model.init, {"params": jax.random.key(0), **kwargs["rngs"]}, X)
    rng = np.random.default_rng(0)  # μ and σ kernels drawn alike, so that they differ
    params = jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape), jnp.float32), shapes["params"]
    )
    (layer,) = [
        layer for layer in units.analyse_units(model, params, X, kwargs) if "head" in layer.name
    ]
    kernel = np.abs(np.asarray(params["head"]["hidden_0"]["linear"]["kernel"], np.float64))
    magnitude = interventions.incoming_weight_magnitude(params, layer)
    np.testing.assert_allclose(magnitude, kernel.mean(0), rtol=1e-6)


def test_cbp_refuses_an_unknown_utility_in_one_line():
    with pytest.raises(ValueError, match="Unknown CBP utility 'adaptive_contribution'"):
        interventions.check_options("cbp", {"utility": "adaptive_contribution"})


def test_cbp_adaptable_contribution_reads_a_residual_units_two_incoming_kernels():
    """A block unit after a change of width is fed by conv_1 and the shortcut's projection: its
    incoming magnitude is the mean |w| over both kernels' entries, and continual backprop with
    the authors' utility runs on such a ResNet (it had stopped on the two kernels)."""
    model = networks.ResNet((1, 1), 4, 3, "none")
    x = jax.random.normal(jax.random.key(5), (2, 8, 8, 3))
    params = _params(model, x)
    (layer,) = [u for u in units.analyse_units(model, params, x) if u.name == "stage_1_block_0"]
    block = params["stage_1_block_0"]
    entries = [
        np.abs(np.asarray(block[name]["linear"]["kernel"], np.float64)).reshape(-1, 8)
        for name in ("conv_1", "shortcut")
    ]
    magnitude = interventions.incoming_weight_magnitude(params, layer)
    np.testing.assert_allclose(magnitude, np.concatenate(entries).mean(0), rtol=1e-5)
    cbp = interventions.make_intervention(
        "cbp", model, init_fn=_fresh_init(model, x), utility="adaptable_contribution"
    )
    state = create_train_state(params, ADAM, jax.random.key(3), {"cbp": cbp.init(params)})
    utility = jax.jit(cbp.apply)(state, x, jax.random.key(6)).extra["cbp"]["layers"]
    assert all(np.isfinite(entry["utility"]).all() for entry in utility.values())


def test_vmapped_cbp_equals_per_seed_and_draws_a_fresh_network_only_when_a_seed_replaces():
    """Seeds vmapped (the continual trainer's default): the seed whose budget reaches a unit
    replaces it and the others keep theirs, as each alone would; a call where no seed replaces
    draws no fresh network (a plain `lax.cond` under vmap drew one at every call)."""
    draws = []

    def counting_init(rng, inputs):
        jax.debug.callback(lambda: draws.append(1))
        return MLP_FRESH(rng, inputs)

    cbp = interventions.make_intervention(
        "cbp", MLP, replacement_rate=1e-3, maturity_threshold=0, init_fn=counting_init
    )
    seeds = [_params(MLP, seed=s) for s in range(3)]
    states = []
    for seed, params in enumerate(seeds):
        extra = cbp.init(params)
        extra["layers"]["hidden_0.linear"]["to_replace"] = jnp.float32(0.995 if seed == 1 else 0)
        states.append(create_train_state(params, ADAM, jax.random.key(seed), {"cbp": extra}))
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)
    rngs = jax.random.split(jax.random.key(5), 3)
    apply = jax.jit(jax.vmap(cbp.apply, in_axes=(0, None, 0)))
    batched = apply(stacked, X, rngs)
    jax.effects_barrier()
    assert draws  # seed 1 replaced a unit of hidden_0 (0.995 + 8 × 1e-3 ≥ 1)
    np.testing.assert_array_equal(batched.extra["cbp"]["num_replaced"], [0, 1, 0])
    single = jax.jit(cbp.apply)
    for seed, state in enumerate(states):
        alone = single(state, X, rngs[seed])
        leaves = lambda s: jax.tree_util.tree_leaves((s.params, s.opt_state, s.extra))  # noqa: E731
        for a, b in zip(leaves(alone), leaves(batched)):
            np.testing.assert_allclose(a, b[seed], rtol=1e-6, atol=1e-7)
    draws.clear()
    again = apply(batched, X, rngs)  # budgets 0.008 (and 0.003 for seed 1): nobody replaces
    jax.effects_barrier()
    np.testing.assert_array_equal(again.extra["cbp"]["num_replaced"], [0, 1, 0])
    assert not draws


def test_row_features_decode_the_feeding_unit_and_refuse_mixed_units():
    """Each input row's feature is code / ones along a path that only rescales (a negative gate
    included): rows fed by features 3 and 2 decode to indices 2 and 1; one row whose ratio
    differs between examples mixes units and is refused in one line."""
    rows = units._row_features(np.array([[-3.0, 2.0]]), np.array([[-1.0, 1.0]]), "h", "out")
    np.testing.assert_array_equal(rows, [2, 1])
    unreached = units._row_features(np.array([[0.0, 2.0]]), np.array([[0.0, 1.0]]), "h", "out")
    np.testing.assert_array_equal(unreached, [-1, 1])
    with pytest.raises(ValueError, match=r"^Layer 'h' reaches 'out' through an op mixing units"):
        units._row_features(np.array([[2.0], [3.0]]), np.ones((2, 1)), "h", "out")
