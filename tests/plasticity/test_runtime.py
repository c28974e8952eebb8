"""plasticity.runtime: the memory check every trainer runs before allocating, the hardware line
every benchmark prints, and the CPU lowering switch of the threefry hash."""

import os

import jax
import numpy as np
import pytest

from plasticity import runtime


def test_check_fits_names_what_does_not_fit_in_one_line():
    available = runtime.available_bytes()
    assert available is not None and available > 0  # CPU: /proc/meminfo is read
    runtime.check_fits(1024, "a tiny replay")  # fits: no error
    with pytest.raises(ValueError) as error:
        runtime.check_fits(available + 2**40, "the replays of 4 seeds")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("the replays of 4 seeds do not fit in memory:")
    assert "GiB needed" in message and "GiB available" in message


def test_check_fits_skips_the_check_when_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(runtime, "available_bytes", lambda device=None: None)
    runtime.check_fits(2**60, "anything")  # unknown memory: nothing to compare against


def test_hardware_line_names_devices_cpu_cores_and_load():
    line = runtime.hardware_line()
    assert "\n" not in line
    assert "cpu:" in line  # the device platform (CPU in the test suite)
    assert runtime.cpu_model() in line
    assert f"{len(os.sched_getaffinity(0))} cores available" in line
    assert "load average" in line and "jax " in line


def _draws(key):
    """Key splits and small draws, as a compiled training loop makes them every iteration."""
    first, second = jax.random.split(key)
    return (
        jax.random.uniform(first, (7,)),
        jax.random.bits(second, (3, 5)),
        jax.random.split(key, 4),
    )


def _fresh_program():
    """A new function each call: JAX caches a lowering per function, so a function lowered
    once keeps that lowering whatever context it is called in later."""
    return jax.jit(lambda key: _draws(key))


def test_unrolled_threefry_keeps_every_random_value():
    key = jax.random.PRNGKey(1234)
    rolled = _fresh_program().lower(key).compile()
    with runtime.unrolled_threefry():
        unrolled = _fresh_program().lower(key).compile()
    for a, b in zip(jax.tree.leaves(rolled(key)), jax.tree.leaves(unrolled(key))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unrolled_threefry_lowers_the_hash_without_a_loop_inside_the_context_only():
    key = jax.random.PRNGKey(0)
    if not runtime._register_threefry_rule():
        pytest.skip("this JAX has no threefry lowering hook: programs keep its own rule")
    before = _fresh_program().lower(key).as_text()
    with runtime.unrolled_threefry():
        inside = _fresh_program().lower(key).as_text()
    after = _fresh_program().lower(key).as_text()
    assert "stablehlo.while" not in inside
    if jax.default_backend() == "cpu":  # JAX's own CPU rule rolls the rounds into a loop
        assert "stablehlo.while" in before and "stablehlo.while" in after
