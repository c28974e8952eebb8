"""Tests of the divergence guard: host checks, in-program helpers, and the continual runner's
detection on planted outputs (no compilation). The launcher-level planted divergence (a learning
rate far above the stable limit) is in tests/scripts/test_resume.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from benchmarks import continual_config, continual_sweep
from plasticity import divergence


def test_first_nonfinite_reports_metric_index_and_value_in_order():
    metrics = {
        "step": np.int32(7),  # not a float: skipped
        "loss": np.array([[1.0, 2.0], [3.0, np.inf]]),
        "q_mean": np.array([0.0, np.nan]),
    }
    assert divergence.first_nonfinite(metrics) == ("loss", (1, 1), math.inf)
    found = divergence.first_nonfinite(metrics, names=("q_mean", "loss"))
    assert found.metric == "q_mean" and found.index == (1,) and math.isnan(found.value)
    assert divergence.first_nonfinite({"loss": np.float32(0.5)}) is None
    assert divergence.first_nonfinite(metrics, names=("absent",)) is None


def test_the_first_bad_entry_is_row_major_and_a_huge_finite_loss_is_not_divergence():
    """Of two bad entries the one first in row-major order is named (column-major would name the
    other); a float64 loss above float32's range is finite, not a divergence; a context with a
    line break still gives a one-line message."""
    found = divergence.first_nonfinite({"loss": np.array([[1.0, 1.0, np.nan], [np.inf, 1.0, 1.0]])})
    assert found.index == (0, 2) and math.isnan(found.value)
    divergence.check_consecutive_steps(np.array([1e300, 2.0]), last_step=5)
    message = str(divergence.DivergenceError(3, "loss", math.nan, context="game 'Pong'\nseed 1"))
    assert message == "divergence at step 3: loss is nan (game 'Pong' seed 1)"


def test_check_metrics_raises_one_line_naming_step_metric_and_run():
    with pytest.raises(divergence.DivergenceError) as error:
        divergence.check_metrics(
            {"loss": np.float32(-np.inf)},
            41,
            context="game 'Pong', seed 3",
            kept="last good checkpoint kept: /w/checkpoints/40",
        )
    message = str(error.value)
    assert message == (
        "divergence at step 41: loss is -inf (game 'Pong', seed 3); "
        "last good checkpoint kept: /w/checkpoints/40"
    )
    assert error.value.step == 41 and error.value.metric == "loss"
    divergence.check_metrics({"loss": 1.0, "grad_norm": np.array([2.0, 3.0])}, 1)  # finite: quiet


def test_consecutive_steps_name_the_exact_step():
    divergence.check_consecutive_steps([0.5, 0.4], last_step=10)
    losses = [jnp.float32(0.5), jnp.float32(0.7), jnp.float32(jnp.nan), jnp.float32(jnp.inf)]
    with pytest.raises(
        divergence.DivergenceError,
        match=r"^divergence at step 9: loss is nan "
        r"\(seed 2\)$",
    ):
        divergence.check_consecutive_steps(losses, last_step=10, context="seed 2")


def test_check_params_names_the_first_bad_leaf():
    params = {
        "torso": {"conv_0": {"kernel": np.ones((2, 2), np.float32)}},
        "head": {"bias": np.array([0.0, np.nan], np.float32)},
        "count": np.array(3, np.int32),
    }
    found = divergence.first_nonfinite_leaf(params)
    assert found.metric == "params/head/bias" and found.index == (1,)
    with pytest.raises(
        divergence.DivergenceError,
        match=r"^divergence at step 9: params/head/bias "
        r"is nan$",
    ):
        divergence.check_params(params, 9)
    params["head"]["bias"][1] = 0.0
    divergence.check_params(params, 9)
    # bfloat16 leaves (an ml_dtypes type, not a NumPy float) are checked too.
    half = {"w": jnp.array([1.0, np.inf], jnp.bfloat16)}
    assert not bool(divergence.tree_is_finite(half))
    assert divergence.first_nonfinite_leaf(half).metric == "params/w"
    assert divergence.first_nonfinite({"loss": np.array([1.0, np.nan], jnp.bfloat16)}).index == (1,)


def test_in_program_helpers_are_jittable_and_vmappable():
    values = jnp.array([[1.0, 2.0, 3.0], [1.0, jnp.nan, jnp.inf], [jnp.inf, 0.0, 0.0]])
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(divergence.first_nonfinite_index))(values), [-1, 1, 0]
    )
    np.testing.assert_array_equal(divergence.first_nonfinite_index(values), [-1, 1, 0])
    trees = {"w": values, "n": jnp.arange(3)}
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(divergence.tree_is_finite))(trees), [True, False, False]
    )
    assert bool(divergence.tree_is_finite({"n": jnp.arange(2)}))


def test_kept_checkpoint_text():
    assert divergence.kept_checkpoint_text("/c", None) == (
        "no checkpoint was written before it (in /c)"
    )
    assert divergence.kept_checkpoint_text("/c", 4, "2 tasks done") == (
        "last good checkpoint kept: /c/4 (2 tasks done)"
    )


class _Steps:
    steps_per_task = 10


def _plan() -> continual_sweep.ExperimentPlan:
    config = continual_config.default_config()
    config.grid.learning_rate = (0.1, 10.0)
    config.num_seeds = 2
    return continual_sweep.ExperimentPlan(
        config,
        [("default", _Steps())],
        continual_config.grid_points(config),
        int(config.num_seeds),
    )


def _outputs(runs: int, tasks: int) -> dict:
    return {
        "task": {
            "online_loss": np.ones((runs, tasks), np.float32),
            "param_norm": np.ones((runs, tasks), np.float32),
            # Not a divergence metric: NaN here is ignored.
            "online_accuracy": np.full((runs, tasks), np.nan, np.float32),
        },
        "health": {
            "nonfinite_loss_step": np.full((runs, tasks), -1, np.int32),
            "nonfinite_loss_value": np.zeros((runs, tasks), np.float32),
        },
    }


def test_runner_finds_the_earliest_divergence_of_a_chunk():
    plan = _plan()  # runs: (lr 0.1, seeds 0, 1), (lr 10, seeds 0, 1)
    outputs = _outputs(4, 2)
    assert continual_sweep.find_divergence(plan, "default", _Steps(), 3, outputs) is None
    outputs["task"]["param_norm"][3, 0] = np.inf  # run 3 (lr 10, seed 1): end of task 3 = step 40
    outputs["health"]["nonfinite_loss_step"][2, 1] = 47  # run 2, during task 4
    outputs["health"]["nonfinite_loss_value"][2, 1] = np.nan
    step, metric, value, label = continual_sweep.find_divergence(
        plan, "default", _Steps(), 3, outputs
    )
    assert (step, metric, value) == (40, "param_norm", math.inf)
    assert label == "variant 'default', seed 1, learning_rate=10"
    outputs["health"]["nonfinite_loss_step"][2, 0] = 33  # run 2 (lr 10, seed 0) at step 33
    outputs["health"]["nonfinite_loss_value"][2, 0] = np.inf
    step, metric, value, label = continual_sweep.find_divergence(
        plan, "default", _Steps(), 3, outputs
    )
    assert (step, metric, value, label) == (
        33,
        "loss",
        math.inf,
        "variant 'default', seed 0, learning_rate=10",
    )


def test_divergence_stop_is_a_resume_free_switch():
    config = continual_config.default_config()
    assert config.run.stop_on_divergence is True
    assert "run.stop_on_divergence" in continual_config.RESUME_FREE_FIELDS
    assert isinstance(config.run, ml_collections.ConfigDict)
