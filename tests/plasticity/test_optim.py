"""Optimizer factory: masks, L2 / L2-init / weight decay semantics, schedules, effective LR."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from plasticity import effective_lr, networks, optim, param_labels, schedules

MODEL = networks.MLP((6,), 3, "layernorm")
PARAMS = MODEL.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
ZERO_GRADS = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)


def _updates(grads=ZERO_GRADS, params=PARAMS, **overrides):
    config = optim.default_optimizer_config()
    config.update(name="sgd", learning_rate=0.1)
    for key, value in overrides.items():
        config[key] = value
    tx = optim.make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(PARAMS), params)
    return traverse_util.flatten_dict(updates)


def _labels():
    return traverse_util.flatten_dict(param_labels.label_params(PARAMS))


@pytest.mark.parametrize("kind", ["weight_decay", "l2"])
def test_decay_masks_leave_biases_and_norm_parameters_alone_by_default(kind):
    updates = _updates(**{kind: 0.5})
    flat_params = traverse_util.flatten_dict(PARAMS)
    for path, label in _labels().items():
        if label in ("bias", "norm_scale", "norm_offset"):
            assert not np.any(updates[path]), path
        else:
            np.testing.assert_allclose(updates[path], -0.1 * 0.5 * flat_params[path], rtol=1e-6)
    everything = _updates(**{kind: 0.5, "decay_biases_and_norms": True})
    np.testing.assert_allclose(everything[("hidden_0", "norm", "scale")], -0.05 * np.ones(6))


def test_coupled_l2_goes_through_adam_while_decoupled_decay_does_not():
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-3), PARAMS)
    kernel = ("hidden_0", "linear", "kernel")
    adam_only = _updates(grads, name="adam")[kernel]
    decoupled = _updates(grads, name="adam", weight_decay=0.5)[kernel]
    np.testing.assert_allclose(
        decoupled - adam_only, -0.1 * 0.5 * traverse_util.flatten_dict(PARAMS)[kernel], rtol=1e-4
    )
    coupled = _updates(grads, name="adam", l2=0.5)[kernel]
    # Adam's first step is -lr·sign(g): the L2 term changes the sign pattern, not the magnitude.
    np.testing.assert_allclose(np.abs(coupled), 0.1, rtol=1e-3)


def test_l2_init_pulls_towards_initial_parameters():
    moved = jax.tree_util.tree_map(lambda p: p + 2.0, PARAMS)
    updates = _updates(params=moved, l2_init=0.25)
    for path, update in updates.items():
        np.testing.assert_allclose(update, -0.1 * 0.25 * 2.0, rtol=1e-6, err_msg=str(path))
    assert not any(np.any(u) for u in _updates(l2_init=0.25).values())


def test_gradient_clipping_bounds_the_global_norm():
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 100.0), PARAMS)
    updates = _updates(grads, max_grad_norm=1.0)
    norm = np.sqrt(sum(np.sum(np.square(u)) for u in updates.values()))
    np.testing.assert_allclose(norm, 0.1, rtol=1e-5)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_decreases_a_quadratic(name):
    config = optim.default_optimizer_config()
    config.update(name=name, learning_rate=0.05)
    tx = optim.make_optimizer(config)
    loss = lambda p: sum(jnp.sum(jnp.square(x - 0.3)) for x in jax.tree_util.tree_leaves(p))
    params, state = PARAMS, tx.init(PARAMS)
    for _ in range(5):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < loss(PARAMS)


def test_unknown_optimizer_and_schedule_are_refused():
    config = optim.default_optimizer_config()
    config.name = "lion"
    with pytest.raises(ValueError, match="Unknown optimizer 'lion'"):
        optim.make_optimizer(config)
    with pytest.raises(ValueError, match="Unknown schedule"):
        schedules.make_schedule("triangle", 1.0)


def test_traced_hyperparameters_vmap_over_a_grid():
    config = optim.default_optimizer_config()
    config.name = "sgd"

    def one_update(lr, wd):
        tx = optim.make_optimizer(config, learning_rate=lr, weight_decay=wd)
        updates, _ = tx.update(ZERO_GRADS, tx.init(PARAMS), PARAMS)
        return updates["hidden_0"]["linear"]["kernel"]

    grid = jax.jit(jax.vmap(one_update))(jnp.array([0.1, 0.2]), jnp.array([1.0, 0.5]))
    kernel = PARAMS["hidden_0"]["linear"]["kernel"]
    np.testing.assert_allclose(grid[0], -0.1 * kernel, rtol=1e-6)
    np.testing.assert_allclose(grid[1], -0.1 * kernel, rtol=1e-6)


def test_schedule_values_at_key_points():
    linear = schedules.linear_decay(1.0, 0.1, 100)
    np.testing.assert_allclose(
        [linear(0), linear(50), linear(100), linear(500)], [1.0, 0.55, 0.1, 0.1], rtol=1e-6
    )
    cosine = schedules.warmup_cosine(
        1.0, total_steps=110, warmup_steps=10, init_value=0.0, end_value=0.1
    )
    np.testing.assert_allclose(
        [cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)],
        [0.0, 0.5, 1.0, 0.55, 0.1],
        rtol=1e-5,
        atol=1e-7,
    )
    # NaP's sequential-ALE schedule: restarts at every game switch.
    restarts = schedules.cosine_restarts(
        6.25e-4,
        boundaries=[5000, 10000],
        total_steps=15000,
        warmup_steps=1000,
        init_value=1e-8,
        end_value=1e-6,
    )
    for start in (0, 5000, 10000):
        np.testing.assert_allclose(restarts(start), 1e-8, rtol=1e-4)
        np.testing.assert_allclose(restarts(start + 1000), 6.25e-4, rtol=1e-5)
        np.testing.assert_allclose(restarts(start + 3000), (6.25e-4 + 1e-6) / 2, rtol=1e-4)
        np.testing.assert_allclose(restarts(start + 4999), 1e-6, rtol=1e-3)
    np.testing.assert_allclose(jax.jit(restarts)(jnp.int32(6000)), 6.25e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="below total_steps"):
        schedules.cosine_restarts(1.0, boundaries=[100], total_steps=100)
    with pytest.raises(ValueError, match=r"Task boundaries \[-5, 50\] must be >= 0"):
        schedules.cosine_restarts(1.0, boundaries=[-5, 50], total_steps=100)
    # A task no longer than the warm-up never reaches the peak (0.499 of it for 500 of 1,000).
    with pytest.raises(ValueError, match="a task of 500 updates never reaches the peak"):
        schedules.cosine_restarts(1.0, boundaries=[500], total_steps=1500, warmup_steps=1000)


def test_make_schedule_passes_every_setting_and_refuses_empty_spans():
    """A config's end value, warm-up and initial value reach the schedule it names; a cosine holds
    its end value after ``total_steps``; a decay of no steps, a warm-up as long as the run and a
    task no longer than the warm-up are refused; a table's steps must strictly increase."""
    linear = schedules.make_schedule("linear", 1.0, total_steps=100, end_value=0.1)
    np.testing.assert_allclose([linear(0), linear(100)], [1.0, 0.1], rtol=1e-6)
    cosine = schedules.make_schedule(
        "warmup_cosine", 1.0, total_steps=110, warmup_steps=10, init_value=0.2, end_value=0.1
    )
    np.testing.assert_allclose(
        [cosine(0), cosine(10), cosine(110), cosine(200)], [0.2, 1.0, 0.1, 0.1], rtol=1e-6
    )
    with pytest.raises(ValueError, match="decay_steps > 0, got 0"):
        schedules.linear_decay(1.0, 0.0, 0)
    with pytest.raises(ValueError, match=r"total_steps \(10\) must exceed warmup_steps \(10\)"):
        schedules.warmup_cosine(1.0, total_steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="a task of 1000 updates never reaches the peak"):
        schedules.cosine_restarts(1.0, boundaries=[1000], total_steps=2000, warmup_steps=1000)
    with pytest.raises(ValueError, match=r"steps must be increasing, got \[0, 0, 10\]"):
        schedules.scale_by_layer_schedule([0, 0, 10], {"hidden_0": [1.0, 1.0, 0.5]})


def test_per_layer_schedule_replays_implicit_decay():
    table = {"hidden_0/linear": np.array([2.0, 4.0]), "output": np.array([1.0, 1.0])}
    factors = schedules.implicit_layer_factors(table)  # SGD's exponent 2 by default
    np.testing.assert_allclose(factors["hidden_0/linear"], [1.0, 0.25])
    tx = schedules.scale_by_layer_schedule([0, 10], factors)
    ones = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    for step in range(6):
        updates, state = tx.update(ones, state)
    np.testing.assert_allclose(updates["hidden_0"]["linear"]["kernel"], 1 - 0.75 * 5 / 10)
    np.testing.assert_allclose(updates["output"]["kernel"], 1.0)
    np.testing.assert_allclose(updates["hidden_0"]["norm"]["scale"], 1.0)


def test_layer_schedules_accept_logged_layer_names_and_refuse_unknown_ones():
    """'hidden_0' (as diagnostics rows write it) and 'hidden_0/linear' (param labels) are one
    layer; a name of no layer is refused at init with one line naming it and the known layers."""
    ones = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    for name in ("hidden_0", "hidden_0/linear"):
        tx = schedules.scale_by_layer_schedule([0, 10], {name: np.array([0.5, 0.5])})
        updates, _ = tx.update(ones, tx.init(PARAMS))
        np.testing.assert_allclose(updates["hidden_0"]["linear"]["kernel"], 0.5, err_msg=name)
        np.testing.assert_allclose(updates["hidden_0"]["norm"]["scale"], 1.0, err_msg=name)
    norms = {"hidden_9": np.array([1.0, 2.0])}
    for tx in (
        schedules.scale_by_layer_schedule([0, 10], norms),
        schedules.scale_by_implicit_layer_schedule([0, 10], norms),
    ):
        with pytest.raises(
            ValueError, match=r"Unknown layers \['hidden_9'\].*hidden_0, output"
        ) as e:
            tx.init(PARAMS)
        assert "\n" not in str(e.value)
    twice = {"hidden_0": np.ones(2), "hidden_0/linear": np.ones(2)}
    with pytest.raises(ValueError, match="names one layer twice"):
        schedules.scale_by_layer_schedule([0, 10], twice).init(PARAMS)


def test_implicit_schedule_interpolates_the_squared_norm_and_uses_the_runs_own_initial_norm():
    """Baseline norms 2 → 4 between steps 0 and 10: at step 5 the factor is ρ²/‖W‖² with
    ‖W‖² = (4 + 16)/2 = 10 (interpolating the factor would give ρ²·(1/4 + 1/16)/2), ρ this run's
    initial kernel norm; held at the last value after step 10."""
    rho_sq = float(np.sum(np.square(PARAMS["hidden_0"]["linear"]["kernel"])))
    tx = schedules.scale_by_implicit_layer_schedule([0, 10], {"hidden_0": np.array([2.0, 4.0])})
    ones = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    factors = []
    for _ in range(21):
        updates, state = tx.update(ones, state)
        factors.append(float(updates["hidden_0"]["linear"]["kernel"][0, 0]))
        np.testing.assert_allclose(updates["output"]["kernel"], 1.0)
    np.testing.assert_allclose(factors[0], rho_sq / 4.0, rtol=1e-6)
    np.testing.assert_allclose(factors[5], rho_sq / 10.0, rtol=1e-6)
    np.testing.assert_allclose(factors[20], rho_sq / 16.0, rtol=1e-6)
    adam = schedules.scale_by_implicit_layer_schedule([0, 10], {"hidden_0": [2.0, 4.0]}, 1.0)
    updates, _ = adam.update(ones, adam.init(PARAMS))
    np.testing.assert_allclose(
        updates["hidden_0"]["linear"]["kernel"], np.sqrt(rho_sq) / 2.0, rtol=1e-6
    )  # a float32 sum of 24 squares: within an ulp or two, whatever order XLA sums in


def test_a_logged_runs_weight_norm_rows_replay_its_schedule_under_nap():
    """Round trip on a tiny LayerNorm MLP: an SGD baseline logs weight_norm/<layer> rows every
    step (through the diagnostics, as a trainer writes them); the schedule built from those rows
    makes a NaP run retrace the baseline's outputs step by step (SGD on scale-invariant kernels:
    same directions, angular step η/‖W_baseline‖² in both). Without the schedule it drifts."""
    from plasticity import diagnostics  # noqa: PLC0415

    model = networks.MLP((16, 16), 4, "layernorm")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 6)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).integers(0, 4, 32))
    initial = model.init(jax.random.key(2), x)["params"]
    loss = lambda p, inputs, targets: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, inputs), targets
    ).mean()
    log = jax.jit(diagnostics.make_diagnostics_fn(model, loss, ("weight_norm",)))
    steps = 25
    # At this rate the replay's error (1.2e-5 of the output scale) is the method's own: float64
    # gives the same. At 2.0 float32 rounding grew chaotically over the 25 steps, from 0.03 to 1.1
    # times the tolerance depending on the CPU's instruction set.
    learning_rate = 1.0

    def run(nap_enabled, layer_schedule=None):
        config = optim.default_optimizer_config()
        config.update(name="sgd", learning_rate=learning_rate)
        config.nap.update(enabled=nap_enabled, gamma_beta="free")
        tx = optim.make_optimizer(config, layer_schedule=layer_schedule)
        step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p, x, y), s, p))
        params, state, rows, outputs = initial, tx.init(initial), [], []
        for t in range(steps):
            metrics = log(params, params, x, y, jax.random.key(0), learning_rate)
            rows.append({"event": "diagnostics", "step": t, "seed": 0, **metrics})
            rows.append({"event": "task", "step": t, "seed": 0, "online_loss": 1.0})
            outputs.append(np.asarray(model.apply({"params": params}, x)))
            updates, state = step(params, state)
            params = optax.apply_updates(params, updates)
        return rows, np.stack(outputs)

    rows, baseline = run(False)
    schedule = schedules.layer_schedule_from_metrics(rows, exponent=2.0, seed=0)
    assert set(schedule.norms) == {"hidden_0", "hidden_1"}  # the output layer has no schedule
    assert schedule.norms["hidden_1"][-1] > 1.15 * schedule.norms["hidden_1"][0]  # norms grew
    _, replayed = run(True, schedule)
    _, plain_nap = run(True)
    scale = np.max(np.abs(baseline))
    np.testing.assert_allclose(replayed, baseline, rtol=0, atol=2e-4 * scale)
    assert np.max(np.abs(plain_nap - baseline)) > 1e-2 * scale


def test_layer_schedule_from_metrics_refuses_ambiguous_or_missing_rows():
    rows = [
        {"step": 0, "seed": s, "weight_norm/hidden_0": 1.0, "weight_norm/output": 1.0}
        for s in (0, 1)
    ]
    with pytest.raises(ValueError, match="Several runs"):
        schedules.layer_schedule_from_metrics(rows)
    assert schedules.layer_schedule_from_metrics(rows, seed=1).steps == (0,)
    with pytest.raises(ValueError, match="No metrics rows"):
        schedules.layer_schedule_from_metrics(rows, seed=2)
    with pytest.raises(ValueError, match=r"Layers \['hidden_3'\] have no weight_norm rows"):
        schedules.layer_schedule_from_metrics(rows, layers=["hidden_3"], seed=0)
    with pytest.raises(ValueError, match="No layers to schedule: choose some of hidden_0, output"):
        schedules.layer_schedule_from_metrics(rows, layers=[], seed=0)
    # A norm of 0 would scale the layer's steps by an infinite factor.
    with pytest.raises(ValueError, match="norms of 'hidden_0' must be > 0"):
        schedules.scale_by_implicit_layer_schedule([0, 10], {"hidden_0": [2.0, 0.0]})
    with pytest.raises(ValueError, match="at least one layer"):
        schedules.scale_by_implicit_layer_schedule([0, 10], {})
    with pytest.raises(ValueError, match="unknown optimizer 'sgd_typo'"):
        effective_lr.optimizer_exponent("sgd_typo")


def test_effective_learning_rates_match_numpy():
    flat = traverse_util.flatten_dict(PARAMS)
    elr = effective_lr.effective_learning_rates(PARAMS, 0.01)
    w = np.asarray(flat[("hidden_0", "linear", "kernel")])
    np.testing.assert_allclose(elr["hidden_0/linear"], 0.01 / np.sum(w * w), rtol=1e-5)
    moved = jax.tree_util.tree_map(lambda p: p * 1.1, PARAMS)
    ratios = effective_lr.relative_update_norms(PARAMS, moved)
    for layer, ratio in ratios.items():
        np.testing.assert_allclose(ratio, 0.1, rtol=1e-5, err_msg=layer)
    assert set(ratios) == {"hidden_0/linear", "output"}


def test_a_misspelt_field_is_refused_naming_the_closest():
    """The library's pattern (`default_optimizer_config()`, `update`, `make_optimizer`) would
    otherwise keep the default learning rate for ``learning_rat=0.5`` without a word."""
    config = optim.default_optimizer_config()
    config.update(name="adam", learning_rat=0.5)
    with pytest.raises(ValueError, match=r"'learning_rat' \(did you mean learning_rate\?\)"):
        optim.make_optimizer(config)
    config = optim.default_optimizer_config()
    config.schedule.warmup = 10
    with pytest.raises(ValueError, match="did you mean schedule.warmup_steps"):
        optim.make_optimizer(config)


@pytest.mark.parametrize(
    "name, fields, reference",
    [
        ("sgd", {}, lambda lr: optax.sgd(lr)),
        (
            "momentum",
            {"momentum": 0.8, "nesterov": True},
            lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True),
        ),
        (
            "adam",
            {"b1": 0.8, "b2": 0.5, "eps": 1e-3},
            lambda lr: optax.adam(lr, b1=0.8, b2=0.5, eps=1e-3),
        ),
        (
            "rmsprop",
            {"rmsprop_decay": 0.7, "eps": 1e-3},
            lambda lr: optax.rmsprop(lr, decay=0.7, eps=1e-3),
        ),
        (
            "rmsprop",
            {"rmsprop_decay": 0.7, "eps": 1e-3, "rmsprop_centered": True},
            lambda lr: optax.rmsprop(lr, decay=0.7, eps=1e-3, centered=True),
        ),
    ],
    ids=["sgd", "nesterov", "adam", "rmsprop", "rmsprop_centered"],
)
def test_every_optimizer_field_reaches_the_update(name, fields, reference):
    """Each optimizer with every one of its hyper-parameters away from its default, against
    optax's own optimizer of those values over three updates with different gradients (the
    moments' decays show from the second update on). Same float32 operations in both chains:
    agreement to 1e-5 relative; ignoring `b2` moves Adam's updates by up to 13%, ignoring
    `nesterov` the momentum updates by up to 44%."""
    learning_rate = 0.1
    config = optim.default_optimizer_config()
    config.update(name=name, learning_rate=learning_rate, **fields)
    tx, ref = optim.make_optimizer(config), reference(learning_rate)
    state, ref_state = tx.init(PARAMS), ref.init(PARAMS)
    rng = np.random.default_rng(50)
    for step in range(3):
        grads = jax.tree_util.tree_map(
            lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), PARAMS
        )
        updates, state = tx.update(grads, state, PARAMS)
        expected, ref_state = ref.update(grads, ref_state, PARAMS)
        for path, value in traverse_util.flatten_dict(expected).items():
            np.testing.assert_allclose(
                traverse_util.flatten_dict(updates)[path],
                value,
                rtol=1e-5,
                atol=1e-7,
                err_msg=f"{name} step {step} {path}",
            )


def test_layer_schedules_scale_each_layers_bias_with_its_kernel():
    """Both per-layer schedules scale every parameter of the layer's linear module, its bias
    included (the docstrings' 'kernel and bias'). On a no-norm MLP, whose hidden layers have
    biases, with unit updates: the explicit schedule's factors 0.5 (hidden_0) and 0.25 (output),
    and the implicit one's ρ²/‖W‖² with baseline norms 2 (ρ² this run's kernel sum of squares,
    NumPy), on kernel and bias alike."""
    model = networks.MLP((6,), 3, "none")
    params = model.init(jax.random.key(1), jnp.ones((1, 4)))["params"]
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    explicit = schedules.scale_by_layer_schedule(
        [0, 10], {"hidden_0": np.array([0.5, 0.5]), "output": np.array([0.25, 0.25])}
    )
    implicit = schedules.scale_by_implicit_layer_schedule(
        [0, 10], {"hidden_0": np.array([2.0, 2.0]), "output": np.array([2.0, 2.0])}
    )
    rho_sq = {
        "hidden_0": np.sum(
            np.square(np.asarray(params["hidden_0"]["linear"]["kernel"], np.float64))
        ),
        "output": np.sum(np.square(np.asarray(params["output"]["kernel"], np.float64))),
    }
    for tx, factors in (
        (explicit, {"hidden_0": 0.5, "output": 0.25}),
        (implicit, {layer: value / 4.0 for layer, value in rho_sq.items()}),
    ):
        updates, _ = tx.update(ones, tx.init(params))
        for layer, leaves in (
            ("hidden_0", updates["hidden_0"]["linear"]),
            ("output", updates["output"]),
        ):
            for leaf in ("kernel", "bias"):
                np.testing.assert_allclose(
                    leaves[leaf], factors[layer], rtol=1e-6, err_msg=f"{layer} {leaf}"
                )


def test_the_implicit_schedules_initial_norm_is_the_kernels_alone():
    """ρ_l is this run's initial *kernel* norm, the quantity the baseline's norms are measured
    as: a layer's bias (present without a norm, and drawn non-zero by the 'fan_in_uniform'
    initialization, a noisy layer's σ bias too) does not enter it. With a baseline norm at step 0
    equal to ρ the first factor is 1 (ρ² over ρ² recomputed from float32 ρ: within a few ulps);
    with the bias in ρ it would be 1 + ‖b‖²/ρ² (here 1 + 6/ρ², about 3)."""
    params = networks.MLP((6,), 3, "none").init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    params["hidden_0"]["linear"]["bias"] = jnp.ones((6,))
    rho = float(jnp.sqrt(jnp.sum(jnp.square(params["hidden_0"]["linear"]["kernel"]))))
    tx = schedules.scale_by_implicit_layer_schedule([0, 10], {"hidden_0": [rho, 2 * rho]})
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(ones, tx.init(params))
    np.testing.assert_allclose(updates["hidden_0"]["linear"]["kernel"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(updates["hidden_0"]["linear"]["bias"], 1.0, rtol=1e-5)


def test_output_layers_inside_a_head_have_no_implicit_schedule():
    """A dueling or distributional head logs its output layers as 'head/output_value',
    'head/output_advantage': output layers (not scale invariant, left free by NaP) however deep
    they sit, so the default layer choice leaves them out as it leaves out 'output'."""
    row = {"step": 0, "weight_norm/torso/conv_0": 2.0, "weight_norm/head/value_hidden_0": 3.0}
    row.update({"weight_norm/head/output_value": 1.0, "weight_norm/head/output_advantage": 1.0})
    schedule = schedules.layer_schedule_from_metrics([row])
    assert set(schedule.norms) == {"torso/conv_0", "head/value_hidden_0"}
