"""The RL diagnostics (`agents.probes.make_diagnose`) on a replay batch: each layer's effective
learning rate η/‖W‖^p takes the p of the agent's optimizer (1 for Adam and RMSProp, 2 for SGD and
momentum), as the continual trainer's does, unless the config sets p; the config's
``diagnostics.options`` reach `plasticity.diagnostics`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from agents import configs, probes
from agents.learner import make_learner, make_replay
from agents.replay import replay_add
from plasticity.optim import optimizer_learning_rate

OBS_SHAPE = (10, 10, 4)  # a MinAtar observation: the smoke preset's network is small
NUM_ACTIONS = 3
LEARNING_RATE = 3e-3


@pytest.fixture(scope="module", autouse=True)
def fast_compiling_random_numbers():
    with jax.threefry_partitionable(False):
        yield


def filled_replay(config):
    """A replay of one env with 40 random binary observations (episodes of 10 steps)."""
    replay = make_replay(config, OBS_SHAPE, num_envs=1, stack=1)
    rng = np.random.default_rng(0)
    for t in range(40):
        replay = replay_add(
            replay,
            jnp.asarray(rng.random((1, *OBS_SHAPE)) < 0.1),
            jnp.asarray(rng.integers(0, NUM_ACTIONS, 1), jnp.int32),
            jnp.asarray(rng.normal(size=1), jnp.float32),
            jnp.ones(1),
            jnp.full(1, t % 10 == 0),
            jnp.full(1, t % 10 == 9),
        )
    return replay


def diagnosed(optimizer: str, exponent: float | None = None):
    """(diagnostics rows, parameters) of a fresh smoke-preset DQN with ``optimizer`` at a constant
    learning rate; ``exponent`` sets ``diagnostics.effective_lr_exponent``."""
    config = configs.smoke_config("dqn", "minatar")
    config.optimizer.update(dict(name=optimizer, learning_rate=LEARNING_RATE))
    config.optimizer.schedule.update(dict(name="constant", warmup_steps=0))
    config.diagnostics.names = ("weight_norm", "effective_lr")
    if exponent is not None:
        config.diagnostics.effective_lr_exponent = exponent
    learner = make_learner(config, NUM_ACTIONS, OBS_SHAPE)
    spec = jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_)
    state = learner.init(jax.random.key(0), spec)
    diagnose = jax.jit(probes.make_diagnose(config, learner))
    rows = diagnose(state, filled_replay(config), state.params, jax.random.key(1))
    return {name: float(value) for name, value in rows.items()}, state.params


def kernel_norms(params) -> dict[str, float]:
    """{layer: ‖kernel‖} in NumPy, named as the diagnostics name layers (no '/linear')."""
    flat = traverse_util.flatten_dict(params)
    return {
        "/".join(p for p in path[:-1] if p != "linear"): float(np.linalg.norm(np.asarray(value)))
        for path, value in flat.items()
        if path[-1] == "kernel"
    }


@pytest.mark.parametrize(
    "optimizer, exponent, expected",
    [("rmsprop", None, 1.0), ("adam", None, 1.0), ("sgd", None, 2.0), ("adam", 2.0, 2.0)],
)
def test_the_effective_lr_takes_the_optimizers_exponent(optimizer, exponent, expected):
    rows, params = diagnosed(optimizer, exponent)
    norms = kernel_norms(params)
    assert len(norms) == 3  # conv, hidden, output
    for layer, norm in norms.items():
        np.testing.assert_allclose(rows[f"weight_norm/{layer}"], norm, rtol=1e-5)
        np.testing.assert_allclose(
            rows[f"effective_lr/{layer}"], LEARNING_RATE / norm**expected, rtol=1e-5
        )


def test_the_effective_lr_takes_the_rate_of_the_last_update():
    """After 5 updates of a warm-up, η is the 5th update's rate (as its 'train' row logs it and
    the update ratio measures), not the 6th's: at a block's end the next rate may already be the
    next block's restarted warm-up."""
    config = configs.smoke_config("dqn", "minatar")
    config.optimizer.update(dict(name="adam", learning_rate=LEARNING_RATE))
    config.optimizer.schedule.update(dict(name="warmup_cosine", warmup_steps=10, total_steps=100))
    config.diagnostics.names = ("effective_lr",)
    learner = make_learner(config, NUM_ACTIONS, OBS_SHAPE)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_))
    state = state.replace(step=jnp.asarray(5, state.step.dtype))
    rows = jax.jit(probes.make_diagnose(config, learner))(
        state, filled_replay(config), state.params, jax.random.key(1)
    )
    last = float(optimizer_learning_rate(config.optimizer, 4))
    assert last != pytest.approx(float(optimizer_learning_rate(config.optimizer, 5)))
    for layer, norm in kernel_norms(state.params).items():
        np.testing.assert_allclose(rows[f"effective_lr/{layer}"], last / norm, rtol=1e-5)


def test_the_options_reach_the_diagnostics_and_a_conflict_is_one_line():
    """``diagnostics.options`` sets `plasticity.diagnostics` options (here the dormant thresholds);
    p set both as the section's field and as an option, differently, is refused at build time."""
    config = configs.smoke_config("dqn", "minatar")
    config.diagnostics.names = ("dormant",)
    config.diagnostics.options = ml_collections.ConfigDict({"dormant_thresholds": (0.5,)})
    learner = make_learner(config, NUM_ACTIONS, OBS_SHAPE)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_))
    rows = jax.jit(probes.make_diagnose(config, learner))(
        state, filled_replay(config), state.params, jax.random.key(1)
    )
    assert "dormant_0.5" in rows and not any(name.startswith("dormant_0.025") for name in rows)
    config.diagnostics.options.effective_lr_exponent = 1.0
    config.diagnostics.effective_lr_exponent = 2.0
    with pytest.raises(ValueError, match="disagree; set only one"):
        probes.make_diagnose(config, learner)


def test_a_dueling_heads_singular_values_read_the_value_stream():
    """Rainbow's dueling head: 'feature_svd' reads the value stream's last hidden layer (not the
    advantage stream, the last one called) unless the options name a layer; DQN's single stream
    keeps the default, the last hidden layer."""
    rainbow = configs.smoke_config("rainbow", "minatar")
    assert probes.diagnostics_options(rainbow)["penultimate_layer"] == "head/value_hidden_0"
    rainbow.diagnostics.options = ml_collections.ConfigDict(
        {"penultimate_layer": "head/advantage_hidden_0"}
    )
    assert probes.diagnostics_options(rainbow)["penultimate_layer"] == "head/advantage_hidden_0"
    assert "penultimate_layer" not in probes.diagnostics_options(
        configs.smoke_config("dqn", "minatar")
    )

    rainbow = configs.smoke_config("rainbow", "minatar")
    rainbow.diagnostics.names = ("feature_svd",)
    learner = make_learner(rainbow, NUM_ACTIONS, OBS_SHAPE)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_))
    rows = jax.jit(probes.make_diagnose(rainbow, learner))(
        state, filled_replay(rainbow), state.params, jax.random.key(1)
    )
    assert (
        np.isfinite(float(rows["feature_top_singular_value"]))
        and rows["feature_top_singular_value"] > 0
    )


def test_after_an_injection_the_diagnostics_differentiate_the_agents_own_loss():
    """After plasticity injection the agent's values are h_θ + h_θ' − h_θ'₀ (the frozen parts in
    ``extra``): the diagnostics' gradient is that loss's, not the one of the new head alone."""
    from agents.learner import preprocess_observations  # noqa: PLC0415
    from agents.replay import replay_sample  # noqa: PLC0415

    config = configs.smoke_config("dqn", "minatar")
    config.diagnostics.names = ("grad_norm",)
    config.intervention.update(name="plasticity_injection", at_switch=True)
    learner = make_learner(config, NUM_ACTIONS, OBS_SHAPE)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_))
    state = probes.with_intervention_state(state, probes.make_intervention(config, learner))
    replay = filled_replay(config)
    state = jax.jit(probes.make_intervene(config, learner))(state, replay, jax.random.key(2))
    assert bool(state.extra["plasticity_injection"]["injected"])
    key = jax.random.key(1)
    rows = jax.jit(probes.make_diagnose(config, learner))(state, replay, state.params, key)
    sample_key, loss_key, _ = jax.random.split(key, 3)  # as `make_diagnose` draws them
    batch, _ = replay_sample(
        replay,
        sample_key,
        int(config.diagnostics.batch_size),
        int(config.learner.n_step),
        float(config.learner.discount),
    )
    batch = {**batch, "obs_tm1": preprocess_observations(batch["obs_tm1"])}
    weights = jnp.ones(batch["a_tm1"].shape[0], jnp.float32)
    target = state.extra["target_params"]

    def grad_norm(extra):
        grads = jax.grad(lambda p: learner.loss(p, target, batch, weights, loss_key, extra)[0])(
            state.params
        )
        return float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))))

    own, head_alone = grad_norm(state.extra), grad_norm(None)
    assert abs(own - head_alone) > 1e-3 * own  # the two losses differ here
    np.testing.assert_allclose(float(rows["grad_norm"]), own, rtol=1e-4)


def test_every_rl_run_logs_the_parameter_diagnostics_whatever_its_names():
    """Per-layer weight norm, effective learning rate and update size are logged by every RL
    run, as by the continual trainer: ``diagnostics.names`` lists more, never fewer."""
    config = configs.smoke_config("dqn", "minatar")
    config.diagnostics.names = ("dormant",)
    learner = make_learner(config, NUM_ACTIONS, OBS_SHAPE)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_))
    diagnose = jax.jit(probes.make_diagnose(config, learner))
    row = diagnose(state, filled_replay(config), state.params, jax.random.key(1), True)
    families = {name.split("/")[0] for name in row}
    assert {"weight_norm", "effective_lr", "update_ratio"} <= families
    assert any(family.startswith("dormant") for family in families)
    assert probes.logged_diagnostics(("srank", "effective_lr")) == (
        "srank", "effective_lr", "weight_norm", "update_ratio"
    )  # fmt: skip


def test_unknown_previous_parameters_null_the_update_ratios_and_nothing_else():
    """A diagnostics row before a chunk's first update (or after a resume) has no parameters
    from before the last update: its update ratios are NaN (null in metrics.jsonl), but every
    other metric of the row is measured as usual, the same as when they are known."""
    config = configs.smoke_config("dqn", "minatar")
    config.diagnostics.names = ("weight_norm", "update_ratio")
    learner = make_learner(config, NUM_ACTIONS, OBS_SHAPE)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct(OBS_SHAPE, jnp.bool_))
    diagnose = jax.jit(probes.make_diagnose(config, learner))
    replay = filled_replay(config)
    known = diagnose(state, replay, state.params, jax.random.key(1), True)
    unknown = diagnose(state, replay, state.params, jax.random.key(1), False)
    ratios = [name for name in known if name.startswith("update_ratio")]
    assert ratios and all(np.isnan(unknown[name]) for name in ratios)
    for name in set(known) - set(ratios):
        assert np.isfinite(unknown[name]) and unknown[name] == known[name], name
