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


def test_per_layer_schedule_replays_implicit_decay():
    table = {"hidden_0/linear": np.array([2.0, 4.0]), "output": np.array([1.0, 1.0])}
    factors = schedules.implicit_layer_factors(table, exponent=2.0)
    np.testing.assert_allclose(factors["hidden_0/linear"], [1.0, 0.25])
    tx = schedules.scale_by_layer_schedule([0, 10], factors)
    ones = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    for step in range(6):
        updates, state = tx.update(ones, state)
    np.testing.assert_allclose(updates["hidden_0"]["linear"]["kernel"], 1 - 0.75 * 5 / 10)
    np.testing.assert_allclose(updates["output"]["kernel"], 1.0)
    np.testing.assert_allclose(updates["hidden_0"]["norm"]["scale"], 1.0)


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
