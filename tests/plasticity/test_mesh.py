"""Tests of mesh specs and placement: one CPU device in this process, and 4 fake CPU devices in
one subprocess for the seed × data layouts (the sharded trainer is tested in
tests/benchmarks/test_continual.py, data-parallel learners in tests/agents/test_parallel.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import continual_config
from plasticity import mesh

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("auto", {}),
        ("", {}),
        ("seed:4", {"seed": 4}),
        ("seed:4, data:2", {"seed": 4, "data": 2}),
        ("seed:auto,data:2", {"seed": mesh.AUTO_SIZE, "data": 2}),
        ("data:auto", {"data": -1}),
    ],
)
def test_parse_mesh_spec(spec, expected):
    assert mesh.parse_mesh_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "seed",
        "seed:0",
        "seed:x",
        "seed:2,seed:2",
        "1a:2",
        "sed:4",
        "seed:auto,data:auto",
        "data:-1",
    ],
)
def test_bad_mesh_specs_raise_one_line(spec):
    with pytest.raises(ValueError, match="mesh spec") as error:
        mesh.parse_mesh_spec(spec)
    assert "\n" not in str(error.value)


def test_largest_divisor_at_most():
    assert [mesh.largest_divisor_at_most(n, 4) for n in (1, 2, 3, 6, 8, 9)] == [1, 2, 3, 3, 4, 3]


def test_auto_mesh_and_placement_on_the_available_devices():
    devices = jax.devices()
    built = mesh.make_mesh("auto", num_runs=len(devices) * 3)
    assert built.axis_names == ("seed",) and built.shape["seed"] == len(devices)
    assert mesh.format_mesh(built) == f"seed:{len(devices)}"
    tree = {"keys": np.arange(len(devices) * 6).reshape(-1, 2), "lr": np.ones(len(devices) * 3)}
    placed = mesh.shard_leading_axis(tree, built)
    np.testing.assert_array_equal(np.asarray(placed["keys"]), tree["keys"])
    assert placed["lr"].sharding.spec == jax.sharding.PartitionSpec("seed")
    copied = mesh.replicate({"x": np.arange(3.0)}, built)
    assert copied["x"].sharding.is_fully_replicated


def test_too_many_devices_and_unknown_axis_raise():
    with pytest.raises(ValueError, match="needs"):
        mesh.make_mesh(f"seed:{len(jax.devices()) + 1}")
    built = mesh.make_mesh("seed:1")
    with pytest.raises(ValueError, match="no axis 'data'"):
        mesh.leading_axis_sharding(built, "data")


def test_auto_sized_axes_and_batch_helpers_on_one_device():
    built = mesh.make_mesh("seed:auto,data:1", num_runs=3)
    expected_seeds = mesh.largest_divisor_at_most(3, len(jax.devices()))
    assert dict(built.shape) == {"seed": expected_seeds, "data": 1}
    assert mesh.axis_size(built, "data") == 1 and mesh.axis_size(built, "model") == 1
    assert mesh.batch_sharding(built).spec == jax.sharding.PartitionSpec("data")
    assert mesh.batch_sharding(built, seed_axis="seed").spec == jax.sharding.PartitionSpec(
        "seed", "data"
    )
    seed_only = mesh.make_mesh("seed:1")
    assert mesh.batch_sharding(seed_only).spec == jax.sharding.PartitionSpec(None)
    batch = {"obs": np.arange(12.0).reshape(6, 2), "action": np.arange(6)}
    placed = mesh.shard_batch(batch, built)
    np.testing.assert_array_equal(np.asarray(placed["obs"]), batch["obs"])
    gathered = mesh.global_batch(batch, built)  # one process: the local batch is the global one
    np.testing.assert_array_equal(np.asarray(gathered["action"]), batch["action"])
    with pytest.raises(ValueError, match="no example axis"):
        mesh.shard_batch({"scalar": np.float32(1.0)}, built)


def test_the_continual_trainer_refuses_a_data_axis():
    continual_config.check_mesh_spec("seed:4,data:1")
    with pytest.raises(ValueError, match="spreads runs over the 'seed' axis only") as error:
        continual_config.check_mesh_spec("seed:2,data:2")
    assert "\n" not in str(error.value)


def test_a_mesh_without_a_seed_axis_is_refused_for_runs():
    with pytest.raises(ValueError, match="mesh 'data:1' has no 'seed' axis to spread the runs"):
        mesh.check_seed_split(mesh.make_mesh("data:1"), "data:1", 2, "num_seeds=2")


_LAYOUTS = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    from plasticity import mesh
    assert len(jax.devices()) == 4, jax.devices()
    built = mesh.make_mesh("seed:auto,data:2", num_runs=6)
    assert dict(built.shape) == {{"seed": 2, "data": 2}}, built.shape
    assert dict(mesh.make_mesh("seed:auto", num_runs=6).shape) == {{"seed": 3}}
    assert dict(mesh.make_mesh("data:auto").shape) == {{"data": 4}}
    batch = np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)  # (runs, examples, features)
    placed = mesh.shard_batch(batch, built, seed_axis="seed")
    for shard in placed.addressable_shards:
        seed, data = np.argwhere(built.devices == shard.device)[0]
        expected = batch[seed:seed + 1, 4 * data:4 * data + 4]
        np.testing.assert_array_equal(np.asarray(shard.data), expected)
    params = mesh.replicate({{"w": np.ones((3, 2))}}, built)
    assert params["w"].sharding.is_fully_replicated
    flat = mesh.make_mesh("data:4")
    shards = mesh.global_batch(np.arange(8), flat).addressable_shards
    assert sorted(np.asarray(s.data).tolist() for s in shards) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    def refused(call, text):
        try:
            call()
        except ValueError as error:
            assert text in str(error) and "\\n" not in str(error), error
        else:
            raise AssertionError(f"accepted, expected: {{text}}")

    refused(lambda: mesh.shard_batch(np.zeros((6, 2)), flat), "does not split over mesh axis "
            "'data' of size 4")
    refused(lambda: mesh.make_mesh("seed:3,data:2"), "needs 6 devices, only 4")
    # With runs first, the examples (second axis) are what the data axis splits.
    mesh.shard_batch(np.zeros((3, 8, 1)), mesh.make_mesh("seed:1,data:2"), seed_axis="seed")
    refused(lambda: mesh.shard_batch(np.zeros((2, 3, 1)), built, seed_axis="seed"),
            "batch size 3 does not split over mesh axis 'data' of size 2")
    two_seeds = mesh.make_mesh("seed:2")
    refused(lambda: mesh.shard_leading_axis(np.zeros(3), two_seeds),
            "cannot split a leading axis of 3 over mesh axis 'seed' of size 2")
    refused(lambda: mesh.check_seed_split(two_seeds, "seed:2", 3, "num_seeds=3"),
            "which does not divide num_seeds=3")
    print("LAYOUTS_OK")
""")


def test_seed_by_data_layouts_on_four_fake_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", _LAYOUTS.format(repo=str(REPO))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "LAYOUTS_OK" in done.stdout, done.stderr[-3000:]


def _counting_branches():
    """(true_fn, false_fn, calls): the true branch adds noise drawn from its key and counts its
    executions (a host callback, run once per call however many runs a vmap batches)."""
    calls = []

    def costly(operand):
        x, key = operand
        jax.debug.callback(lambda: calls.append(1))
        return x + jax.random.normal(key, x.shape), key

    return costly, lambda operand: operand, calls


def test_cond_when_any_gives_each_run_its_own_branch_and_skips_one_no_run_takes():
    """Vmapped, a `lax.cond` on a per-run predicate runs both branches for every run (a select);
    `cond_when_any` runs the costly branch only when some run takes it, and each run still gets
    the result its own `lax.cond` gives: alone, vmapped, nested in two vmaps and in a scan."""
    costly, cheap, calls = _counting_branches()
    cond = lambda p, x, k: mesh.cond_when_any(p, costly, cheap, (x, k))[0]  # noqa: E731
    alone = lambda p, x, k: jax.lax.cond(p, costly, cheap, (x, k))[0]  # noqa: E731
    x = jnp.arange(12.0).reshape(4, 3)
    keys = jax.random.split(jax.random.key(0), 4)
    calls_when_one_run_takes = None
    for taken in ([False] * 4, [False, True, False, False], [True] * 4):
        taken = np.array(taken)
        calls.clear()
        batched = jax.jit(jax.vmap(cond))(taken, x, keys)
        jax.effects_barrier()
        assert (len(calls) > 0) == taken.any()
        calls_when_one_run_takes = len(calls) if taken.sum() == 1 else calls_when_one_run_takes
        for run in range(4):
            expected = jax.jit(alone)(taken[run], x[run], keys[run])
            np.testing.assert_array_equal(batched[run], expected)
    calls.clear()
    jax.block_until_ready(jax.jit(jax.vmap(alone))(np.zeros(4, bool), x, keys))
    jax.effects_barrier()
    assert calls  # what cond_when_any avoids: the plain cond ran the branch no run takes
    # Two vmaps: one run of eight takes the branch; a shared (unbatched) key broadcasts.
    taken = np.zeros((2, 4), bool)
    twice = jax.jit(jax.vmap(jax.vmap(cond)))
    calls.clear()
    jax.block_until_ready(twice(taken, np.stack([x, x]), jnp.stack([keys, keys])))
    jax.effects_barrier()
    assert not calls  # the inner level's rule too: no run of either level takes the branch
    taken[1, 2] = True
    nested = twice(taken, np.stack([x, x]), jnp.stack([keys, keys]))
    np.testing.assert_array_equal(np.asarray(nested)[~taken], np.stack([x, x])[~taken])
    np.testing.assert_array_equal(nested[1, 2], jax.jit(alone)(True, x[2], keys[2]))
    shared = jax.jit(jax.vmap(cond, in_axes=(0, 0, None)))(np.array([1, 0, 0, 1], bool), x, keys[0])
    np.testing.assert_array_equal(shared[3], jax.jit(alone)(True, x[3], keys[0]))

    def loop(p, x, k):
        step = lambda carry, i: (cond(p & (i == 2), carry, jax.random.fold_in(k, i)), None)  # noqa: E731
        return jax.lax.scan(step, x, jnp.arange(5))[0]

    calls.clear()
    jax.block_until_ready(jax.jit(jax.vmap(loop))(np.array([0, 1, 0, 0], bool), x, keys))
    jax.effects_barrier()
    assert len(calls) == calls_when_one_run_takes  # the one step some run takes, batched
