"""plasticity.runtime: the memory check every trainer runs before allocating, the hardware line
every benchmark prints, the CPU lowering switch of the threefry hash, the CPU device count and
the libraries XLA:CPU hands convolutions and a compiled loop's matrix products to."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jaxlib import version as jaxlib_version

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


@pytest.mark.parametrize(
    ("requested", "cpus", "preset", "multi_process", "expected"),
    [
        ("auto", 8, False, False, 8),  # one device per CPU
        ("AUTO", 2, False, False, 2),
        ("auto", 1, False, False, None),  # one CPU: JAX's own single device
        ("auto", 8, True, False, None),  # JAX_NUM_CPU_DEVICES or XLA_FLAGS chose already
        ("auto", 8, False, True, None),  # a multi-process job keeps one device per process
        ("3", 8, False, False, 3),
        ("3", 8, False, True, 3),
    ],
)
def test_cpu_device_count_follows_its_rules(requested, cpus, preset, multi_process, expected):
    assert runtime.cpu_device_count(requested, cpus, preset, multi_process) == expected


@pytest.mark.parametrize("requested", ["0", "-2", "many", ""])
def test_cpu_device_count_refuses_what_is_not_a_count(requested):
    with pytest.raises(ValueError, match="expected auto or a positive integer"):
        runtime.cpu_device_count(requested, 4, False)


def test_cpu_device_count_refuses_a_count_the_environment_already_set():
    with pytest.raises(ValueError, match="already set"):
        runtime.cpu_device_count("2", 4, True)


def test_use_cpu_devices_leaves_a_started_backend_alone_or_says_it_cannot_change_it(monkeypatch):
    jax.devices()  # started, with the suite's one CPU device (tests/conftest.py)
    monkeypatch.setattr(runtime, "_cpu_count_preset", lambda: False)  # as if nothing chose a count
    monkeypatch.setattr(runtime, "available_cpus", lambda: 4)
    assert runtime.use_cpu_devices("auto") is None
    assert runtime.use_cpu_devices("1") is None  # what is running already
    with pytest.raises(ValueError, match="already runs with 1 CPU device"):
        runtime.use_cpu_devices("3")
    assert len(jax.devices("cpu")) == 1


def _devices_seen_by_a_fresh_process(env: dict[str, str], *arguments: str) -> int:
    """The device count a new process has after `apply_runtime_defaults(*arguments)`."""
    script = (
        "import jax; from plasticity import runtime; "
        f"runtime.apply_runtime_defaults(*{list(arguments)!r}); print(len(jax.devices()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_launchers_get_one_cpu_device_per_cpu_unless_the_environment_chose():
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    assert _devices_seen_by_a_fresh_process(clean) == runtime.available_cpus()
    assert _devices_seen_by_a_fresh_process(clean, "3") == 3
    chosen = {**clean, "XLA_FLAGS": "--xla_force_host_platform_device_count=5"}
    assert _devices_seen_by_a_fresh_process(chosen) == 5


@pytest.mark.parametrize(
    "flags, jaxlib_version, expected",
    [
        ("", "0.10.2", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"),
        (
            "--xla_force_host_platform_device_count=2",
            "0.10.7",
            "--xla_force_host_platform_device_count=2 "
            "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
        ),
        ("--xla_cpu_experimental_ynn_fusion_type=", "0.10.2", None),  # the user's choice wins
        ("", "0.11.0", None),  # an XLA that may not know the flag: left alone
        ("", "0.9.1", None),
    ],
)
def test_eigen_convolution_flags_follow_their_rules(flags, jaxlib_version, expected):
    assert runtime.eigen_convolution_flags(flags, jaxlib_version) == expected


def test_use_eigen_convolutions_changes_nothing_once_the_backend_runs(monkeypatch):
    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "")
    assert runtime.use_eigen_convolutions() is False
    assert os.environ["XLA_FLAGS"] == ""


def _convolution_through_ynnpack_in_a_fresh_process(defaults: bool) -> bool:
    """Whether a new process's compiled Nature-CNN first convolution is a YNNPACK fusion."""
    script = (
        "import jax, jax.numpy as jnp; from plasticity import runtime; "
        f"{'runtime.apply_runtime_defaults(); ' if defaults else ''}"
        "conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (4, 4), 'VALID', "
        "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))); "
        "text = conv.lower(jnp.ones((2, 84, 84, 4)), jnp.ones((8, 8, 4, 32))).compile().as_text(); "
        "print('__ynn_fusion' in text)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()[-1] == "True"


@pytest.mark.skipif(
    runtime.eigen_convolution_flags("", jaxlib_version.__version__) is None,
    reason="this jaxlib's XLA is not one whose YNNPACK flag the runtime sets",
)
def test_launchers_compute_convolutions_with_eigen_where_jaxlib_uses_ynnpack():
    if not _convolution_through_ynnpack_in_a_fresh_process(defaults=False):
        pytest.skip("this jaxlib, on this CPU, does not hand convolutions to YNNPACK")
    assert not _convolution_through_ynnpack_in_a_fresh_process(defaults=True)


XLA_PRODUCTS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@pytest.mark.parametrize(
    "products, dense_only, backend, flags, jaxlib_version, expected",
    [
        ("auto", True, "cpu", "", "0.10.2", XLA_PRODUCTS),  # an MLP torso: XLA's own kernels
        ("auto", True, "cpu", runtime.EIGEN_CONVOLUTIONS, "0.10.2", XLA_PRODUCTS),  # the project's
        ("auto", False, "cpu", "", "0.10.2", {}),  # convolutions: YNNPACK's patch products
        ("auto", True, "cpu", "--xla_cpu_experimental_ynn_fusion_type=", "0.10.2", {}),  # user's
        ("xla", False, "cpu", "", "0.10.2", XLA_PRODUCTS),
        ("ynnpack", True, "cpu", "", "0.10.2", {}),
        ("auto", True, "gpu", "", "0.10.2", {}),
        ("xla", True, "cpu", "", "0.11.0", {}),  # an XLA that may not know the option
    ],
)
def test_cpu_product_options_follow_their_rules(
    products, dense_only, backend, flags, jaxlib_version, expected
):
    got = runtime.cpu_product_options(products, dense_only, backend, flags, jaxlib_version)
    assert got == expected


def test_cpu_product_options_refuse_an_unknown_library():
    with pytest.raises(ValueError, match="expected one of auto, xla, ynnpack"):
        runtime.cpu_product_options("mkl", True, "cpu", "", "0.10.2")


def _dense_layer(x, w):
    return jax.nn.relu(x @ w + 1.0)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's product libraries")
def test_compile_loop_with_xla_products_leaves_ynnpack_out_and_computes_the_same():
    x = jax.random.normal(jax.random.key(0), (128, 400))
    w = jax.random.normal(jax.random.key(1), (400, 120)) / 20.0
    default = runtime.compile_loop(jax.jit(_dense_layer), (x, w))
    options = runtime.cpu_product_options("xla", True, "cpu", "", jaxlib_version.__version__)
    if not options or "__ynn_fusion" not in default.as_text():
        pytest.skip("this jaxlib, on this CPU, does not hand dense products to YNNPACK")
    own = runtime.compile_loop(jax.jit(_dense_layer), (x, w), options)
    assert "__ynn_fusion" not in own.as_text()
    # The same products summed in another order: inputs of unit scale, 400 terms, float32.
    reference = np.maximum(np.asarray(x, np.float64) @ np.asarray(w, np.float64) + 1.0, 0.0)
    np.testing.assert_allclose(np.asarray(own(x, w)), reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(default(x, w)), reference, rtol=0, atol=1e-4)


class _Device:
    def __init__(self, platform: str, process_index: int):
        self.platform, self.process_index = platform, process_index


class _SeedMesh:
    """What `runs_in_one_memory` reads of a mesh: its size, axis sizes and devices."""

    def __init__(self, platform: str, processes: int, per_process: int):
        devices = [_Device(platform, p) for p in range(processes) for _ in range(per_process)]
        self.devices = np.array(devices, dtype=object)
        self.size = len(devices)
        self.shape = {"seed": len(devices)}


def test_the_runs_that_share_one_memory_are_a_devices_on_accelerators_and_a_hosts_on_cpus():
    """A replay check compares one memory with the runs it holds: each accelerator holds its
    own seeds (8 seeds of a 4.1 GiB replay on 8 GPUs need 4.1 GiB each, not 33), CPU devices
    share the host's memory between this process's devices."""
    assert runtime.runs_in_one_memory(8, None) == 8
    assert runtime.runs_in_one_memory(8, _SeedMesh("gpu", 1, 8)) == 1
    assert runtime.runs_in_one_memory(10, _SeedMesh("gpu", 1, 4)) == 3  # 3, 3, 2, 2
    assert runtime.runs_in_one_memory(16, _SeedMesh("tpu", 4, 4)) == 1  # a pod, one per chip
    assert runtime.runs_in_one_memory(8, _SeedMesh("cpu", 1, 8)) == 8
    assert runtime.runs_in_one_memory(8, _SeedMesh("cpu", 2, 4)) == 4  # this process's half
