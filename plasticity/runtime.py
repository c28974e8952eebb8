"""Process-wide JAX settings the launchers apply before building anything.

* Threefry random bits use the non-partitionable layout unless ``JAX_THREEFRY_PARTITIONABLE`` is
  set in the environment: on XLA:CPU the partitionable layout makes every parameter
  initialisation compile several times slower (a ResNet init 11 s instead of 2 s), while the
  seed-parallel programs of this testbed draw per-seed keys and never need it. Random values
  differ between the two layouts, so a run and its resumption must use the same one: the
  launchers always apply this function.
* BLAS/LAPACK threads (used by XLA:CPU for the SVDs and eigen-decompositions of the
  diagnostics) are limited to one, since their pool otherwise fights XLA's own threads (the
  default diagnostics cost 2.4× the training time instead of 1.03×).
* On CPUs, the process gets one XLA device per CPU it may run on (`use_cpu_devices`), so the
  seeds (MinAtar) and runs (the continual trainer) that the ``auto`` mesh splits over devices
  run on every core at once. XLA:CPU runs one device's program one operation at a time, and the
  small operations of RL-sized networks use one core each: on 2 cores, 8 vmapped MinAtar seeds
  ran 1.3-1.8x and 64 bit-flipping runs 1.6-1.7x faster on two devices than on one. A single run
  stays on one device and is unaffected.
* On CPUs, XLA computes convolutions with Eigen rather than YNNPACK (`use_eigen_convolutions`):
  jaxlib 0.10 hands them to YNNPACK by default, which ran the Nature-CNN DQN update in 25-31 ms
  against 21 ms with Eigen, and the Atari loop at CleanRL's settings at 94-102 against 147-148
  agent steps/s (2-core AMD EPYC). Matrix products keep YNNPACK. ``XLA_FLAGS=
  --xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` restores jaxlib's default.
* Per program (`cpu_product_options`), a compiled loop whose network is all dense layers (an MLP
  torso) computes every operation with XLA's own kernels, YNNPACK off: its products are small
  (128 x 400 by 400 x 120 at PureJaxRL's MinAtar settings), and on 2 Xeon cores the MinAtar
  MLP loop ran 5% (one seed) and 10% (eight seeds) faster that way, while the conv torso's loop
  ran 13% slower. The Atari learner and the continual trainer keep the default.

`cpu_model` and `hardware_line` say what a run or a benchmark ran on, for `run_info.json` and the
header every benchmark prints.

`unrolled_threefry` (a context manager, independent of the above) lowers the threefry hash of the
programs built inside it straight-line on CPU: for compiled loops that split keys and draw small
random arrays at every iteration.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import platform
from pathlib import Path

import jax


def apply_runtime_defaults(cpu_devices: str = "auto", multi_process: bool = False) -> None:
    """Sets the random-bit layout, the BLAS thread limit, the CPU device count and Eigen's
    convolutions described in the module docstring (``cpu_devices``, ``multi_process``: see
    `use_cpu_devices`)."""
    use_cpu_devices(cpu_devices, multi_process)
    use_eigen_convolutions()
    if "JAX_THREEFRY_PARTITIONABLE" not in os.environ:
        jax.config.update("jax_threefry_partitionable", False)
    from plasticity import diagnostics  # noqa: PLC0415 - loads LAPACK only when a launcher runs

    try:
        diagnostics.limit_blas_threads(1)
    except ValueError:
        pass  # threadpoolctl missing: OPENBLAS_NUM_THREADS=1 can still be exported by the user


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_device_count(
    requested: str, cpus: int, preset: bool, multi_process: bool = False
) -> int | None:
    """The XLA:CPU device count to set for ``requested`` ('auto' or a positive integer), or None
    to leave JAX's own.

    'auto' is one device per CPU (``cpus``), except where the count is already chosen
    (``preset``: ``JAX_NUM_CPU_DEVICES``, ``--xla_force_host_platform_device_count`` in
    ``XLA_FLAGS`` or ``jax_num_cpu_devices`` set), in a multi-process job (each process keeps one
    device, so the seeds fill the job's devices as they did) and on one CPU. An integer is that
    count, and a one-line ValueError when the environment already chose one (the count is set
    in one place).
    """
    text = str(requested).strip().lower()
    if text == "auto":
        if preset or multi_process or cpus <= 1:
            return None
        return cpus
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--cpu_devices={requested!r}: expected auto or a positive integer")
    if preset:
        raise ValueError(
            f"--cpu_devices={count}: the CPU device count is already set (JAX_NUM_CPU_DEVICES, "
            "XLA_FLAGS' --xla_force_host_platform_device_count or jax_num_cpu_devices); set it "
            "in one place"
        )
    return count


def _cpu_count_preset() -> bool:
    return (
        "JAX_NUM_CPU_DEVICES" in os.environ
        or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
        or jax.config.jax_num_cpu_devices >= 0
    )


def use_cpu_devices(requested: str = "auto", multi_process: bool = False) -> int | None:
    """Gives XLA:CPU `cpu_device_count`'s device count; returns it (None: JAX's own count).

    Only takes effect before JAX starts its backends (the launchers call it first). Once they
    are started, 'auto' leaves them as they are and an integer must match the CPU devices there.
    Accelerator backends are unaffected: their devices do not depend on this setting.
    """
    from jax._src import xla_bridge  # noqa: PLC0415 - no public "backends started" query

    preset = _cpu_count_preset()
    count = cpu_device_count(requested, available_cpus(), preset, multi_process)
    if count is None:
        return None
    if xla_bridge.backends_are_initialized():
        running = len(jax.devices("cpu"))
        if str(requested).strip().lower() != "auto" and running != count:
            raise ValueError(
                f"--cpu_devices={count}: JAX already runs with {running} CPU device(s); the count "
                "is set before anything runs"
            )
        return None
    jax.config.update("jax_num_cpu_devices", count)
    return count


YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# What `use_eigen_convolutions` adds to XLA_FLAGS.
EIGEN_CONVOLUTIONS = f"{YNN_FUSION_FLAG}=-individual_convolution"
# The jaxlib releases whose XLA knows the flag and its '-type' syntax (tested; see setup.cfg).
_YNN_FLAG_RELEASES = ("0.10.",)


def eigen_convolution_flags(xla_flags: str, jaxlib_version: str) -> str | None:
    """``xla_flags`` with XLA:CPU's YNNPACK convolutions turned off, or None to leave them: when
    the flags already choose YNNPACK's fusion types (the user's choice wins), or on a jaxlib
    whose XLA may not know the flag (an unknown XLA flag aborts the process)."""
    if YNN_FUSION_FLAG in xla_flags or not jaxlib_version.startswith(_YNN_FLAG_RELEASES):
        return None
    return f"{xla_flags} {EIGEN_CONVOLUTIONS}".strip()


def use_eigen_convolutions() -> bool:
    """Has XLA:CPU compute convolutions with Eigen instead of YNNPACK; True when it set that.

    XLA reads ``XLA_FLAGS`` when JAX starts its backends, so this only takes effect before (the
    launchers call it first); afterwards, and where `eigen_convolution_flags` leaves the flags,
    it changes nothing. Accelerators are unaffected.
    """
    from jax._src import xla_bridge  # noqa: PLC0415 - no public "backends started" query
    from jaxlib import version  # noqa: PLC0415

    if xla_bridge.backends_are_initialized():
        return False
    flags = eigen_convolution_flags(os.environ.get("XLA_FLAGS", ""), version.__version__)
    if flags is None:
        return False
    os.environ["XLA_FLAGS"] = flags
    return True


CPU_PRODUCTS = ("auto", "xla", "ynnpack")


def cpu_product_options(
    products: str, dense_only: bool, backend: str, xla_flags: str, jaxlib_version: str
) -> dict[str, str]:
    """``compiler_options`` for one compiled loop's matrix products on XLA:CPU.

    ``products``: 'ynnpack' keeps the process's setting (YNNPACK's products, Eigen's
    convolutions); 'xla' turns YNNPACK off in this program, so XLA's own kernels (Eigen's for
    products) compute everything; 'auto' is 'xla' for a network of dense layers only
    (``dense_only``), where that was measured faster, and 'ynnpack' otherwise. Empty (nothing to
    set) off CPUs, on a jaxlib whose XLA may not know the option, and for 'auto' where
    ``XLA_FLAGS`` choose YNNPACK's fusion types other than by `use_eigen_convolutions` (the
    user's choice wins).
    """
    if products not in CPU_PRODUCTS:
        raise ValueError(f"products {products!r}: expected one of {', '.join(CPU_PRODUCTS)}")
    if products == "auto":
        user_choice = YNN_FUSION_FLAG in xla_flags.replace(EIGEN_CONVOLUTIONS, "")
        products = "ynnpack" if user_choice or not dense_only else "xla"
    if products == "ynnpack" or backend != "cpu":
        return {}
    if not jaxlib_version.startswith(_YNN_FLAG_RELEASES):
        return {}
    return {YNN_FUSION_FLAG.lstrip("-"): ""}


def loop_compiler_options(products: str, dense_only: bool) -> dict[str, str]:
    """`cpu_product_options` for this process: its default backend, ``XLA_FLAGS`` and jaxlib."""
    from jaxlib import version  # noqa: PLC0415

    return cpu_product_options(
        products,
        dense_only,
        jax.default_backend(),
        os.environ.get("XLA_FLAGS", ""),
        version.__version__,
    )


_UNROLL_THREEFRY = contextvars.ContextVar("unroll_threefry", default=False)
_THREEFRY_RULE: list[bool] = []  # [whether the switching rule is registered], once per process


def _register_threefry_rule() -> bool:
    """Registers the CPU lowering of threefry2x32 that `unrolled_threefry` switches."""
    if _THREEFRY_RULE:
        return _THREEFRY_RULE[0]
    try:
        from jax._src.interpreters import mlir  # noqa: PLC0415
        from jax._src.random import threefry2x32  # noqa: PLC0415

        unrolled = threefry2x32._threefry2x32_lowering_rule
        rolled = threefry2x32._threefry2x32_cpu_lowering_rule
        primitive = threefry2x32.threefry2x32_p
    except (ImportError, AttributeError):  # another JAX: programs keep its own rule
        _THREEFRY_RULE.append(False)
        return False

    def rule(ctx, *args):
        return (unrolled if _UNROLL_THREEFRY.get() else rolled)(ctx, *args)

    mlir.register_lowering(primitive, rule, platform="cpu")
    _THREEFRY_RULE.append(True)
    return True


@contextlib.contextmanager
def unrolled_threefry():
    """Programs lowered inside lower the threefry2x32 hash on CPU as on GPUs: unrolled.

    JAX's CPU rule rolls the hash's five round groups into a ``while`` loop to keep programs
    small, and XLA:CPU runs each trip's dozen tiny ops one by one: tens of microseconds per key
    split or small draw, which inside a compiled training loop was half of a MinAtar iteration
    without learning. Unrolled, a hash fuses into one elementwise kernel. Programs that run once
    (parameter initialisations, with hundreds of tiny hashes) are better left rolled: unrolled,
    a ResNet-18 init compiles ~1.6x slower. Random values are the same function of the key
    either way, so runs and resumes compare bit for bit. Only lowering is affected: wrap the
    first call (or ``.lower``) of a jitted function; JAX caches a lowering per function, so a
    function lowered before keeps the lowering it got then.
    """
    _register_threefry_rule()
    token = _UNROLL_THREEFRY.set(True)
    try:
        yield
    finally:
        _UNROLL_THREEFRY.reset(token)


@contextlib.contextmanager
def compiled_loop_lowering():
    """Lowers the programs of a compiled training loop for speed on CPUs: the threefry hash
    unrolled (`unrolled_threefry`) and small convolutions as patch products
    (`plasticity.layers.convolutions_for_compiled_loops`). Results are the same up to float32
    summation order in convolutions; random values are identical."""
    from plasticity import layers  # noqa: PLC0415

    with unrolled_threefry(), layers.convolutions_for_compiled_loops():
        yield


def compile_loop(jitted, args: tuple, compiler_options: dict[str, str] | None = None):
    """``jitted`` lowered for ``args`` as compiled training loops are (`compiled_loop_lowering`)
    and compiled with ``compiler_options`` (`loop_compiler_options`)."""
    with compiled_loop_lowering():
        lowered = jitted.lower(*args)
    return lowered.compile(compiler_options=compiler_options or None)


def available_bytes(device: jax.Device | None = None) -> int | None:
    """Memory a new allocation can take on ``device`` (default: the first one): an accelerator's
    free memory, or the host's available memory for CPU devices; None when unknown."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def runs_in_one_memory(num_runs: int, mesh=None) -> int:
    """How many of ``num_runs`` runs split over ``mesh``'s ``seed`` axis share one memory: the
    runs of one device on accelerators (each has its own memory), the runs of every device of
    this process on CPU devices (they share the host's); all of them without a mesh."""
    if mesh is None or mesh.size == 1:
        return num_runs
    per_device = -(-num_runs // dict(mesh.shape).get("seed", 1))
    devices = list(mesh.devices.flat)
    if devices[0].platform != "cpu":
        return per_device
    return per_device * sum(device.process_index == jax.process_index() for device in devices)


def check_fits(needed: int, what: str, device: jax.Device | None = None) -> None:
    """One-line ValueError, before anything is allocated, when ``needed`` bytes of ``what`` cannot
    fit in the memory `available_bytes` reports (nothing is checked when it is unknown)."""
    available = available_bytes(device)
    if available is not None and needed > available:
        raise ValueError(
            f"{what} do not fit in memory: {needed / 2**30:.2f} GiB needed, "
            f"{available / 2**30:.2f} GiB available; lower replay.capacity, the seed count or "
            "the network size"
        )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_line() -> str:
    """One line for a benchmark's header: devices, CPU, usable cores, load, JAX and Python.

    The 1-minute load average is part of it because a throughput figure taken on a busy machine
    is not comparable with one taken on a quiet one.
    """
    devices = jax.devices()
    cores = available_cpus()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{len(devices)} x {devices[0].platform}:{devices[0].device_kind}; CPU {cpu_model()}, "
        f"{cores} cores available, load average {load:.2f}; jax {jax.__version__}, "
        f"Python {platform.python_version()}"
    )
