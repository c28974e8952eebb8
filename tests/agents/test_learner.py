"""The DQN / Rainbow learner: pinned networks, seeds, target copies, noise, n-step targets through
the learner, importance weights, NaP and weight decay through the agent config. (The prioritized
replay switch is tested through the loop's compiled learn step, in test_atari_loop.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from agents import configs
from agents.learner import make_learn_step, make_learner, make_replay, preprocess_observations
from agents.replay import replay_add, replay_transitions
from agents.sum_tree import sum_tree_leaves
from plasticity.networks import parameter_count

OBS_SPEC = jax.ShapeDtypeStruct((84, 84, 4), jnp.uint8)
add = jax.jit(replay_add)
NUM_ACTIONS = 6
BATCH = 8


def tiny(agent: str, **sections) -> ml_collections.ConfigDict:
    config = configs.smoke_config(agent)
    config.learner.batch_size = BATCH
    for path, value in sections.items():
        section, field = path.split("__")
        config[section][field] = value
    return config


def random_batch(seed: int = 0, size: int = BATCH, same_observation: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (size, 84, 84, 4), dtype=np.uint8)
    if same_observation:
        obs[:] = obs[0]
    return dict(
        obs_tm1=jnp.asarray(obs),
        a_tm1=jnp.asarray(
            np.zeros(size) if same_observation else rng.integers(0, NUM_ACTIONS, size), jnp.int32
        ),
        r_t=jnp.asarray(rng.normal(size=size), jnp.float32),
        discount_t=jnp.full((size,), 0.99, jnp.float32),
        obs_t=jnp.asarray(rng.integers(0, 256, (size, 84, 84, 4), dtype=np.uint8)),
    )


@pytest.fixture(scope="module", autouse=True)
def fast_compiling_random_numbers():
    """Threefry's partitionable mode multiplies XLA:CPU compile times of multi-axis random draws
    (e.g. conv kernel inits) by ~10; these tests do not depend on which stream is drawn."""
    with jax.threefry_partitionable(False):
        yield


@pytest.fixture(scope="module")
def dqn():
    """A tiny DQN learner (target copied every 2 updates) and its jitted functions."""
    learner = make_learner(tiny("dqn", learner__target_update_period_frames=32), NUM_ACTIONS)
    assert learner.target_update_period == 2
    return learner, jax.jit(learner.update), jax.jit(learner.init, static_argnums=1)


@pytest.fixture(scope="module")
def dqn_loss(dqn):
    return jax.jit(dqn[0].loss)


def test_nature_networks_have_the_published_shapes():
    dqn_learner = make_learner(configs.dqn_config(), NUM_ACTIONS)
    params = jax.eval_shape(dqn_learner.init, jax.random.key(0), OBS_SPEC).params
    torso = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64)
    flat = 7 * 7 * 64
    assert parameter_count(params) == torso + (flat * 512 + 512) + (512 * NUM_ACTIONS + NUM_ACTIONS)
    shapes = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()}
    assert shapes["torso/conv_0/linear/kernel"] == (8, 8, 4, 32)
    assert shapes["torso/conv_1/linear/kernel"] == (4, 4, 32, 64)
    assert shapes["torso/conv_2/linear/kernel"] == (3, 3, 64, 64)

    rainbow = make_learner(configs.rainbow_config(), NUM_ACTIONS)
    params = jax.eval_shape(rainbow.init, jax.random.key(0), OBS_SPEC).params
    noisy = lambda fan_in, fan_out: 2 * (fan_in * fan_out + fan_out)  # means and sigmas
    head = noisy(flat, 512) + noisy(512, 51) + noisy(flat, 512) + noisy(512, NUM_ACTIONS * 51)
    assert parameter_count(params) == torso + head


def test_seeds_are_honoured_and_the_target_is_a_separate_copy(dqn):
    learner, _, init = dqn
    a, b, c = (init(jax.random.key(seed), OBS_SPEC) for seed in (0, 0, 1))
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    assert not np.array_equal(
        a.params["head"]["output"]["kernel"], c.params["head"]["output"]["kernel"]
    )
    jax.tree.map(np.testing.assert_array_equal, a.params, a.extra["target_params"])
    for online, target in zip(jax.tree.leaves(a.params), jax.tree.leaves(a.extra["target_params"])):
        assert online.unsafe_buffer_pointer() != target.unsafe_buffer_pointer()


def test_target_params_are_copied_every_period(dqn):
    learner, update, init = dqn
    state = init(jax.random.key(0), OBS_SPEC)
    initial = state.params
    batch, weights = random_batch(), jnp.ones(BATCH)
    state, aux = update(state, batch, weights, jax.random.key(1))
    assert not bool(aux["target_synced"]) and np.isfinite(float(aux["loss"]))
    jax.tree.map(np.testing.assert_array_equal, state.extra["target_params"], initial)
    state, aux = update(state, batch, weights, jax.random.key(2))
    assert bool(aux["target_synced"])
    jax.tree.map(np.testing.assert_array_equal, state.extra["target_params"], state.params)
    after_two = state.params
    state, _ = update(state, batch, weights, jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, state.extra["target_params"], after_two)
    assert int(state.step) == 3


def test_importance_weights_multiply_the_per_example_losses(dqn, dqn_loss):
    learner, _, init = dqn
    state = init(jax.random.key(0), OBS_SPEC)
    batch = random_batch(3)
    weights = jnp.asarray(np.random.default_rng(1).uniform(0, 1, BATCH), jnp.float32)
    weighted, (terms, _) = dqn_loss(state.params, state.params, batch, weights, jax.random.key(0))
    np.testing.assert_allclose(
        weighted, np.mean(np.asarray(weights) * np.asarray(terms.losses)), rtol=1e-6
    )


def test_n_step_targets_at_an_episode_end_through_the_learner(dqn, dqn_loss):
    """One env: o_0 .. o_4 with rewards 1, 2, 3, 4 on arriving at o_1 .. o_4, game over at o_4.

    n = 3, discount 0.9: o_0 -> 1 + .9*2 + .81*3 bootstrapped from o_3 with .729; o_1 -> 2 + .9*3 +
    .81*4 with discount 0; o_2 -> 3 + .9*4, discount 0; o_3 -> 4, discount 0.
    """
    learner, _, init = dqn
    state = init(jax.random.key(0), OBS_SPEC)
    config = tiny("dqn", learner__n_step=3)
    replay = make_replay(config.copy_and_resolve_references(), (84, 84), num_envs=1, stack=4)
    frames = np.random.default_rng(0).integers(0, 256, (8, 84, 84), dtype=np.uint8)
    rewards = [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0]
    discounts = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    for t in range(8):
        replay = add(
            replay,
            frames[t][None],
            jnp.array([t % NUM_ACTIONS]),
            jnp.array([rewards[t]]),
            jnp.array([discounts[t]]),
            jnp.array([t in (0, 5)]),
            jnp.array([t == 4]),
        )
    indices = jnp.array([0, 1, 2, 3] * (BATCH // 4))
    batch = jax.jit(replay_transitions, static_argnums=2)(replay, indices, 3, 0.9)
    _, (terms, _) = dqn_loss(state.params, state.params, batch, jnp.ones(BATCH), jax.random.key(0))

    def stack(t):  # frames of o_t's episode, zeros before its start, oldest first
        return np.stack(
            [frames[i] if i >= 0 else np.zeros((84, 84), np.uint8) for i in range(t - 3, t + 1)], -1
        )

    observations = np.stack([stack(t) for t in (0, 1, 2, 3, 3, 4, 4, 4)])
    q_values = jax.jit(learner.apply)(state.params, jnp.asarray(observations), jax.random.key(0))
    q_tm1, q_boot = np.split(np.asarray(q_values.q_values), 2)
    returns = np.array([1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3 + 0.81 * 4, 3 + 0.9 * 4, 4.0])
    bootstrap_discounts = np.array([0.729, 0.0, 0.0, 0.0])
    expected = (
        returns
        + bootstrap_discounts * q_boot.max(1)
        - q_tm1[np.arange(4), np.arange(4) % NUM_ACTIONS]
    )
    np.testing.assert_allclose(terms.td_errors[:4], expected, rtol=1e-5, atol=1e-5)


def test_noisy_nets_draw_independent_noise_for_every_example():
    config = tiny("rainbow", network__dueling=False, learner__double_q=False)  # fewer compiles
    learner = make_learner(config, NUM_ACTIONS)
    state = jax.jit(learner.init, static_argnums=1)(jax.random.key(0), OBS_SPEC)  # one compile
    batch = random_batch(same_observation=True)
    target = state.extra["target_params"]
    loss, (terms, outputs) = jax.jit(learner.loss)(
        state.params, target, batch, jnp.ones(BATCH), jax.random.key(1)
    )
    assert np.isfinite(float(loss)) and outputs.logits.shape == (BATCH, NUM_ACTIONS, 51)
    q_values = np.asarray(outputs.q_values)
    assert np.unique(q_values[:, 0]).size == BATCH, "examples of a batch share one noise sample"
    assert np.unique(np.asarray(terms.losses)).size == BATCH
    apply = jax.jit(learner.apply, static_argnums=3)
    mean_weights = np.asarray(
        apply(state.params, batch["obs_tm1"], jax.random.key(2), True).q_values
    )
    np.testing.assert_allclose(mean_weights, np.broadcast_to(mean_weights[0], mean_weights.shape))


def test_act_is_greedy_at_epsilon_zero_and_uniform_at_one(dqn):
    learner, _, init = dqn
    state = init(jax.random.key(0), OBS_SPEC)
    obs = random_batch(size=256)["obs_tm1"]
    act = jax.jit(learner.act)
    greedy = np.asarray(learner.apply(state.params, obs, jax.random.key(0)).q_values).argmax(1)
    np.testing.assert_array_equal(act(state.params, obs, jax.random.key(1), 0.0), greedy)
    random_actions = np.asarray(act(state.params, obs, jax.random.key(1), 1.0))
    counts = np.bincount(random_actions, minlength=NUM_ACTIONS)
    assert counts.min() > 20, counts  # 256 uniform draws over 6 actions: about 43 each
    again = act(state.params, obs, jax.random.key(1), 1.0)
    np.testing.assert_array_equal(random_actions, again)


def test_nap_and_weight_decay_come_from_the_agent_config():
    without_norm = tiny("dqn")
    without_norm.optimizer.nap.enabled = True
    with pytest.raises(ValueError, match="NaP needs a normalization"):
        make_learner(without_norm, NUM_ACTIONS)
    config = tiny("dqn", network__norm="layernorm", optimizer__weight_decay=0.5)
    config.optimizer.update(dict(name="sgd", learning_rate=0.1, max_grad_norm=0.0))
    config.optimizer.nap.enabled = True
    learner = make_learner(config, NUM_ACTIONS)
    state = jax.jit(learner.init, static_argnums=1)(jax.random.key(0), OBS_SPEC)  # one compile
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), state.params)
    updates, _ = jax.jit(learner.optimizer.update)(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    path = ("torso", "conv_1", "linear", "kernel")  # followed by a LayerNorm: projected by NaP
    old_kernel = traverse_util.flatten_dict(state.params)[path]
    new_kernel = traverse_util.flatten_dict(new_params)[path]
    assert not np.allclose(new_kernel, old_kernel)
    np.testing.assert_allclose(np.linalg.norm(new_kernel), np.linalg.norm(old_kernel), rtol=1e-5)
    output = ("head", "output", "kernel")  # not projected: plain SGD step with weight decay
    expected = traverse_util.flatten_dict(state.params)[output] * (1 - 0.1 * 0.5) - 0.1 * 0.01
    np.testing.assert_allclose(
        traverse_util.flatten_dict(new_params)[output], expected, rtol=1e-5, atol=1e-7
    )


def random_minatar_batch(rng: np.random.Generator) -> dict:
    """A batch of BATCH MinAtar-shaped transitions (binary 10×10×4 observations)."""
    return dict(
        obs_tm1=jnp.asarray(rng.integers(0, 2, (BATCH, 10, 10, 4), dtype=np.uint8)),
        a_tm1=jnp.asarray(rng.integers(0, NUM_ACTIONS, BATCH), jnp.int32),
        r_t=jnp.asarray(rng.normal(size=BATCH), jnp.float32),
        discount_t=jnp.full((BATCH,), 0.99, jnp.float32),
        obs_t=jnp.asarray(rng.integers(0, 2, (BATCH, 10, 10, 4), dtype=np.uint8)),
    )


def test_the_gradient_norm_is_the_global_norm_and_skipping_it_changes_no_update():
    """``aux['grad_norm']`` is the 2-norm of every parameter's gradient (NumPy reference, float64);
    with ``learner.grad_norm`` off the update leaves it out and is otherwise bit for bit the same."""
    spec = jax.ShapeDtypeStruct((10, 10, 4), jnp.uint8)
    rng = np.random.default_rng(3)
    batch = random_minatar_batch(rng)
    weights, key = jnp.ones(BATCH), jax.random.key(1)
    sections = dict(network__torso="mlp", network__mlp_sizes=(32,), network__hidden_sizes=(16,))
    with_norm = make_learner(tiny("dqn", **sections), NUM_ACTIONS)
    without = make_learner(tiny("dqn", learner__grad_norm=False, **sections), NUM_ACTIONS)
    state = with_norm.init(jax.random.key(0), spec)

    def loss(params):
        target = state.extra["target_params"]
        return with_norm.loss(params, target, batch, weights, key, state.extra)[0]

    grads = jax.grad(loss)(state.params)
    expected = np.sqrt(
        sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(grads))
    )
    updated, aux = jax.jit(with_norm.update)(state, batch, weights, key)
    assert expected > 0
    # A float32 sum of squares of ~13k terms: relative error well under 1e-5.
    np.testing.assert_allclose(float(aux["grad_norm"]), expected, rtol=1e-5)

    skipped, aux_skipped = jax.jit(without.update)(state, batch, weights, key)
    assert "grad_norm" not in aux_skipped and float(aux_skipped["loss"]) == float(aux["loss"])
    jax.tree.map(np.testing.assert_array_equal, skipped.params, updated.params)
    jax.tree.map(np.testing.assert_array_equal, skipped.opt_state, updated.opt_state)


def test_only_rainbows_preset_clips_the_gradient_norm_as_in_dqn_zoo():
    """DQN Zoo's Rainbow clips the global gradient norm at 10; its DQN has no such clip."""
    for family in configs.FAMILIES:
        assert configs.get_config("dqn", family).optimizer.max_grad_norm == 0.0
        assert configs.get_config("rainbow", family).optimizer.max_grad_norm == 10.0


def test_pixels_are_scaled_to_the_unit_interval_and_planes_kept():
    """uint8 pixels enter the network in [0, 1] (x / 255); MinAtar's boolean planes as 0 or 1."""
    pixels = preprocess_observations(jnp.array([0, 51, 255], jnp.uint8))
    assert pixels.dtype == jnp.float32
    np.testing.assert_allclose(pixels, [0.0, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(preprocess_observations(jnp.array([False, True])), [0.0, 1.0])


def test_double_q_selects_with_the_online_network_and_evaluates_with_the_target():
    """Double Q-learning's TD error, r + discount * Q_target(o_t, argmax_a Q_online(o_t, a)) -
    Q_online(o_tm1, a_tm1), against NumPy on the two networks' Q-values."""
    spec = jax.ShapeDtypeStruct((10, 10, 4), jnp.uint8)
    sections = dict(network__torso="mlp", network__mlp_sizes=(32,), network__hidden_sizes=(16,))
    learner = make_learner(tiny("dqn", learner__double_q=True, **sections), NUM_ACTIONS)
    init = jax.jit(learner.init, static_argnums=1)
    online, target = (init(jax.random.key(seed), spec).params for seed in (0, 1))
    rng = np.random.default_rng(4)
    batch = random_minatar_batch(rng)
    key = jax.random.key(2)
    _, (terms, _) = jax.jit(learner.loss)(online, target, batch, jnp.ones(BATCH), key)
    apply = jax.jit(learner.apply)
    q = lambda params, obs: np.asarray(apply(params, obs, key).q_values, np.float64)  # noqa: E731
    q_tm1, q_t_online, q_t_target = (
        q(online, batch["obs_tm1"]),
        q(online, batch["obs_t"]),
        q(target, batch["obs_t"]),
    )
    selected = q_t_online.argmax(1)
    assert (selected != q_t_target.argmax(1)).any()  # the two networks disagree somewhere
    rows = np.arange(BATCH)
    expected = (
        np.asarray(batch["r_t"])
        + 0.99 * q_t_target[rows, selected]
        - q_tm1[rows, np.asarray(batch["a_tm1"])]
    )
    # float32 Q-values of order 1 computed in two programs: agree to a few ulps.
    np.testing.assert_allclose(terms.td_errors, expected, rtol=1e-5, atol=1e-5)


def test_the_replay_capacity_is_rounded_down_to_whole_env_time_lines():
    """A capacity that is no multiple of the env count gives each env an equal time line (30
    slots over 4 envs: 7 each), not a refusal."""
    config = tiny("dqn", replay__capacity=30)
    replay = make_replay(config, (3,), num_envs=4, stack=1)
    assert (replay.num_envs, replay.slots_per_env, replay.capacity) == (4, 7, 28)


def test_the_presets_start_as_dqn_zoo_and_the_purejaxrl_settings_as_flax():
    """The Atari presets draw plain layers U(±1/√fan_in), kernels and biases (DQN Zoo), at init
    and for the interventions' fresh networks; the MinAtar presets and PureJaxRL's settings keep
    Flax's LeCun-normal kernels and zero biases, as PureJaxRL's `nn.Dense` layers do."""
    from agents import probes  # noqa: PLC0415
    from benchmarks import peer_settings  # noqa: PLC0415

    config = configs.dqn_config()
    learner = make_learner(config, NUM_ACTIONS)
    state = learner.init(jax.random.key(0), OBS_SPEC)
    fresh = probes.fresh_params_fn(config, learner)(
        jax.random.key(1), preprocess_observations(jnp.zeros((1, *OBS_SPEC.shape), jnp.uint8))
    )
    for params in (state.params, state.extra["target_params"], fresh):
        conv = params["torso"]["conv_0"]["linear"]
        bound = 1 / np.sqrt(8 * 8 * 4)
        assert np.abs(conv["kernel"]).max() <= bound and np.abs(conv["bias"]).max() <= bound
        np.testing.assert_allclose(np.std(conv["kernel"]), bound / np.sqrt(3), rtol=0.05)
        assert np.unique(np.asarray(conv["bias"])).size == 32
    fresh_bias, own_bias = (p["torso"]["conv_0"]["linear"]["bias"] for p in (fresh, state.params))
    assert not np.array_equal(fresh_bias, own_bias)

    purejaxrl = peer_settings.purejaxrl_config(seeds=1, steps=1000, diagnostics=False)
    learner = make_learner(purejaxrl, NUM_ACTIONS)
    state = learner.init(jax.random.key(0), jax.ShapeDtypeStruct((10, 10, 4), jnp.bool_))
    hidden = state.params["torso"]["hidden_0"]["linear"]
    assert not np.any(hidden["bias"])
    np.testing.assert_allclose(np.std(hidden["kernel"]), 1 / np.sqrt(400), rtol=0.05)
    minatar = configs.get_config("rainbow", "minatar")
    state = make_learner(minatar, NUM_ACTIONS).init(
        jax.random.key(0), jax.ShapeDtypeStruct((10, 10, 4), jnp.bool_)
    )
    assert not np.any(state.params["torso"]["conv_0"]["linear"]["bias"])


def test_each_familys_rainbow_has_its_references_support():
    """C51's atoms: DQN Zoo's [-10, 10] on Atari's clipped rewards; on MinAtar's unclipped ones
    Obando-Ceron & Castro's [-100, 100], which a return of one point a step for 1,000 steps
    (99.996 discounted at 0.99) still fits."""
    atari = np.asarray(make_learner(configs.rainbow_config(), NUM_ACTIONS).support)
    minatar = np.asarray(
        make_learner(configs.get_config("rainbow", "minatar"), NUM_ACTIONS).support
    )
    assert (atari[0], atari[-1], atari.size) == (-10.0, 10.0, 51)
    assert (minatar[0], minatar[-1], minatar.size) == (-100.0, 100.0, 51)
    assert sum(0.99**t for t in range(1_000)) < minatar[-1]


@pytest.mark.parametrize(
    "begin, end, refused", [(0.0, 0.0, True), (1.0, 0.0, False), (0.0, 0.1, False)]
)
def test_rainbow_without_noisy_nets_is_refused_only_when_its_epsilon_never_leaves_0(
    begin, end, refused
):
    """``network.noisy=False`` needs epsilon-greedy exploration: a schedule staying at 0 is
    refused in one line, one that starts (1 -> 0, annealed to greedy) or ends above 0 is not."""
    config = configs.rainbow_config()
    config.network.noisy = False
    config.exploration.update({"epsilon_begin": begin, "epsilon_end": end})
    if refused:
        with pytest.raises(ValueError, match="network.noisy=False with exploration.epsilon_begin"):
            configs.validate_config(config)
    else:
        configs.validate_config(config)


MINATAR_SPEC = jax.ShapeDtypeStruct((10, 10, 4), jnp.uint8)
SMALL_MLP = dict(network__torso="mlp", network__mlp_sizes=(32,), network__hidden_sizes=(16,))


def test_the_logged_q_statistics_and_a_huber_loss_of_delta_one_32nd_match_numpy():
    """``aux``'s q_mean, q_taken_mean, q_max_mean and td_abs_mean are the batch means of
    Q(o_tm1, ·), Q(o_tm1, a_tm1), max_a Q(o_tm1, a) and |TD error| (NumPy on the network's
    Q-values); with ``learner.huber_delta = 1/32`` (DQN Zoo's DQN) every per-example loss is
    0.5 td² for |td| ≤ δ and δ(|td| − δ/2) beyond, and the loss their weighted mean. Rewards are
    set so that the TD errors straddle δ, both branches of the Huber loss being used."""
    delta = 1.0 / 32.0
    learner = make_learner(tiny("dqn", learner__huber_delta=delta, **SMALL_MLP), NUM_ACTIONS)
    state = jax.jit(learner.init, static_argnums=1)(jax.random.key(0), MINATAR_SPEC)
    state = state.replace(
        extra={"target_params": init_params(learner, 1)}  # a target unlike the online network
    )
    batch = random_minatar_batch(np.random.default_rng(6))
    key = jax.random.key(3)
    apply = jax.jit(learner.apply)
    q_tm1 = np.asarray(apply(state.params, batch["obs_tm1"], key).q_values, np.float64)
    q_t = np.asarray(apply(state.extra["target_params"], batch["obs_t"], key).q_values, np.float64)
    rows, actions = np.arange(BATCH), np.asarray(batch["a_tm1"])
    wanted = np.array([-0.5, -0.03, -0.01, 0.0, 0.02, 0.0312, 0.04, 2.0])
    rewards = (wanted - 0.99 * q_t.max(1) + q_tm1[rows, actions]).astype(np.float32)
    batch["r_t"] = jnp.asarray(rewards)
    weights = np.random.default_rng(7).uniform(0.2, 1.0, BATCH).astype(np.float32)
    _, aux = jax.jit(learner.update)(state, batch, jnp.asarray(weights), key)

    td = rewards + 0.99 * q_t.max(1) - q_tm1[rows, actions]
    np.testing.assert_allclose(td, wanted, atol=1e-5)
    huber = np.where(np.abs(td) <= delta, 0.5 * td**2, delta * (np.abs(td) - 0.5 * delta))
    # float32 Q-values of order 1 in two programs: they agree to a few ulps.
    np.testing.assert_allclose(aux["per_example"]["td_errors"], td, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["per_example"]["losses"], huber, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(float(aux["loss"]), np.mean(weights * huber), rtol=1e-4)
    expected = {
        "q_mean": q_tm1.mean(),
        "q_taken_mean": q_tm1[rows, actions].mean(),
        "q_max_mean": q_tm1.max(1).mean(),
        "td_abs_mean": np.abs(td).mean(),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(float(aux[name]), value, rtol=1e-5, atol=1e-6, err_msg=name)


def init_params(learner, seed: int):
    """The online parameters ``learner.init`` draws for ``seed`` (MinAtar-shaped inputs)."""
    return jax.jit(learner.init, static_argnums=1)(jax.random.key(seed), MINATAR_SPEC).params


def test_noisy_acting_draws_noise_per_observation_unless_deterministic():
    """256 copies of one observation at epsilon 0: with noise (the default) each copy has its
    own noise sample, so the greedy actions differ; ``deterministic=True`` acts on the mean
    weights, one action for all."""
    config = tiny("rainbow", network__dueling=False, learner__double_q=False, **SMALL_MLP)
    learner = make_learner(config, NUM_ACTIONS)
    params = init_params(learner, 0)
    obs = jnp.broadcast_to(
        random_minatar_batch(np.random.default_rng(8))["obs_tm1"][0], (256, 10, 10, 4)
    )
    act = jax.jit(learner.act, static_argnums=4)
    noisy = np.asarray(act(params, obs, jax.random.key(1), 0.0, False))
    mean = np.asarray(act(params, obs, jax.random.key(1), 0.0, True))
    assert np.unique(noisy).size > 1, np.bincount(noisy)
    assert np.unique(mean).size == 1
    greedy = np.asarray(learner.apply(params, obs[:1], jax.random.key(0), True).q_values).argmax()
    assert mean[0] == greedy


def test_the_double_q_selector_draws_noise_of_its_own_key():
    """With noisy nets, an update's three network evaluations use the three keys its key splits
    into: online at o_tm1, target at o_t, online selector at o_t. The TD errors equal NumPy's on
    Q-values computed with those keys; a selector reusing the online or the target key selects
    other actions on some rows (checked), so its TD errors would differ."""
    config = tiny("rainbow", network__dueling=False, network__num_atoms=1, **SMALL_MLP)
    learner = make_learner(config, NUM_ACTIONS)
    assert config.learner.double_q and config.network.noisy
    online, target = init_params(learner, 0), init_params(learner, 1)
    batch = random_minatar_batch(np.random.default_rng(9))
    key = jax.random.key(4)
    _, (terms, _) = jax.jit(learner.loss)(online, target, batch, jnp.ones(BATCH), key)
    online_key, target_key, selector_key = jax.random.split(key, 3)
    apply = jax.jit(learner.apply)
    q = lambda params, obs, k: np.asarray(apply(params, obs, k).q_values, np.float64)  # noqa: E731
    q_tm1 = q(online, batch["obs_tm1"], online_key)
    q_t_target = q(target, batch["obs_t"], target_key)
    rows, actions = np.arange(BATCH), np.asarray(batch["a_tm1"])

    def td(selector_key):
        selected = q(online, batch["obs_t"], selector_key).argmax(1)
        return np.asarray(batch["r_t"]) + 0.99 * q_t_target[rows, selected] - q_tm1[rows, actions]

    expected = td(selector_key)
    np.testing.assert_allclose(terms.td_errors, expected, rtol=1e-5, atol=1e-5)
    for reused in (online_key, target_key):  # the mistakes this test must tell apart
        assert np.abs(td(reused) - expected).max() > 1e-3


def test_the_minatar_dqn_has_the_published_parameter_count():
    """The MinAtar DQN (Young & Tian 2019): one VALID 3×3 convolution of 16 channels on the
    10×10×C screen, a hidden layer of 128 and a linear output. For C = 4 (Breakout, Asterix) and
    the full action set of 6: (3·3·4·16 + 16) + (8·8·16·128 + 128) + (128·6 + 6) = 592 +
    131,200 + 774 = 132,566."""
    from agents.minatar_env import CHANNELS, FULL_ACTION_SET  # noqa: PLC0415

    spec = jax.ShapeDtypeStruct((10, 10, CHANNELS["breakout"]), jnp.bool_)
    learner = make_learner(configs.get_config("dqn", "minatar"), len(FULL_ACTION_SET))
    params = jax.eval_shape(learner.init, jax.random.key(0), spec).params
    assert parameter_count(params) == 132_566
    shapes = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()}
    assert shapes["torso/conv_0/linear/kernel"] == (3, 3, 4, 16)
    assert shapes["head/hidden_0/linear/kernel"] == (1024, 128)


def test_a_prioritized_learn_step_stores_each_td_errors_magnitude_plus_epsilon():
    """The priorities a prioritized learn step writes back are clip(|TD error|, 0, 100) + 1e-6
    (DQN Zoo's priority_max and epsilon), bit for bit in float32: with TD errors of order 1 the
    epsilon is several ulps, so a priority of |TD error| alone is told apart. The priority tree
    holds them to the power α = 0.5 (to 1e-6 of a float64 reference)."""
    config = tiny("dqn", replay__prioritized=True, replay__capacity=64, **SMALL_MLP)
    learner = make_learner(config, NUM_ACTIONS)
    replay = make_replay(config, (10, 10, 4), num_envs=1, stack=1)
    rng = np.random.default_rng(10)
    for t in range(24):
        replay = add(
            replay,
            jnp.asarray(rng.integers(0, 2, (1, 10, 10, 4), dtype=np.uint8)),
            jnp.asarray(rng.integers(0, NUM_ACTIONS, 1), jnp.int32),
            jnp.asarray(rng.normal(size=1), jnp.float32),
            jnp.ones(1),
            jnp.array([t == 0]),
            jnp.zeros(1, bool),
        )
    state = jax.jit(learner.init, static_argnums=1)(jax.random.key(0), MINATAR_SPEC)
    learn_step = jax.jit(make_learn_step(learner, config))
    _, after, aux = learn_step(state, replay, jax.random.key(1), jnp.float32(0.4))
    td = np.asarray(aux["per_example"]["td_errors"])
    expected = np.clip(np.abs(td), 0, 100).astype(np.float32) + np.float32(1e-6)
    assert np.all(expected != np.abs(td)) and np.abs(td).max() < 100
    np.testing.assert_array_equal(aux["per_example"]["priorities"], expected)
    indices = np.asarray(aux["per_example"]["indices"])
    last = [i for i, index in enumerate(indices) if index not in indices[i + 1 :]]
    stored = np.asarray(after.priority).reshape(-1)[indices[last]]
    np.testing.assert_array_equal(stored, expected[last])
    leaves = np.asarray(sum_tree_leaves(after.priority_tree))[indices[last]]
    np.testing.assert_allclose(leaves, np.sqrt(expected[last].astype(np.float64)), rtol=1e-6)
