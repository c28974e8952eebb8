"""Data-parallel learner updates on fake CPU devices equal the single-device update on the whole
batch.

Everything multi-device runs in one subprocess with 4 fake CPU devices (set before JAX starts);
it prints one JSON line of measurements that the tests below check. Every step is blocked on
before the next is dispatched (PLATFORM.md: queued all-reduces abort on a 2-core host).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {repo!r})
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_threefry_partitionable", False)
    from agents import configs, parallel
    from agents.learner import make_learner, make_replay
    from agents.replay import replay_add
    from plasticity import mesh as mesh_lib

    assert len(jax.devices()) == 4, jax.devices()
    OBS = jax.ShapeDtypeStruct((5, 5, 2), jnp.float32)
    ACTIONS, BATCH = 3, 8

    def config(noisy, batch=BATCH):
        c = configs.smoke_config("dqn")
        c.network.update(dict(torso="mlp", mlp_sizes=(16,), hidden_sizes=(16,), noisy=noisy))
        c.learner.batch_size = batch
        c.learner.target_update_period_frames = 1  # the target copy is part of the step
        return c

    def batch_of(rng, *lead):
        return dict(
            obs_tm1=rng.normal(size=lead + (5, 5, 2)).astype(np.float32),
            a_tm1=rng.integers(0, ACTIONS, lead).astype(np.int32),
            r_t=rng.normal(size=lead).astype(np.float32),
            discount_t=np.full(lead, 0.99, np.float32),
            obs_t=rng.normal(size=lead + (5, 5, 2)).astype(np.float32),
        )

    def max_diff(a, b):
        diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                                              - np.asarray(y, np.float64)))), a, b)
        return max(jax.tree.leaves(diffs))

    def max_abs(tree):
        return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(tree))

    out = {{}}
    rng = np.random.default_rng(0)

    # One run, batch split 4 ways; noisy nets draw per-example noise.
    learner = make_learner(config(noisy=True), ACTIONS)
    state = jax.jit(learner.init, static_argnums=1)(jax.random.PRNGKey(0), OBS)
    batch, weights = batch_of(rng, BATCH), rng.uniform(0.2, 1.0, BATCH).astype(np.float32)
    key = jax.random.PRNGKey(1)
    ref_state, ref_aux = jax.block_until_ready(jax.jit(learner.update)(state, batch, weights, key))
    mesh = mesh_lib.make_mesh("data:4")
    update = parallel.make_data_parallel_update(learner, mesh)
    args = (mesh_lib.replicate(state, mesh), mesh_lib.shard_batch(batch, mesh),
            mesh_lib.shard_batch(weights, mesh), mesh_lib.replicate(key, mesh))
    compiled = update.lower(*args).compile()
    new_state, aux = jax.block_until_ready(compiled(*args))
    out["single"] = dict(
        params_diff=max_diff(new_state.params, ref_state.params),
        params_change=max_diff(ref_state.params, state.params),
        target_diff=max_diff(new_state.extra["target_params"], ref_state.extra["target_params"]),
        opt_diff=max_diff(new_state.opt_state, ref_state.opt_state),
        loss=[float(aux["loss"]), float(ref_aux["loss"])],
        priorities_diff=max_diff(aux["per_example"]["priorities"],
                                 ref_aux["per_example"]["priorities"]),
        grad_norm=[float(aux["grad_norm"]), float(ref_aux["grad_norm"])],
        all_reduce="all-reduce" in compiled.as_text(),
        params_replicated=all(x.sharding.is_fully_replicated
                              for x in jax.tree.leaves(new_state.params)),
        per_example_spec=list(aux["per_example"]["priorities"].sharding.spec),
        per_example_shard=list(aux["per_example"]["priorities"].addressable_shards[0].data.shape),
    )

    # Two runs (seeds) × batch split 2 ways: mesh seed:2,data:2.
    learner = make_learner(config(noisy=False), ACTIONS)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (3, 4)])
    states = jax.jit(jax.vmap(learner.init, in_axes=(0, None)), static_argnums=1)(keys, OBS)
    batch, weights = batch_of(rng, 2, BATCH), rng.uniform(0.2, 1.0, (2, BATCH)).astype(np.float32)
    update_keys = jnp.stack([jax.random.PRNGKey(s) for s in (5, 6)])
    ref_states, ref_aux = jax.block_until_ready(
        jax.jit(jax.vmap(learner.update))(states, batch, weights, update_keys))
    mesh = mesh_lib.make_mesh("seed:2,data:2")
    update = parallel.make_data_parallel_update(learner, mesh, seed_axis="seed")
    new_states, aux = jax.block_until_ready(update(
        mesh_lib.shard_leading_axis(states, mesh),
        mesh_lib.shard_batch(batch, mesh, seed_axis="seed"),
        mesh_lib.shard_batch(weights, mesh, seed_axis="seed"),
        mesh_lib.shard_leading_axis(update_keys, mesh)))
    out["seeds"] = dict(
        params_diff=max_diff(new_states.params, ref_states.params),
        params_change=max_diff(ref_states.params, states.params),
        seeds_differ=max_diff(ref_states.params["head"], jax.tree.map(lambda x: x[::-1],
                                                                      ref_states.params["head"])),
        loss_diff=max_diff(aux["loss"], ref_aux["loss"]),
        params_spec=list(jax.tree.leaves(new_states.params)[0].sharding.spec),
    )

    # The update and the learn step check that the batch splits evenly, however state is placed.
    try:
        update = parallel.make_data_parallel_update(learner, mesh_lib.make_mesh("data:4"))
        update(states, batch_of(rng, 6), np.ones(6, np.float32), update_keys[0])
        out["uneven_update_error"] = None
    except ValueError as error:
        out["uneven_update_error"] = str(error)
    try:
        parallel.make_data_parallel_learn_step(learner, config(noisy=False, batch=6),
                                               mesh_lib.make_mesh("data:4"))
        out["uneven_error"] = None
    except ValueError as error:
        out["uneven_error"] = str(error)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def measured():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_THREEFRY_PARTITIONABLE": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(repo=str(REPO))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_data_parallel_step_equals_the_single_device_step_on_the_full_batch(measured):
    single = measured["single"]
    assert single["params_change"] > 1e-4  # the step moved the parameters
    assert single["params_diff"] <= 1e-6 * max(1.0, single["params_change"])
    assert single["target_diff"] <= 1e-6 and single["opt_diff"] <= 1e-6
    loss, reference = single["loss"]
    assert abs(loss - reference) <= 1e-6 * max(1.0, abs(reference))
    norm, reference_norm = single["grad_norm"]
    assert abs(norm - reference_norm) <= 1e-5 * reference_norm
    assert single["priorities_diff"] <= 1e-5


def test_gradients_are_all_reduced_and_parameters_stay_replicated(measured):
    single = measured["single"]
    assert single["all_reduce"]
    assert single["params_replicated"]
    assert single["per_example_spec"] == ["data"]
    assert single["per_example_shard"] == [2]  # 8 examples over 4 devices


def test_seeds_by_data_equals_the_vmapped_single_device_step(measured):
    seeds = measured["seeds"]
    assert seeds["params_change"] > 1e-4 and seeds["seeds_differ"] > 1e-4
    assert seeds["params_diff"] <= 1e-6 * max(1.0, seeds["params_change"])
    assert seeds["loss_diff"] <= 1e-6
    assert seeds["params_spec"][0] == "seed"


def test_uneven_batch_is_a_one_line_error(measured):
    expected = (
        "batch size 6 does not split over mesh axis 'data' of size 4; use a batch size "
        "divisible by it"
    )
    assert measured["uneven_error"] == expected  # the learn step
    assert measured["uneven_update_error"] == expected  # the update, state not placed


_LEARN_STEP = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_threefry_partitionable", False)
    from agents import configs, parallel
    from agents.learner import make_learn_step, make_learner
    from agents.replay import replay_add, replay_init
    from plasticity import mesh as mesh_lib

    c = configs.smoke_config("rainbow")  # prioritized replay, n-step, C51, double Q, dueling
    c.network.update(dict(torso="mlp", mlp_sizes=(16,), hidden_sizes=(16,), num_atoms=5,
                          noisy=False))
    c.learner.batch_size = 8
    learner = make_learner(c, 3)
    obs = jax.ShapeDtypeStruct((6, 6, 2), jnp.uint8)
    state = jax.jit(learner.init, static_argnums=1)(jax.random.PRNGKey(0), obs)
    replay = replay_init(64, 2, (6, 6), stack_size=2, max_n_step=c.learner.n_step)
    rng = np.random.default_rng(0)
    add = jax.jit(replay_add)
    for t in range(30):
        replay = add(replay, rng.integers(0, 255, (2, 6, 6), dtype=np.uint8),
                     rng.integers(0, 3, 2).astype(np.int32), rng.normal(size=2).astype(np.float32),
                     np.full(2, 0.99, np.float32), np.full(2, t == 0), np.zeros(2, bool))
    key, beta = jax.random.PRNGKey(3), jnp.float32(0.4)
    ref = jax.block_until_ready(jax.jit(make_learn_step(learner, c))(state, replay, key, beta))
    mesh = mesh_lib.make_mesh("data:2")
    step = jax.jit(parallel.make_data_parallel_learn_step(learner, c, mesh))
    out = jax.block_until_ready(step(mesh_lib.replicate(state, mesh),
                                     mesh_lib.replicate(replay, mesh), key, beta))
    diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y))))
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.size(x))
    assert diff(ref[0].params, state.params) > 1e-5  # the step moved the parameters
    assert diff(out[0].params, ref[0].params) <= 1e-7, diff(out[0].params, ref[0].params)
    assert diff(out[1], ref[1]) <= 1e-5, diff(out[1], ref[1])  # priorities written back
    np.testing.assert_array_equal(out[2]["per_example"]["indices"],
                                  ref[2]["per_example"]["indices"])
    print("LEARN_STEP_OK")
    """
)


@pytest.mark.slow
def test_data_parallel_learn_step_with_prioritized_replay_equals_the_single_device_one():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_THREEFRY_PARTITIONABLE": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", _LEARN_STEP.format(repo=str(REPO))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and "LEARN_STEP_OK" in done.stdout, done.stderr[-3000:]
