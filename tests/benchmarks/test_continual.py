"""Tests of the compiled continual trainer and the sweep runner.

One tiny configuration (digits subset, MLP 64→16→10, 4 tasks × 6 steps, a 2-point learning-rate
grid × 2 seeds) is compiled a handful of times and shared: a nested ``vmap(vmap(train))`` over
grid × seeds, a single-run ``train``, and the runner's chunk functions (cached on the plan).

Every test runs with ``jax_threefry_partitionable`` off: on XLA:CPU it halves the compile time
of these programs (threefry calls dominate it) and the trainer's logic does not depend on how
random bits are laid out. The subprocesses set it too.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from benchmarks import continual, continual_config, continual_sweep, datasets, minibatches
from benchmarks.configs import disentangling, dohare, nap_interventions, nap_label_reset
from plasticity import checkpointing, deferred, divergence, nap, optim, param_labels, workdir

REPO = Path(__file__).resolve().parents[2]
FAST_COMPILE_ENV = {"JAX_THREEFRY_PARTITIONABLE": "0"}
LEARNING_RATES = (1e-3, 3e-3)
SEEDS = (0, 1)


@pytest.fixture(autouse=True, scope="module")
def _fast_compiling_rng():
    with jax.threefry_partitionable(False):
        yield


def tiny_config() -> ml_collections.ConfigDict:
    config = continual_config.default_config()
    config.data.max_train_examples = 128
    config.task.name = "label_reset"
    config.task.num_tasks = 4
    config.task.steps_per_task = 6
    config.task.batch_size = 8
    config.network.hidden_sizes = (16,)
    config.diagnostics.every = 3
    config.diagnostics.probe_size = 16
    config.eval.max_examples = 64
    config.eval.batch_size = 32
    config.grid.learning_rate = LEARNING_RATES
    config.num_seeds = len(SEEDS)
    config.run.tasks_per_chunk = 2
    config.run.tensorboard = False
    config.run.progress = False
    return config


@functools.lru_cache(maxsize=None)
def trainer() -> continual.Trainer:
    return continual.make_trainer(tiny_config())


def seed_keys() -> jax.Array:
    return jnp.stack([jax.random.PRNGKey(seed) for seed in SEEDS])


@functools.lru_cache(maxsize=None)
def grid_by_seed_outputs():
    """``jit(vmap(vmap(train)))`` over (learning rate, seed): leading axes (2, 2)."""
    train = trainer().train
    batched = jax.jit(jax.vmap(jax.vmap(train, in_axes=(0, None)), in_axes=(None, 0)))
    hparams = {"learning_rate": jnp.asarray(LEARNING_RATES, jnp.float32)}
    return jax.device_get(batched(seed_keys(), hparams))


@functools.lru_cache(maxsize=None)
def single_run():
    return jax.jit(trainer().train)


def run_one(seed: int, learning_rate: float):
    hparams = {"learning_rate": jnp.float32(learning_rate)}
    return jax.device_get(single_run()(jax.random.PRNGKey(seed), hparams))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


# ---------------------------------------------------------------------------
# The compiled trainer
# ---------------------------------------------------------------------------


def test_output_shapes_follow_the_run_shape():
    _, outputs = grid_by_seed_outputs()
    tr = trainer()
    assert tr.blocks_per_task == 2 and tr.hparam_keys == ("learning_rate",)
    for value in outputs["task"].values():
        assert value.shape == (2, 2, 4)
    assert set(outputs["task"]) == {
        "online_loss",
        "online_accuracy",
        "end_loss",
        "end_accuracy",
        "param_norm",
    }
    for key in (
        "weight_norm/hidden_0",
        "effective_lr/output",
        "update_ratio/hidden_0",
        "param_norm",
    ):
        assert outputs["diagnostics"][key].shape == (2, 2, 4, 2)
        assert outputs["initial_diagnostics"][key].shape == (2, 2)


def test_diagnostics_carry_the_last_update_s_scheduled_rate_next_to_the_grid_rate():
    """'scheduled_learning_rate' is the fitted schedule's rate of the last update before each
    diagnostics step (a cosine restarted at every task here: at a task's end, its own decayed rate,
    not the next task's warm-up start), while the rows' 'learning_rate' stays the grid value."""
    config = tiny_config()
    config.optimizer.schedule.update(dict(name="cosine_restarts", warmup_steps=2, end_value=0.0))
    trained = continual.make_trainer(config)
    grid_rate = 3e-3
    _, out = jax.device_get(
        jax.jit(trained.train)(jax.random.PRNGKey(0), {"learning_rate": jnp.float32(grid_rate)})
    )
    fitted = continual_config.task_schedule(config.optimizer, 4, config.task.steps_per_task)
    expected = np.zeros((4, trained.blocks_per_task))
    for task in range(4):
        for block, step in trained.diagnostics_steps(task):
            expected[task, block] = optim.optimizer_learning_rate(fitted, step - 1, grid_rate)
    logged = out["diagnostics"]["scheduled_learning_rate"]
    np.testing.assert_allclose(logged, expected, rtol=1e-6)
    assert expected[0, 0] > 0 and len(np.unique(expected)) >= 2  # not the constant grid rate
    next_task_start = optim.optimizer_learning_rate(fitted, config.task.steps_per_task, grid_rate)
    assert expected[0, -1] != pytest.approx(float(next_task_start))
    np.testing.assert_allclose(expected[1:], np.broadcast_to(expected[0], (3, 2)))  # restarted
    initial = out["initial_diagnostics"]["scheduled_learning_rate"]
    assert initial == pytest.approx(float(optim.optimizer_learning_rate(fitted, 0, grid_rate)))


def test_a_non_finite_loss_names_its_update_counted_from_one_as_the_rl_loops_do():
    """At a rate of 1e30 the first loss (of the initial network) is finite and the second (after
    one update) is not: the update named is 2, the step of the rows after it, as the RL loops'
    `plasticity.divergence.check_consecutive_steps` names it for the same losses."""
    config = tiny_config()
    trained = continual.make_trainer(config)
    _, out = jax.device_get(
        jax.jit(trained.train)(jax.random.PRNGKey(0), {"learning_rate": jnp.float32(1e30)})
    )
    assert out["health"]["nonfinite_loss_step"][0] == 2
    with pytest.raises(divergence.DivergenceError, match="^divergence at step 2:"):
        divergence.check_consecutive_steps([0.5, float("nan")], last_step=2)


def test_grid_by_seeds_in_one_program_equals_separate_runs():
    batched_carry, batched = grid_by_seed_outputs()
    for g, learning_rate in enumerate(LEARNING_RATES):
        for s, seed in enumerate(SEEDS):
            carry, outputs = run_one(seed, learning_rate)
            assert_trees_close(jax.tree.map(lambda x: x[g, s], batched), outputs)
            assert_trees_close(
                jax.tree.map(lambda x: x[g, s], batched_carry.state.params), carry.state.params
            )


def test_same_seed_identical_different_seeds_differ():
    first, second = run_one(0, 1e-3), run_one(0, 1e-3)
    jax.tree.map(np.testing.assert_array_equal, first, second)
    _, outputs = grid_by_seed_outputs()
    losses = outputs["task"]["online_loss"]
    assert not np.allclose(losses[0, 0], losses[0, 1])  # seeds 0 and 1, same learning rate
    assert not np.allclose(losses[0, 0], losses[1, 0])  # learning rates, same seed


def test_deferred_dense_updates_are_the_same_sgd(monkeypatch):
    # Every dense layer deferred (the tiny kernels are under the size threshold), windows of 3 in
    # segments of 8 steps before each block's last update: two windows and a remainder of 2.
    # Tolerances: float32 rounding of the same sums grouped differently (tests/plasticity/
    # test_deferred.py), drifting over 72 updates; observed differences are below 1e-6.
    monkeypatch.setattr(deferred, "MIN_DEFERRED_WEIGHTS", 1)
    config = tiny_config()
    # Runs: two learning rates × L2 in {0, 0.3} (swept, vmapped), with weight decay 0.1.
    config.optimizer.update(name="sgd", weight_decay=0.1)
    config.grid.learning_rate = (0.02, 0.05)
    config.grid.l2 = (0.0, 0.3)
    config.task.update(steps_per_task=18, batch_size=4)
    config.network.hidden_sizes = (16, 16)
    config.diagnostics.every = 9
    hparams = {
        "learning_rate": jnp.asarray([0.02, 0.05, 0.02, 0.05], jnp.float32),
        "l2": jnp.asarray([0.0, 0.0, 0.3, 0.3], jnp.float32),
    }
    outputs = {}
    for window in (0, 3):
        config.run.defer_dense_updates = window
        trainer = continual.make_trainer(config)
        train = jax.jit(jax.vmap(trainer.train, in_axes=(None, 0)))
        outputs[window] = jax.device_get(train(jax.random.PRNGKey(0), hparams))
    assert trainer.deferred_kernels == ("hidden_0/linear", "hidden_1/linear", "output")
    assert_trees_close(outputs[3], outputs[0], rtol=1e-5, atol=1e-5)
    kernels = outputs[3][0].state.params["hidden_1"]["linear"]["kernel"]
    assert np.abs(kernels[2] - kernels[0]).max() > 1e-2  # L2 took part


def test_deferral_is_skipped_where_it_would_change_the_optimizer():
    config = tiny_config()
    config.run.defer_dense_updates = 4
    assert continual.make_trainer(config).deferred_kernels == ()  # Adam
    config.optimizer.update(name="sgd", l2_init=1e-3)
    assert continual.make_trainer(config).deferred_kernels == ()  # L2-init
    config.optimizer.l2_init = 0.0
    assert continual.make_trainer(config).deferred_kernels == ()  # kernels under 2**20 weights
    config.run.defer_dense_updates = -1
    with pytest.raises(ValueError, match="run.defer_dense_updates must be >= 0"):
        continual.make_trainer(config)


def _numpy_mlp(params, inputs):
    hidden = params["hidden_0"]["linear"]
    h = np.maximum(inputs.reshape(len(inputs), -1) @ hidden["kernel"] + hidden["bias"], 0.0)
    return h @ params["output"]["kernel"] + params["output"]["bias"]


def test_end_of_task_metrics_and_diagnostics_match_numpy():
    carry, outputs = run_one(1, 3e-3)
    params = jax.tree.map(np.asarray, carry.state.params)
    data = trainer().sequence.data
    count = tiny_config().eval.max_examples
    logits = _numpy_mlp(params, np.asarray(data.inputs)[:count])
    labels = np.asarray(carry.task_state.labels)[:count]
    accuracy = np.mean(np.argmax(logits, axis=1) == labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(count), labels])
    np.testing.assert_allclose(outputs["task"]["end_accuracy"][-1], accuracy, rtol=1e-6)
    np.testing.assert_allclose(outputs["task"]["end_loss"][-1], loss, rtol=1e-4)
    norm = np.sqrt(sum(np.sum(np.square(leaf)) for leaf in jax.tree.leaves(params)))
    np.testing.assert_allclose(outputs["task"]["param_norm"][-1], norm, rtol=1e-5)
    # The last diagnostics block ends with the run: its weight norms are the final ones.
    diag = {key: value[-1, -1] for key, value in outputs["diagnostics"].items()}
    kernel_norm = np.linalg.norm(params["hidden_0"]["linear"]["kernel"])
    np.testing.assert_allclose(diag["weight_norm/hidden_0"], kernel_norm, rtol=1e-5)
    np.testing.assert_allclose(diag["effective_lr/hidden_0"], 3e-3 / kernel_norm, rtol=1e-5)
    np.testing.assert_allclose(diag["param_norm"], norm, rtol=1e-5)
    assert np.all(outputs["diagnostics"]["update_ratio/hidden_0"] > 0)
    assert np.all(outputs["initial_diagnostics"]["update_ratio/hidden_0"] == 0)
    assert 0.0 <= outputs["task"]["online_accuracy"].min() <= 1.0


def test_labels_change_between_tasks_and_the_network_learns_within_one():
    _, outputs = run_one(0, 3e-3)
    loss = outputs["task"]["online_loss"]
    assert np.all(np.isfinite(loss)) and np.all(outputs["task"]["end_loss"] < np.log(10) + 0.5)


class _RecordingDiagnostics:
    """`plasticity.diagnostics.make_diagnostics_fn`, recording what the trainer hands it."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, loss_fn, names, **options):
        from plasticity import diagnostics  # noqa: PLC0415

        self.calls.append((names, options))
        fn = diagnostics.make_diagnostics_fn(model, loss_fn, names, **options)

        def recorded(params, previous_params, inputs, targets, rng, learning_rate):
            out = fn(params, previous_params, inputs, targets, rng, learning_rate)
            out["echo/probe_size"] = jnp.float32(inputs.shape[0])
            out["echo/learning_rate"] = learning_rate
            out["echo/loss"] = loss_fn(params, inputs, targets)
            return out

        return recorded


def _stand_in_intervention(name, model, **options):
    """Counts its applications in the train state's extra entry and shifts the output bias."""
    del model

    def init(params):
        return {"count": jnp.zeros([], jnp.int32)}

    def apply(state, probe_inputs, rng):
        del rng
        assert probe_inputs.shape[0] == 16
        extra = dict(state.extra)
        extra[name] = {"count": extra[name]["count"] + 1}
        params = jax.tree.map(lambda x: x, state.params)
        params["output"]["bias"] = params["output"]["bias"] + options["shift"]
        return state.replace(extra=extra, params=params)

    return init, apply


def test_diagnostics_module_and_intervention_plug_in():
    config = tiny_config()
    config.grid.learning_rate = ()
    config.optimizer.learning_rate = 2e-3
    config.diagnostics.names = ("dormant", "srank", "update_ratio")
    config.diagnostics.options = ml_collections.ConfigDict({"dormant_thresholds": (0.0, 0.1)})
    config.intervention.name = "counter"
    config.intervention.every = 4
    config.intervention.at_task_boundaries = True
    config.intervention.options = ml_collections.ConfigDict({"shift": 0.5})
    factory = _RecordingDiagnostics()
    tr = continual.make_trainer(
        config, diagnostics_factory=factory, intervention_factory=_stand_in_intervention
    )
    assert factory.calls == [
        (("dormant", "srank", "update_ratio"), {"dormant_thresholds": (0.0, 0.1)})
    ]
    carry, outputs = jax.device_get(jax.jit(tr.train)(jax.random.PRNGKey(0)))
    # 24 steps: after steps 4, 8, ..., 20 (5; none after the last) and at the switches to tasks
    # 1, 2, 3 (3).
    assert int(carry.state.extra["counter"]["count"]) == 8
    diag = outputs["diagnostics"]
    np.testing.assert_array_equal(diag["echo/probe_size"], 16.0)
    np.testing.assert_allclose(diag["echo/learning_rate"], 2e-3)
    assert np.all(diag["echo/loss"] > 0)
    for key in ("dormant_0/hidden_0", "dormant_0.1/hidden_0"):
        assert np.all((diag[key] >= 0) & (diag[key] <= 1))
    assert np.all(diag["dormant_0/hidden_0"] <= diag["dormant_0.1/hidden_0"])
    assert np.all((diag["srank/hidden_0"] >= 1) & (diag["srank/hidden_0"] <= 16))
    assert np.all(diag["update_ratio/hidden_0"] > 0)  # previous parameters are the step before
    np.testing.assert_array_equal(outputs["initial_diagnostics"]["update_ratio/hidden_0"], 0.0)
    assert "weight_norm/output" in diag and "effective_lr/hidden_0" in diag  # built-ins kept


def test_interventions_module_objects_are_accepted():
    from plasticity import interventions  # noqa: PLC0415

    tr = trainer()
    init, apply = continual.intervention_pair(interventions.make_intervention("none", tr.model))
    assert init({}) == {} and apply("state", None, None) == "state"


def test_plasticity_injection_at_task_boundaries_trains_a_new_head_on_the_same_function():
    """Injected at the first switch: task 0 runs exactly as without it (the injected network's
    extra terms are zero until then); afterwards the frozen head and its fresh copy are kept in
    the train state and the trainable head moves away from its fresh initialization."""
    config = tiny_config()
    config.grid.learning_rate = ()
    config.num_seeds = 1
    config.task.num_tasks = 2
    config.diagnostics.every = 0
    runs = {}
    for name in ("none", "plasticity_injection"):
        config.intervention.update(name=name, at_task_boundaries=name != "none")
        config.intervention.options = ml_collections.ConfigDict(
            {"num_layers": 1} if name != "none" else {}
        )
        runs[name] = jax.device_get(
            jax.jit(continual.make_trainer(config).train)(jax.random.PRNGKey(0), {})
        )
    plain, injected = runs["none"], runs["plasticity_injection"]
    for key in ("online_loss", "end_loss", "end_accuracy"):
        assert plain[1]["task"][key][0] == injected[1]["task"][key][0], key
    for key in ("online_loss", "end_loss"):  # (accuracies are too coarse to tell them apart)
        assert plain[1]["task"][key][1] != injected[1]["task"][key][1], key
    own = injected[0].state.extra["plasticity_injection"]
    assert bool(own["injected"])
    head = injected[0].state.params["output"]["kernel"]
    assert np.abs(own["frozen"]["output"]["kernel"]).sum() > 0
    assert not np.allclose(head, own["initial"]["output"]["kernel"])  # the new head learned


def test_nap_projects_gamma_beta_only_where_the_function_allows():
    """The trainer hands the optimizer the norms whose (γ, β) are scale invariant: hidden_0 (feeds
    the normalized hidden_1) is held at ‖[γ₀; β₀]‖ = √16, hidden_1 (feeds the output) is free."""
    config = tiny_config()
    config.network.update(hidden_sizes=(16, 16), norm="layernorm")
    config.optimizer.nap.enabled = True
    config.grid.learning_rate = ()
    config.num_seeds = 1
    config.diagnostics.every = 0
    config.task.num_tasks = 2
    carry, _ = jax.jit(continual.make_trainer(config).train)(jax.random.PRNGKey(0), {})
    params = carry.state.params
    norms = nap.group_norms(params, param_labels.norm_layers(params))
    np.testing.assert_allclose(norms["hidden_0/norm"], 4.0, rtol=1e-5)
    assert abs(float(norms["hidden_1/norm"]) - 4.0) > 1e-3


def test_sample_indices_are_uniform_deterministic_and_counter_dependent():
    key = jax.random.PRNGKey(3)
    draws = np.asarray(
        jax.jit(jax.vmap(lambda c: continual.sample_indices(key, c, 64, 10)))(jnp.arange(500))
    )
    assert draws.min() >= 0 and draws.max() < 10
    counts = np.bincount(draws.ravel(), minlength=10)
    expected = draws.size / 10
    chi_square = np.sum((counts - expected) ** 2 / expected)
    assert chi_square < 30  # 9 degrees of freedom: p < 1e-3 beyond 27.9
    np.testing.assert_array_equal(draws[7], continual.sample_indices(key, 7, 64, 10))
    assert not np.array_equal(draws[7], draws[8])
    other = continual.sample_indices(jax.random.PRNGKey(4), 7, 64, 10)
    assert not np.array_equal(draws[7], other)


# ---------------------------------------------------------------------------
# The sweep runner: work dir, chunking, resume
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def plan() -> continual_sweep.ExperimentPlan:
    return continual_sweep.plan_experiment(tiny_config())


def test_shuffled_sampling_shows_every_example_once_per_pass_in_the_trainer(monkeypatch):
    """With ``task.sampling='shuffled'`` and one pass per task (16 steps of 8 = 128 examples),
    each task's steps see each example exactly once, in an order of that task's own."""
    seen = []

    def recorded(key, task, position, size, num_examples):
        indices = minibatches.shuffled_indices(key, task, position, size, num_examples)
        jax.debug.callback(
            lambda *values: seen.append(tuple(np.asarray(v) for v in values)),
            task,
            position,
            indices,
        )
        return indices

    monkeypatch.setattr(continual, "shuffled_indices", recorded)
    config = tiny_config()
    config.task.update(sampling="shuffled", steps_per_task=16)
    config.diagnostics.every = 4
    train = jax.jit(continual.make_trainer(config).train)
    jax.block_until_ready(train(jax.random.PRNGKey(0), {"learning_rate": jnp.float32(1e-3)}))
    by_task = {}
    for task, position, indices in seen:
        by_task.setdefault(int(task), {})[int(position)] = indices
    assert sorted(by_task) == [0, 1, 2, 3]
    orders = []
    for task, steps in by_task.items():
        assert sorted(steps) == list(range(0, 128, 8)), task
        order = np.concatenate([steps[position] for position in sorted(steps)])
        assert sorted(order.tolist()) == list(range(128)), task
        orders.append(order)
    assert all((orders[0] != order).mean() > 0.9 for order in orders[1:])


def test_a_mesh_that_does_not_split_the_runs_is_refused_before_the_work_dir(tmp_path):
    """4 runs (2 learning rates x 2 seeds) over 3 seed devices, or a mesh without a seed axis:
    one line naming the run count, and nothing written (the check needs no devices, only the
    mesh's shape)."""
    import types  # noqa: PLC0415

    def mesh(**axes):
        size = int(np.prod(list(axes.values())))
        return types.SimpleNamespace(axis_names=tuple(axes), shape=axes, size=size)

    with pytest.raises(
        ValueError, match=r"3 devices on the seed axis, .* the 4 runs \(num_seeds=2 x 2"
    ):
        continual_sweep.check_mesh_fits_runs(mesh(seed=3), plan())
    with pytest.raises(ValueError, match="has no 'seed' axis"):
        continual_sweep.check_mesh_fits_runs(mesh(data=1), plan())
    continual_sweep.check_mesh_fits_runs(mesh(seed=2), plan())
    config = tiny_config()
    config.mesh = "data:1"
    with pytest.raises(ValueError, match="has no 'seed' axis"):
        continual_sweep.run_experiment(config, tmp_path / "run", plan=plan())
    assert not (tmp_path / "run").exists()


def test_rows_carry_the_rate_each_variant_trains_with_where_the_grid_does_not_sweep(tmp_path):
    config = tiny_config()
    config.grid.learning_rate = ()
    config.num_seeds, config.task.num_tasks = 1, 1
    config.variants = ml_collections.ConfigDict(
        {"fast": {"optimizer": {"learning_rate": 0.01}}, "base": {}}
    )
    config.variant_order = ("fast", "base")
    assert continual_sweep.run_experiment(config, tmp_path).completed
    rates = {row["variant"]: row["learning_rate"] for row in metric_rows(tmp_path, "task")}
    assert rates == {"fast": 0.01, "base": tiny_config().optimizer.learning_rate}


def metric_rows(path: Path, event: str):
    return [row for row in workdir.read_metrics(path) if row["event"] == event]


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("complete")
    result = continual_sweep.run_experiment(tiny_config(), path, plan=plan())
    assert result.completed
    return path


def test_runner_writes_the_work_dir_with_rows_matching_the_compiled_trainer(complete_run):
    assert (complete_run / "config.json").exists()
    assert json.loads((complete_run / "config.json").read_text())["task"]["num_tasks"] == 4
    task_rows = metric_rows(complete_run, "task")
    assert len(task_rows) == 4 * len(LEARNING_RATES) * len(SEEDS)
    assert len(metric_rows(complete_run, "diagnostics")) == 4 * (1 + 4 * 2)
    _, expected = grid_by_seed_outputs()
    for row in task_rows:
        g, s = LEARNING_RATES.index(row["learning_rate"]), SEEDS.index(row["seed"])
        assert row["variant"] == "default" and row["task_name"] == "label_reset"
        assert row["step"] == (row["task"] + 1) * 6
        for key in ("online_loss", "end_accuracy", "param_norm"):
            np.testing.assert_allclose(
                row[key], expected["task"][key][g, s, row["task"]], rtol=1e-5, atol=1e-6
            )
    diag_steps = sorted({row["step"] for row in metric_rows(complete_run, "diagnostics")})
    assert diag_steps == [0, 3, 6, 9, 12, 15, 18, 21, 24]


def test_interrupted_run_resumes_bit_identically_without_duplicate_rows(complete_run, tmp_path):
    config = tiny_config()
    stopped = continual_sweep.run_experiment(
        config, tmp_path, plan=plan(), stop_after_checkpoints=1
    )
    assert not stopped.completed
    assert {row["task"] for row in metric_rows(tmp_path, "task")} == {0, 1}
    # A crash after rows were appended but before the checkpoint: rows the checkpoint has not
    # seen, the last one half written.
    with open(tmp_path / workdir.METRICS_FILE, "a") as f:
        f.write('{"event":"task","task":2,"step":18}\n{"event":"ta')
    resumed = continual_sweep.run_experiment(config, tmp_path, plan=plan())
    assert resumed.completed
    rows = workdir.read_metrics(tmp_path)
    assert [row for row in rows if row["event"] == "resume"] == [
        {"event": "resume", "step": 12, "checkpoint": 12, "variant": "default", "task": 2,
         "run_step": 12}
    ]  # fmt: skip
    assert [row for row in rows if row["event"] != "resume"] == workdir.read_metrics(complete_run)
    final = {}
    for path in (tmp_path, complete_run):
        with checkpointing.for_directory(path / workdir.CHECKPOINT_DIR) as manager:
            target = jax.tree.map(np.asarray, resumed.outputs["final_carries"]["default"])
            final[path] = manager.restore(target)
    jax.tree.map(np.testing.assert_array_equal, final[tmp_path][0], final[complete_run][0])
    resumed_meta, complete_meta = final[tmp_path][1], final[complete_run][1]
    assert resumed_meta.pop("metrics_size") > complete_meta.pop("metrics_size")  # + the resume row
    assert resumed_meta == complete_meta


def test_a_resume_row_counts_its_step_as_its_variant_s_rows_do():
    """Resumed at task 1 of the second of two 3-task variants of 6 steps a task: its rows count
    steps from 0 in each variant, so the resume row says step 6 (the run's count, 24, apart)."""
    trainer = types.SimpleNamespace(steps_per_task=6, num_tasks=3)
    two = types.SimpleNamespace(variants=[("a", trainer), ("b", trainer)])
    meta = {"variant_index": 1, "variant": "b", "next_task": 1}
    assert continual_sweep.resume_fields(two, meta) == {"variant": "b", "task": 1, "step": 6}


def test_a_run_whose_checkpoints_all_fail_to_load_starts_over_keeping_its_rows(
    complete_run, tmp_path
):
    """Checkpoints that exist but none loads (damaged, or written by other code): the run starts
    over, and the rows they covered are moved beside them rather than deleted."""
    stopped = continual_sweep.run_experiment(
        tiny_config(), tmp_path, plan=plan(), stop_after_checkpoints=1
    )
    earlier = (tmp_path / workdir.METRICS_FILE).read_bytes()
    assert not stopped.completed and earlier
    for array_file in (tmp_path / workdir.CHECKPOINT_DIR).rglob("tree.npz"):
        array_file.write_bytes(b"not an archive")
    assert continual_sweep.run_experiment(tiny_config(), tmp_path, plan=plan()).completed
    (kept,) = (tmp_path / "corrupt_checkpoints").glob(f"{workdir.METRICS_FILE}.*")
    assert kept.read_bytes() == earlier
    assert workdir.read_metrics(tmp_path) == workdir.read_metrics(complete_run)


def test_relaunching_a_finished_run_appends_nothing(complete_run):
    before = (complete_run / workdir.METRICS_FILE).read_bytes()
    result = continual_sweep.run_experiment(tiny_config(), complete_run, plan=plan())
    assert result.completed and result.already_complete
    assert result.outputs.get("final_carries", {}) == {}
    assert (complete_run / workdir.METRICS_FILE).read_bytes() == before


def test_relaunching_with_another_config_is_refused(complete_run):
    config = tiny_config()
    config.task.num_tasks = 5
    with pytest.raises(ValueError, match="task.num_tasks"):
        continual_sweep.run_experiment(config, complete_run)


def test_a_field_added_since_the_run_counts_as_its_default_at_a_relaunch(complete_run, tmp_path):
    """A work dir written before a config field existed (here task.sampling) is still recognized
    as finished when the field keeps its default, and refused when it is set otherwise."""
    import shutil  # noqa: PLC0415

    older = tmp_path / "older"
    shutil.copytree(complete_run, older)
    saved = json.loads((older / "config.json").read_text())
    del saved["task"]["sampling"]
    (older / "config.json").write_text(json.dumps(saved))
    result = continual_sweep.run_experiment(tiny_config(), older, plan=plan())
    assert result.already_complete
    config = tiny_config()
    config.task.sampling = "shuffled"
    with pytest.raises(ValueError, match=r"different config \(fields: task.sampling\)"):
        continual_sweep.run_experiment(config, older)


def test_a_work_dir_from_before_the_probe_field_resumes_only_as_its_runs_scored_units(tmp_path):
    """Before ``intervention.probe``, every intervention scored units on fresh probe batches:
    an old continual-backprop work dir (the field deleted from its config.json) is refused under
    the default, whose cbp scores the last minibatch, and resumes with probe='fresh'; an old ReDo
    work dir resumes under the default, which is what it ran."""
    for name, options in (("cbp", {"maturity_threshold": 2}), ("redo", {})):
        config = tiny_config()
        config.intervention.update(name=name, every=3, options=options)
        workdir_path = tmp_path / name
        stopped = continual_sweep.run_experiment(config, workdir_path, stop_after_checkpoints=1)
        assert not stopped.completed
        saved = json.loads((workdir_path / "config.json").read_text())
        assert saved["intervention"]["probe"] == ("last_batch" if name == "cbp" else "fresh")
        del saved["intervention"]["probe"]
        (workdir_path / "config.json").write_text(json.dumps(saved))
        if name == "cbp":
            with pytest.raises(ValueError, match=r"different config \(fields: intervention.probe"):
                continual_sweep.run_experiment(config, workdir_path)
            config.intervention.probe = "fresh"
        assert continual_sweep.run_experiment(config, workdir_path).completed, name


def test_config_json_records_the_probe_each_intervention_runs_with():
    recorded = continual_config.record_probes(
        {
            "intervention": {"name": "none", "probe": "auto"},
            "variants": {
                "cbp": {"intervention": {"name": "cbp"}},
                "redo": {"intervention": {"name": "redo", "every": 5}},
                "plain": {"network": {"norm": "layernorm"}},
            },
        }
    )
    assert recorded["intervention"]["probe"] == "fresh"
    assert recorded["variants"]["cbp"]["intervention"] == {"name": "cbp", "probe": "last_batch"}
    assert recorded["variants"]["redo"]["intervention"] == {"name": "redo", "every": 5}
    assert recorded["variants"]["plain"] == {"network": {"norm": "layernorm"}}


_SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_threefry_partitionable", False)
    sys.path.insert(0, {repo!r})
    from benchmarks import continual_sweep
    from tests.benchmarks.test_continual import tiny_config
    assert len(jax.devices()) == 2, jax.devices()
    config = tiny_config()
    config.mesh = "seed:2"
    config.run.runs_per_batch = 1  # each device loops over its 2 runs (lax.map)
    result = continual_sweep.run_experiment(config, {workdir!r})
    assert result.completed
    carry = result.outputs["final_carries"]["default"]
    devices = {{d for leaf in jax.tree.leaves(carry) for d in leaf.sharding.device_set}}
    assert len(devices) == 2, devices
    print("SHARDED_OK")
""")


def test_sharded_over_two_fake_cpu_devices_equals_one_device(complete_run, tmp_path):
    """Runs split over 2 devices, looped on each, give the rows of one device vmapping all 4."""
    script = _SHARDED_SCRIPT.format(repo=str(REPO), workdir=str(tmp_path))
    env = {
        **os.environ,
        **FAST_COMPILE_ENV,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "SHARDED_OK" in done.stdout, done.stderr[-3000:]
    sharded, single = workdir.read_metrics(tmp_path), workdir.read_metrics(complete_run)
    assert len(sharded) == len(single) > 0
    for a, b in zip(sharded, single):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
            else:
                assert a[key] == b[key], key


# ---------------------------------------------------------------------------
# Configs and validation
# ---------------------------------------------------------------------------


def _one_line_error(config, match: str):
    with pytest.raises(ValueError, match=match) as error:
        continual_sweep.plan_experiment(config)
    assert "\n" not in str(error.value)


def test_nap_without_norm_is_refused_naming_the_variant():
    config = tiny_config()
    config.variants = ml_collections.ConfigDict({"bad": {"optimizer": {"nap": {"enabled": True}}}})
    _one_line_error(config, "variant 'bad': NaP needs a normalization layer")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("task.name", "nope", "unknown task 'nope'"),
        ("network.name", "nope", "unknown network"),
        ("network.norm", "batchnorm", "Unknown norm"),
        ("diagnostics.every", 4, "must divide task.steps_per_task"),
        ("data.name", "mnist", "dataset 'mnist' not found"),
        ("num_seeds", 0, "num_seeds"),
        ("mesh", "seed", "mesh spec"),
        ("task.sampling", "epochs", "task.sampling must be one of uniform, shuffled, got 'epochs'"),
    ],
)
def test_bad_configs_give_one_line_errors(field, value, match):
    config = tiny_config()
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    _one_line_error(config, match)


def test_variants_override_known_fields_only_and_keep_their_order():
    config = tiny_config()
    config.variants = ml_collections.ConfigDict(
        {"zeta": {"network": {"norm": "layernorm"}}, "alpha": {"network": {"activation": "tanh"}}}
    )
    config.variant_order = ("zeta", "alpha")
    resolved = continual_config.variant_configs(config)
    assert [name for name, _ in resolved] == ["zeta", "alpha"]
    assert (
        resolved[0][1].network.norm == "layernorm" and resolved[0][1].network.activation == "relu"
    )
    assert resolved[1][1].network.activation == "tanh" and resolved[1][1].network.norm == "none"
    config.variants.zeta = {"network": {"depth": 3}}
    _one_line_error(config, "unknown config field 'depth'")
    config.variants.zeta = {"seed": 3}
    _one_line_error(config, "sweep-level")
    config.variants.zeta = {"network": {"norm": "layernorm"}}
    config.variant_order = ("zeta", "beta")
    _one_line_error(config, "variant_order")


def test_unknown_hyper_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        jax.eval_shape(trainer().train, jax.random.PRNGKey(0), {"momentum": jnp.float32(0.5)})


def test_stream_task_steps_are_derived_from_the_flip_period():
    config = tiny_config()
    config.task.name = "bit_flipping"
    config.task.flip_period = 40
    config.task.batch_size = 4
    config.task.steps_per_task = 0
    assert continual_config.steps_per_task(config) == 10
    config.task.steps_per_task = 7
    with pytest.raises(ValueError, match="0 or 10"):
        continual_config.steps_per_task(config)


@pytest.mark.parametrize("module", [nap_label_reset, disentangling, dohare, nap_interventions])
def test_published_configs_resolve_at_both_scales(module):
    assert all(
        word in module.__doc__ for word in ("Command", "Expected runtime", "Expected result")
    )
    for arg in (None, "paper"):
        config = module.get_config(arg)
        resolved = continual_config.variant_configs(config)
        assert len(resolved) >= 2
        for _, variant in resolved:
            continual_config.check_config(variant)
    with pytest.raises(ValueError, match="unknown config argument"):
        module.get_config("huge")


def test_disentangling_config_picks_its_task():
    for task in disentangling.TASKS:
        config = disentangling.get_config(f"paper,{task}")
        assert config.task.name == task and config.data.name == "cifar10"
    assert disentangling.get_config().task.name == "label_reset"
    # Large targets get the two-hot output beside each linear arm; classification does not.
    offset = dict(
        continual_config.variant_configs(disentangling.get_config("large_offset_regression"))
    )
    assert list(offset) == ["no_norm", "layernorm", "no_norm_two_hot", "layernorm_two_hot"]
    assert [int(offset[name].network.two_hot.bins) for name in offset] == [0, 0, 121, 121]
    assert offset["layernorm_two_hot"].network.norm == "layernorm"
    assert len(disentangling.get_config("class_permutation").variants) == 2


def test_an_open_schedule_is_fitted_to_the_task_layout():
    """total_steps 0 spans the run; cosine_restarts without boundaries restarts at every task:
    the rate warms up from init_value at each task start, peaks, and decays to end_value."""
    optimizer = continual_config.default_config().optimizer
    optimizer.schedule.update(dict(name="cosine_restarts", warmup_steps=5, end_value=1e-6))
    fitted = continual_config.task_schedule(optimizer, num_tasks=3, steps=40)
    assert fitted.schedule.total_steps == 120 and tuple(fitted.schedule.boundaries) == (40, 80)
    assert optimizer.schedule.total_steps == 0  # the config itself is left as it was
    rate = lambda step: float(optim.optimizer_learning_rate(fitted, step))  # noqa: E731
    for start in (0, 40, 80):
        assert rate(start) == 0.0 and rate(start + 5) == pytest.approx(optimizer.learning_rate)
        assert 1e-6 < rate(start + 39) < 1e-5  # the last step before the next task: near the end
    optimizer.schedule.update(dict(name="warmup_cosine", boundaries=()))
    assert continual_config.task_schedule(optimizer, 3, 40).schedule.total_steps == 120
    optimizer.schedule.total_steps = 60  # set by the config: kept
    assert continual_config.task_schedule(optimizer, 3, 40) is optimizer


def test_a_data_dir_no_variant_reads_is_noted():
    """A data dir given to tasks that read no files (digits, bit flipping) is said in a note;
    one a variant reads, or none given, is not."""
    config = nap_label_reset.get_config("smoke")
    assert continual_config.unused_data_dir(continual_config.variant_configs(config)) is None
    config.data.data_dir = "/data/mnist"
    note = continual_config.unused_data_dir(continual_config.variant_configs(config))
    assert note.startswith(
        "data dir /data/mnist is unused: the tasks read no files (dataset digits)"
    )
    config.data.name = "mnist"
    assert continual_config.unused_data_dir(continual_config.variant_configs(config)) is None
    streams = dohare.get_config("smoke")
    streams.data.data_dir = "/data/mnist"
    variants = [
        v for v in continual_config.variant_configs(streams) if v[1].task.name == "bit_flipping"
    ]
    assert "is unused" in continual_config.unused_data_dir(variants)


def test_the_summary_has_a_line_per_grid_point_not_their_mean():
    """A sweep over L2 ∈ {0, 1e-4} ends with one line per (variant, L2), each the mean over its
    seeds: pooling the points would hide the comparison the grid exists for."""
    import types  # noqa: PLC0415

    grid = [
        {"learning_rate": 1e-3, "weight_decay": 0.0, "l2": l2, "l2_init": 0.0} for l2 in (0.0, 1e-4)
    ]
    plan = types.SimpleNamespace(
        variants=[("no_norm", types.SimpleNamespace(num_tasks=2))], grid=grid
    )
    rows = [
        {"event": "task", "variant": "no_norm", "task": task, "seed": seed, "l2": l2,
         "learning_rate": 1e-3, "end_accuracy": accuracy + seed / 10}
        for l2, accuracy in ((0.0, 0.5), (1e-4, 0.8))
        for seed in (0, 1)
        for task in (0, 1)
    ]  # fmt: skip
    assert continual_sweep.summary_lines(rows, plan) == [
        "no_norm, l2=0: final task acc 0.5500 (mean over seeds)",
        "no_norm, l2=0.0001: final task acc 0.8500 (mean over seeds)",
    ]
    plan.grid = grid[:1]
    assert continual_sweep.summary_lines(rows[:4], plan) == [
        "no_norm: final task acc 0.5500 (mean over seeds)"
    ]


def test_a_dataset_given_in_python_is_recorded_and_a_relaunch_on_other_data_refused(tmp_path):
    """`run_experiment(..., dataset=)` trains on data no config field names: its fingerprint
    goes into config.json, so a relaunch without it (the config's digits) or with other data of
    the same shapes is refused before anything loads, and the same data resumes."""
    config = tiny_config()
    config.grid.learning_rate = ()
    config.num_seeds = 1
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 64), dtype=np.float32), rng.integers(0, 4, 128).astype(np.int32)
    mine = datasets.Dataset(x, y, x[:0], y[:0], 4, "blobs")
    other = mine._replace(x_train=np.flip(x, axis=0))
    stopped = continual_sweep.run_experiment(
        config, tmp_path, dataset=mine, stop_after_checkpoints=1
    )
    assert not stopped.completed
    recorded = json.loads((tmp_path / "config.json").read_text())["data"]["provided"]
    assert recorded == datasets.fingerprint(mine) and recorded["name"] == "blobs"
    assert datasets.fingerprint(other)["sha256"] != recorded["sha256"]
    for relaunch in ({}, {"dataset": other}):
        with pytest.raises(ValueError, match=r"different config \(fields: data.provided"):
            continual_sweep.run_experiment(config, tmp_path, **relaunch)
    assert continual_sweep.run_experiment(config, tmp_path, dataset=mine).completed


def test_interventions_reset_to_networks_drawn_under_the_configured_initialization():
    """``network.initialization='kaiming_uniform'``: the fresh networks an intervention resets or
    recycles to (here `reset_last_layers`) are drawn as the run's first, not Flax's LeCun-normal
    ones: the `init_fn` the trainer gives the intervention draws hidden kernels U(±√(6/fan_in))
    (standard deviation √(2/fan_in), LeCun's is √(1/fan_in)) and zero biases."""
    config = tiny_config()
    config.network.update(initialization="kaiming_uniform", hidden_sizes=(256,))
    config.intervention.update(name="reset_last_layers", every=3)
    given = {}

    def factory(name, model, **options):
        given.update(options)
        return _stand_in_intervention(name, model, **options)

    continual.make_trainer(config, intervention_factory=factory)
    fresh = jax.jit(given["init_fn"])(jax.random.PRNGKey(1), jnp.zeros((1, 10), jnp.float32))
    hidden = fresh["hidden_0"]["linear"]
    bound = np.sqrt(6 / 10)
    assert np.abs(hidden["kernel"]).max() <= bound and not np.any(hidden["bias"])
    # 2,560 draws: the sample deviation is within 5% of b/√3 (LeCun's is 30% below it).
    np.testing.assert_allclose(np.std(hidden["kernel"]), bound / np.sqrt(3), rtol=0.05)


def test_the_network_starts_under_the_configured_initialization():
    """``network.initialization='kaiming_uniform'`` (Dohare et al.'s networks): ReLU layers'
    kernels U(±√(6/fan_in)), the output's U(±√(3/fan_in)), zero biases, where Flax's default
    draws N(0, 1/fan_in); continual backprop's redraws (Kaiming-uniform, gain √2) then match the
    network's hidden layers. An unknown name is a one-line error."""
    config = tiny_config()
    config.network.update(initialization="kaiming_uniform", hidden_sizes=(256,))
    carry, _ = continual.make_trainer(config).init(
        jax.random.PRNGKey(0), {"learning_rate": jnp.float32(0.1)}, None
    )
    params = carry.state.params
    hidden, output = params["hidden_0"]["linear"], params["output"]
    fan_in = hidden["kernel"].shape[0]
    for kernel, bound in (
        (hidden["kernel"], np.sqrt(6 / fan_in)),
        (output["kernel"], np.sqrt(3 / 256)),
    ):
        assert np.abs(kernel).max() <= bound
        # 10⁴–10⁵ draws of U(−b, b): the sample deviation is within 5% of b/√3.
        np.testing.assert_allclose(np.std(kernel), bound / np.sqrt(3), rtol=0.05)
    assert not np.any(hidden["bias"]) and not np.any(output["bias"])
    config.network.initialization = "orthogonal"
    with pytest.raises(ValueError, match="Unknown initialization 'orthogonal'"):
        continual_config.check_config(config)
