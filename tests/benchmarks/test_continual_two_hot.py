"""The continual trainer's two-hot regression output (`network.two_hot`): the network learns the
cross-entropy to two-hot targets while the reported loss stays the squared error of its
predictions; it fits a large offset that a linear output of the same network is still far from;
a classification task refuses it in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import continual, continual_sweep, tasks
from plasticity import networks
from plasticity.two_hot import TwoHot
from tests.benchmarks.test_continual import tiny_config
from tests.plasticity.test_two_hot import numpy_two_hot


@pytest.fixture(autouse=True, scope="module")
def _fast_compiling_rng():
    with jax.threefry_partitionable(False):
        yield


def test_the_objective_is_the_cross_entropy_and_the_reported_loss_the_squared_error():
    two_hot = TwoHot.on(-10.0, 110.0, 13)
    model = networks.MLP(hidden_sizes=(8,), num_outputs=2 * two_hot.bins)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    targets = rng.uniform(-20.0, 120.0, (6, 2)).astype(np.float32)
    params = model.init(jax.random.key(0), inputs)["params"]
    objective, metrics = continual.make_loss_fn(model, tasks.REGRESSION, two_hot=two_hot)(
        params, inputs, jnp.asarray(targets)
    )
    logits = np.asarray(model.apply({"params": params}, inputs), np.float64).reshape(6, 2, 13)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    support = np.asarray(two_hot.support, np.float64)
    encoded = np.stack([[numpy_two_hot(t, support) for t in row] for row in targets])
    np.testing.assert_allclose(objective, -(encoded * log_probs).sum(-1).mean(), rtol=1e-5)
    predictions = np.exp(log_probs) @ support
    np.testing.assert_allclose(metrics["loss"], np.mean((predictions - targets) ** 2), rtol=1e-5)


def end_losses(bins: int) -> np.ndarray:
    """End-of-task squared errors of one run on large-offset regression (targets 100 + ε for two
    tasks, then zero-mean), MLP 64→16→·, Adam 3e-3, 30 steps a task."""
    config = tiny_config()
    config.task.update(dict(name="large_offset_regression", num_tasks=3, steps_per_task=30))
    config.task.offset_tasks = 2
    config.grid.learning_rate, config.num_seeds = (), 1
    config.optimizer.learning_rate = 3e-3
    config.network.two_hot.update(dict(bins=bins, low=-10.0, high=110.0))
    config.diagnostics.every = 10
    trainer = continual.make_trainer(config)
    _, outputs = jax.jit(trainer.train)(jax.random.PRNGKey(0), {})
    return np.asarray(outputs["task"]["end_loss"])


def test_a_two_hot_output_fits_the_large_offset_a_linear_output_is_far_from():
    two_hot, linear = end_losses(61), end_losses(0)
    assert np.all(np.isfinite(two_hot)) and np.all(np.isfinite(linear))
    # After 60 steps at the offset the two-hot predictions sit near 100; the linear output's
    # weights are still growing towards it (measured: about 7 against about 8,100).
    assert two_hot[1] < 0.01 * 100.0**2 and linear[1] > 100 * two_hot[1]


def test_a_classification_task_refuses_a_two_hot_output():
    config = tiny_config()
    config.network.two_hot.bins = 11
    with pytest.raises(ValueError, match="network.two_hot is a regression output") as error:
        continual.make_trainer(config)
    assert "\n" not in str(error.value)


def test_a_degenerate_support_is_refused_before_anything_runs():
    config = tiny_config()
    config.network.two_hot.update(dict(bins=1))
    with pytest.raises(ValueError, match="at least 2 bins") as error:
        continual_sweep.plan_experiment(config)
    assert "\n" not in str(error.value)
