"""Deferred dense updates: factor gradients, windows of SGD, which layers are deferred.

Tolerances: the comparisons are float32 results of the same arithmetic grouped differently
(x·W + (x·Aᵀ)·D against x·(W + AᵀD); one matrix product of a window's factors against a sum of
rank-1 updates) on values of order 1 through a few layers of width ≤ 16, so they differ by a few
float32 ulps (about 1e-7); rtol 1e-5 leaves two orders of magnitude of margin, and a wrong
factor, slot or learning rate changes results at the 1e-2 level.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from plasticity import deferred, networks, optim

MODEL = networks.MLP((16, 12), 5)
INPUTS = jax.random.normal(jax.random.key(1), (2, 7))
TARGETS = jax.random.normal(jax.random.key(2), (2, 5))
PARAMS = MODEL.init(jax.random.key(0), INPUTS)["params"]
RTOL, ATOL = 1e-5, 1e-6


def squared_error(params, inputs, targets):
    outputs = MODEL.apply({"params": params}, inputs)
    loss = jnp.mean(jnp.square(outputs - targets))
    return loss, {"loss": loss}


def all_sites(**thresholds):
    thresholds.setdefault("min_weights", 1)
    return deferred.find_sites(squared_error, PARAMS, INPUTS, TARGETS, **thresholds)


def random_factors(sites, window, key):
    out = {}
    for i, (path, site) in enumerate(sites.items()):
        a, d = jax.random.split(jax.random.fold_in(key, i))
        out[path] = deferred.Factors(
            jax.random.normal(a, (window * site.rows, site.inputs)),
            0.1 * jax.random.normal(d, (window * site.rows, site.outputs)),
            jnp.float32(0.9 - 0.1 * i),
        )
    return out


def test_sites_are_every_dense_layer_with_its_rows_and_widths():
    sites = all_sites()
    assert sites == {
        ("hidden_0", "linear", "kernel"): deferred.Site(2, 7, 16),
        ("hidden_1", "linear", "kernel"): deferred.Site(2, 16, 12),
        ("output", "kernel"): deferred.Site(2, 12, 5),
    }


def test_small_kernels_and_many_rows_are_not_deferred():
    assert deferred.find_sites(squared_error, PARAMS, INPUTS, TARGETS) == {}  # all < 2**20
    assert set(all_sites(min_weights=150)) == {("hidden_1", "linear", "kernel")}
    assert all_sites(max_rows=1) == {}


def test_a_layer_called_twice_is_not_deferred():
    class Shared(nn.Module):
        @nn.compact
        def __call__(self, x):
            dense = nn.Dense(7)
            return nn.Dense(3)(dense(dense(x)))

    model = Shared()
    params = model.init(jax.random.key(0), INPUTS)["params"]
    sites = deferred.find_sites(
        lambda p, x: model.apply({"params": p}, x), params, INPUTS, min_weights=1
    )
    assert set(sites) == {("Dense_1", "kernel")}


def test_factor_gradients_are_the_gradients_of_the_pending_kernels():
    sites = all_sites()
    factors = random_factors(sites, 3, jax.random.key(3))
    kernels, rest = deferred.split_kernels(PARAMS, sites)
    (loss, aux), rest_grads, factor_grads = deferred.factor_value_and_grad(squared_error, sites)(
        kernels, rest, factors, INPUTS, TARGETS
    )
    # The reference: the kernels with their pending updates applied, differentiated as usual.
    applied = deferred.merge(deferred.apply_factors(kernels, factors), rest)
    (want_loss, _), want = jax.value_and_grad(squared_error, has_aux=True)(applied, INPUTS, TARGETS)
    want = traverse_util.flatten_dict(want)
    np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
    assert aux["loss"] == loss
    assert set(rest_grads) == set(want) - set(sites)
    for path, grad in rest_grads.items():
        np.testing.assert_allclose(grad, want[path], rtol=RTOL, atol=ATOL)
    for path, (x, delta) in factor_grads.items():
        assert x.shape == (sites[path].rows, sites[path].inputs)
        np.testing.assert_allclose(x.T @ delta, want[path], rtol=RTOL, atol=ATOL)
    assert float(jnp.abs(applied["output"]["kernel"] - PARAMS["output"]["kernel"]).max()) > 1e-2


def sgd(**overrides):
    config = optim.default_optimizer_config()
    config.update(name="sgd", learning_rate=0.05, **overrides)
    return optim.make_optimizer(config)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"weight_decay": 0.5, "l2": 0.3}, {"l2": 0.3, "decay_biases_and_norms": True}],
    ids=["sgd", "decay-kernels", "decay-all"],
)
def test_a_window_of_deferred_steps_is_the_same_sgd(overrides):
    sites = all_sites()
    tx = sgd(**overrides)
    inputs = jax.random.normal(jax.random.key(4), (6, *INPUTS.shape))
    targets = jax.random.normal(jax.random.key(5), (6, *TARGETS.shape))

    def sgd_step(carry, batch):
        params, opt_state = carry
        grads = jax.grad(lambda p: squared_error(p, *batch)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (want, _), _ = jax.lax.scan(sgd_step, (PARAMS, tx.init(PARAMS)), (inputs, targets))

    kernels, rest = deferred.split_kernels(PARAMS, sites)
    value_and_grad = deferred.factor_value_and_grad(squared_error, sites)
    factors, opt_state = deferred.zero_factors(sites, 6), tx.init(PARAMS)
    for slot in range(6):
        _, rest_grads, grads = value_and_grad(kernels, rest, factors, inputs[slot], targets[slot])
        updates, opt_state, coefficients = deferred.kernel_coefficients(
            tx, opt_state, kernels, rest_grads, rest
        )
        rest = optax.apply_updates(rest, updates)
        factors = deferred.record(factors, jnp.int32(slot), grads, coefficients)
    got = deferred.merge(deferred.apply_factors(kernels, factors), rest)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), got, want)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), want, PARAMS)
    assert min(jax.tree.leaves(moved)) > 1e-3  # every parameter took part
    decay = 1 - 0.05 * (overrides.get("weight_decay", 0) + overrides.get("l2", 0))
    for pending in factors.values():
        np.testing.assert_allclose(pending.decay, decay**6, rtol=1e-6)


def test_windowed_scan_covers_every_element_in_order():
    step = lambda carry, x: (carry + x, carry * 10 + x)
    window_step = lambda carry, xs: jax.lax.scan(step, carry, xs)
    xs = jnp.arange(11)
    want = jax.lax.scan(step, 0, xs)
    for window in (1, 3, 4, 11, 12):
        got = deferred.windowed_scan(step, window_step, 0, xs, window)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_only_sgd_with_decays_can_defer():
    config = optim.default_optimizer_config()
    assert deferred.blockers(config) == ["optimizer.name='adam' (needs 'sgd')"]
    config.name = "sgd"
    config.schedule.name = "linear"  # a schedule is still one step size per update
    config.weight_decay = 1e-4
    assert deferred.blockers(config, swept=("l2", "learning_rate")) == []
    assert deferred.blockers(config, swept=("l2_init",)) == ["optimizer.l2_init is on"]
    config.max_grad_norm = 1.0
    config.nap.enabled = True
    assert deferred.blockers(config) == [
        "optimizer.max_grad_norm is on",
        "optimizer.nap.enabled",
    ]


def test_kernel_coefficients_are_the_step_size_and_decay_of_the_schedule():
    config = optim.default_optimizer_config()
    config.update(name="sgd", learning_rate=0.2, l2=0.5, weight_decay=0.25)
    config.schedule.update(name="warmup_cosine", warmup_steps=3, total_steps=6)
    tx = optim.make_optimizer(config)
    sites = all_sites()
    kernels, rest = deferred.split_kernels(PARAMS, sites)
    rest_grads = jax.tree.map(jnp.zeros_like, rest)
    opt_state = tx.init(PARAMS)
    for step in range(6):
        updates, opt_state, coefficients = deferred.kernel_coefficients(
            tx, opt_state, kernels, rest_grads, rest
        )
        learning_rate = optim.optimizer_learning_rate(config, step)
        for key in sites:
            np.testing.assert_allclose(coefficients[key][0], -learning_rate, rtol=1e-6)
            np.testing.assert_allclose(coefficients[key][1], 1 - 0.75 * learning_rate, rtol=1e-6)
        np.testing.assert_array_equal(updates[("output", "bias")], 0.0)  # biases: not decayed
