"""Periodic work of the compiled continual trainer: interventions after inner scans whose length
divides their period (no branch at all when it equals it), and one effective-learning-rate
exponent for the built-in rows and `plasticity.diagnostics`.

The shared tiny run: digits subset, MLP 64→8→10, 4 tasks × 6 steps, diagnostics every 3 steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from benchmarks import continual, continual_config, continual_sweep


@pytest.fixture(autouse=True, scope="module")
def _fast_compiling_rng():
    with jax.threefry_partitionable(False):
        yield


def tiny_config(**intervention) -> ml_collections.ConfigDict:
    config = continual_config.default_config()
    config.data.max_train_examples = 64
    config.task.num_tasks = 4
    config.task.steps_per_task = 6
    config.task.batch_size = 8
    config.network.hidden_sizes = (8,)
    config.diagnostics.every = 3
    config.diagnostics.probe_size = 8
    config.eval.max_examples = 32
    if intervention:
        config.intervention.name = "recorder"
        config.intervention.update(intervention)
    return config


def recorder(name, model, **options):
    """Counts its applications and sums the optimizer step at which each one happened."""
    del model, options

    def init(params):
        del params
        return {"count": jnp.zeros([], jnp.int32), "step_sum": jnp.zeros([], jnp.int32)}

    def apply(state, probe_inputs, rng):
        del probe_inputs, rng
        seen = state.extra[name]
        extra = {
            **state.extra,
            name: {"count": seen["count"] + 1, "step_sum": seen["step_sum"] + state.step},
        }
        return state.replace(extra=extra)

    return init, apply


def count_conds(trainer: continual.Trainer) -> int:
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1)])
    jaxpr = jax.make_jaxpr(jax.vmap(lambda key: trainer.train(key, {})))(keys)
    return str(jaxpr).count(" cond[")


@pytest.mark.parametrize("every, expected_conds", [(3, 3), (6, 3), (4, 4)])
def test_periodic_interventions_branch_at_most_once_per_segment(every, expected_conds):
    """One cond switches tasks. Period 3 = the 3-step diagnostics block: after the first block a
    branch (the task's last block's intervention waits for its evaluation, then runs in every
    task but the last: a branch); 6: a branch after the first block and one after the evaluation; 4:
    segments of gcd(3, 4) = 1 step, each followed by a branch in the scanned segments, then one
    after the first block's diagnostics and one after the evaluation (the counting test in
    test_continual.py). Under vmap over runs these stay real branches (their predicates are the
    same for all runs)."""
    trainer = continual.make_trainer(tiny_config(every=every), intervention_factory=recorder)
    assert count_conds(trainer) == expected_conds


def test_interventions_after_each_segment_happen_at_the_right_steps():
    trainer = continual.make_trainer(tiny_config(every=3), intervention_factory=recorder)
    carry, _ = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    seen = carry.state.extra["recorder"]
    expected_steps = list(range(3, 24, 3))  # after updates 3, 6, ..., 21: none after the last
    assert int(seen["count"]) == len(expected_steps)
    assert int(seen["step_sum"]) == sum(expected_steps)


@pytest.mark.parametrize("every, at_task_boundaries", [(4, True), (0, True), (5, False)])
def test_the_intervention_rows_name_the_steps_the_trainer_intervenes_at(every, at_task_boundaries):
    """`continual_sweep.intervention_steps` (the launcher's 'intervention' rows) against what the
    compiled trainer did: how many interventions and the optimizer step of each."""
    config = tiny_config(every=every, at_task_boundaries=at_task_boundaries)
    trainer = continual.make_trainer(config, intervention_factory=recorder)
    carry, _ = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    seen = carry.state.extra["recorder"]
    steps = [s for task in range(4) for s in continual_sweep.intervention_steps(config, task, 6)]
    assert steps == sorted(steps) and len(steps) > 0
    assert int(seen["count"]) == len(steps)
    assert int(seen["step_sum"]) == sum(steps)


@pytest.mark.parametrize("every", [3, 6, 4])
def test_diagnostics_measure_the_last_update_before_an_intervention_due_then(every):
    """At a step where both are due, the diagnostics see the state the last update left (its
    update ratio is that update's step, not the intervention's), and the intervention still runs
    there."""

    def shrink(name, model, **options):  # halves every parameter: an update ratio of 0.5
        del name, model, options
        halve = lambda state, inputs, rng: state.replace(
            params=jax.tree.map(lambda p: 0.5 * p, state.params)
        )
        return (lambda params: {}), halve

    config = tiny_config(every=every)
    config.intervention.name = "shrink"
    config.diagnostics.names = ()
    trainer = continual.make_trainer(config, intervention_factory=shrink)
    carry, outputs = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    ratios = outputs["diagnostics"]["update_ratio/hidden_0"]  # (tasks, blocks)
    assert np.all(ratios > 0) and np.all(ratios < 0.2), ratios  # 0.5 if the shrink were measured
    plain = continual.make_trainer(tiny_config(), intervention_factory=shrink)
    unshrunk, _ = jax.device_get(jax.jit(plain.train)(jax.random.PRNGKey(0)))
    norm = lambda params: sum(float(np.sum(np.square(p))) for p in jax.tree.leaves(params))
    assert norm(carry.state.params) < 0.5 * norm(unshrunk.state.params)  # the shrinks happened


@pytest.mark.parametrize("every", [6, 12])
def test_a_tasks_end_metrics_measure_it_before_an_intervention_due_at_its_end(every):
    """With an intervention every 6 (or 12) updates and 6-update tasks, the rows (end accuracy,
    loss, parameter norm) of the tasks up to the first one it ends are the trained network's, as
    a run without the intervention measures them; the intervention still runs (the next task's
    parameter norm is smaller)."""

    def shrink(name, model, **options):
        del name, model, options
        halve = lambda state, inputs, rng: state.replace(
            params=jax.tree.map(lambda p: 0.5 * p, state.params)
        )
        return (lambda params: {}), halve

    def task_rows(config):
        trainer = continual.make_trainer(config, intervention_factory=shrink)
        return jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))[1]["task"]

    config = tiny_config(every=every)
    config.intervention.name = "shrink"
    ours, plain = task_rows(config), task_rows(tiny_config())
    first = every // 6  # the first task whose end the intervention falls on
    for key in ("param_norm", "end_accuracy", "end_loss"):
        np.testing.assert_array_equal(ours[key][:first], plain[key][:first], err_msg=key)
    assert ours["param_norm"][first] < plain["param_norm"][first]


def test_an_intervention_after_every_update_writes_one_row_a_task():
    config = tiny_config(every=1, at_task_boundaries=True)
    config.intervention.name = "noisy_updates"
    events = continual_sweep.intervention_events(config, task=1, steps_per_task=100)
    assert events == [
        (100, {"name": "noisy_updates"}),  # the task boundary's
        (200, {"name": "noisy_updates", "applications": 100, "every": 1}),
    ]
    config.intervention.every = 25  # 4 a task: a row each
    events = continual_sweep.intervention_events(config, task=0, steps_per_task=100)
    assert events == [(s, {"name": "noisy_updates"}) for s in (25, 50, 75, 100)]


def test_every_task_has_rows_of_one_form_where_the_period_does_not_divide_it():
    """Every 6 updates in 100-update tasks is 16 applications in some tasks and 17 in others: a
    summary row in every task, not rows of one form here and the other there."""
    config = tiny_config(every=6)
    config.intervention.name = "noisy_updates"
    config.task.num_tasks = 3
    rows = [continual_sweep.intervention_events(config, task, 100) for task in range(3)]
    counts = [len(continual_sweep.intervention_steps(config, task, 100)) for task in range(3)]
    assert counts == [16, 17, 16]  # the last task's last update (300) is no application
    for task, events in enumerate(rows):
        assert [fields.get("applications") for _, fields in events] == [counts[task]], events
    assert rows[2][0][0] == 294  # the run's last application


def test_no_intervention_follows_the_runs_last_update():
    """The saved network is the one the last evaluation scored: a periodic intervention due at
    the last update does not run (as in the RL loops), one due at an earlier task's end does."""
    config = tiny_config(every=6)
    trainer = continual.make_trainer(config, intervention_factory=recorder)
    carry, _ = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    seen = carry.state.extra["recorder"]
    assert int(seen["count"]) == 3 and int(seen["step_sum"]) == 6 + 12 + 18
    assert continual_sweep.intervention_steps(config, 3, 6) == []


def test_the_effective_lr_exponent_follows_the_optimizer_and_reaches_the_diagnostics():
    calls = []

    def factory(model, loss_fn, names, **options):
        calls.append(options)
        return lambda *args: {}

    for name, expected in (("adam", 1.0), ("rmsprop", 1.0), ("sgd", 2.0), ("momentum", 2.0)):
        config = tiny_config()
        config.optimizer.name = name
        config.diagnostics.names = ("effective_lr", "weight_norm")
        assert continual.effective_lr_exponent(config) == expected
        continual.make_trainer(config, diagnostics_factory=factory)
        assert calls[-1]["effective_lr_exponent"] == expected
    config = tiny_config()
    config.diagnostics.names = ("weight_norm",)  # no effective_lr: the option is not forced
    continual.make_trainer(config, diagnostics_factory=factory)
    assert "effective_lr_exponent" not in calls[-1]
    config.diagnostics.options = ml_collections.ConfigDict({"effective_lr_exponent": 1.5})
    assert continual.effective_lr_exponent(config) == 1.5  # the module's option sets both
    config.diagnostics.effective_lr_exponent = 2.0
    with pytest.raises(ValueError, match="disagree; set only one"):
        continual.effective_lr_exponent(config)
    config.diagnostics.effective_lr_exponent = 1.5
    assert continual.effective_lr_exponent(config) == 1.5


def test_built_in_and_module_effective_lr_rows_agree_for_adam():
    from plasticity import diagnostics  # noqa: PLC0415

    built = []

    def factory(model, loss_fn, names, **options):
        built.append(diagnostics.make_diagnostics_fn(model, loss_fn, names, **options))
        return built[-1]

    config = tiny_config()
    config.diagnostics.names = ("effective_lr",)
    trainer = continual.make_trainer(config, diagnostics_factory=factory)
    learning_rate = jnp.float32(config.optimizer.learning_rate)
    exponent = continual.effective_lr_exponent(config)

    @jax.jit
    def both(rng):
        params = trainer.model.init(rng, jnp.zeros((1, 64)))["params"]
        own = continual.builtin_diagnostics(params, params, learning_rate, exponent)
        module = built[0](
            params, params, jnp.zeros((2, 64)), jnp.zeros((2,), jnp.int32), rng, learning_rate
        )
        return own, module

    own, module = both(jax.random.PRNGKey(0))
    for layer in ("hidden_0", "output"):
        key = f"effective_lr/{layer}"
        np.testing.assert_allclose(module[key], own[key], rtol=1e-6)
        np.testing.assert_allclose(  # p = 1 for Adam
            own[key], learning_rate / own[f"weight_norm/{layer}"], rtol=1e-6
        )


def probe_recorder(name, model, **options):
    """Records a statistic of each call's probe batch (sensitive to which examples and where)."""
    del model, options

    def init(params):
        del params
        return {"count": jnp.zeros([], jnp.int32), "seen": jnp.zeros((16,), jnp.float32)}

    def apply(state, probe_inputs, rng):
        del rng
        flat = probe_inputs.reshape(probe_inputs.shape[0], -1)
        weights = jnp.sin(jnp.arange(flat.size, dtype=jnp.float32)).reshape(flat.shape)
        own = state.extra[name]
        seen = own["seen"].at[own["count"]].set(jnp.sum(flat * weights))
        return state.replace(extra={**state.extra, name: {"count": own["count"] + 1, "seen": seen}})

    return init, apply


def test_each_intervention_draws_its_probe_and_a_boundarys_reads_the_task_that_ended():
    """Interventions every 3 updates and at task boundaries: each call scores units on examples
    drawn for its step (not one probe batch a task, as the diagnostics'), and the boundary's
    call at step 6 sees the same examples of the task that ended as the periodic call after its
    last update (the RL loops score the game that ended)."""
    config = tiny_config(every=3, at_task_boundaries=True)
    trainer = continual.make_trainer(config, intervention_factory=probe_recorder)
    carry, _ = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    own = carry.state.extra["recorder"]
    # Steps 3, 6 (periodic), 6 (boundary), 9, 12, 12, 15, 18, 18, 21.
    seen = own["seen"][: int(own["count"])]
    assert len(seen) == 10
    assert seen[1] == seen[2] and seen[4] == seen[5] and seen[7] == seen[8]
    assert len({float(v) for v in seen}) == 7, seen  # every other call on other examples


def test_task_rows_count_the_units_continual_backprop_replaced_so_far():
    """Every unit replaced at each application (rate 1, maturity 0): 8 hidden units at steps 3
    and 6 of each 6-step task, none after the run's last update (24), so the task rows count
    16, 32, 48 and 56; an intervention that replaces no units adds no field."""
    config = tiny_config(every=3)
    config.intervention.update(
        name="cbp", options={"replacement_rate": 1.0, "maturity_threshold": 0}
    )
    trainer = continual.make_trainer(config)
    _, outputs = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(outputs["task"]["units_replaced"], [16, 32, 48, 56])
    trainer = continual.make_trainer(tiny_config(every=3), intervention_factory=recorder)
    _, outputs = jax.eval_shape(trainer.train, jax.random.PRNGKey(0))
    assert "units_replaced" not in outputs["task"]


def batch_sum_recorder(name, model, **options):
    """Records the sum of each call's probe inputs and their number of examples."""
    del model, options

    def init(params):
        del params
        return {
            "count": jnp.zeros([], jnp.int32),
            "sums": jnp.zeros((64,), jnp.float32),
            "examples": jnp.zeros([], jnp.int32),
        }

    def apply(state, probe_inputs, rng):
        del rng
        own = state.extra[name]
        sums = own["sums"].at[own["count"]].set(jnp.sum(probe_inputs))
        examples = jnp.asarray(probe_inputs.shape[0], jnp.int32)
        own = {"count": own["count"] + 1, "sums": sums, "examples": examples}
        return state.replace(extra={**state.extra, name: own})

    return init, apply


@pytest.mark.parametrize("probe", ["last_batch", "fresh"])
def test_an_intervention_after_every_update_can_score_units_on_that_updates_minibatch(probe):
    """``intervention.probe='last_batch'``: the call after update s gets the minibatch of step
    s − 1, continual backprop's source in its authors' code. With shuffled sampling and 8 × 8
    examples a task, the calls after a task's 8 updates see each of its 64 examples once, so
    their input sums are the same in every task (a pixel permutation keeps them); a fresh probe
    of 16 examples per call (or the batch of step s) gives other sums in each task."""
    config = tiny_config(every=1)
    config.intervention.probe = probe
    config.task.update(name="input_permutation", sampling="shuffled", steps_per_task=8)
    config.diagnostics.update(probe_size=16, every=4)
    trainer = continual.make_trainer(config, intervention_factory=batch_sum_recorder)
    carry, _ = jax.device_get(jax.jit(trainer.train)(jax.random.PRNGKey(0)))
    own = carry.state.extra["recorder"]
    assert int(own["count"]) == 31  # after updates 1..31: none after the run's last
    assert int(own["examples"]) == (8 if probe == "last_batch" else 16)
    totals = own["sums"][:24].reshape(3, 8).sum(axis=1)
    if probe == "last_batch":
        np.testing.assert_allclose(totals, totals[0], rtol=1e-5)
    else:
        assert np.ptp(totals) > 1e-3 * abs(totals[0])  # 10.25 of 2,476 here
