"""Multi-process (multi-host) jobs: joining one with `jax.distributed`, and what changes in it.

A job of several processes (one per host of a TPU pod slice or a GPU cluster, or several on one
machine) runs the same launcher command in every process. Each process calls `initialize` before
anything else touches JAX; afterwards `jax.devices()` lists the devices of every process, a mesh
(`plasticity.mesh`) spans them all, and one `jit` program runs over the whole mesh.

How a process learns where the job's coordinator is:

* explicit flags ``--coordinator_address=host:port --num_processes=N --process_id=i`` (every
  process the same address and count, its own id; process 0 serves the coordinator), or the
  environment variable ``JAX_COORDINATOR_ADDRESS`` with the two flags;
* ``--distributed``: the cluster environment JAX detects by itself (Cloud TPU pod slices, SLURM,
  Open MPI, Kubernetes/GKE), which supplies all three.

With none of these the launcher runs as a single process and nothing here does anything.

On CPU the cross-process collectives go through gloo (``jax_cpu_collectives_implementation``),
which this module selects before initializing. Once initialized, a process that dies (or stops
answering) is noticed by the others within ``heartbeat_timeout_seconds``, or at once by a
collective reading from it, and they abort with an error instead of waiting for ever.

What differs in a multi-process job: only process 0 writes logs and metrics
(`plasticity.workdir`), every process takes part in each checkpoint save and restore (Orbax
writes each process's shards and process 0 the metadata, `plasticity.checkpointing`), and arrays
sharded over devices of other processes are read with `fetch` (an all-gather), which every
process must call at the same point. `jax.distributed.initialize` also takes over SIGTERM for
JAX's own preemption notices, so `plasticity.preemption.PreemptionGuard` is installed after it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from typing import Any, Callable

import jax
import numpy as np

DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 100
DEFAULT_INITIALIZATION_TIMEOUT_SECONDS = 300
# JAX's own join deadline comes this long after a launcher's one-line stop (`initialize`).
JOIN_GRACE_SECONDS = 5
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process job (all None and False: it runs alone).

    Attributes:
      coordinator_address: ``host:port`` of process 0's coordinator (same in every process).
      num_processes: processes in the job.
      process_id: this process's index in [0, num_processes).
      auto_detect: let JAX read the cluster environment for whatever is None above.
      heartbeat_timeout_seconds: after this long without news from a process the others abort.
      initialization_timeout_seconds: how long to wait for every process to join.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto_detect: bool = False
    heartbeat_timeout_seconds: int = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    initialization_timeout_seconds: int = DEFAULT_INITIALIZATION_TIMEOUT_SECONDS

    @property
    def enabled(self) -> bool:
        """Whether this process is to join a multi-process job."""
        explicit = (self.coordinator_address, self.num_processes, self.process_id)
        return self.auto_detect or any(value is not None for value in explicit)


def validate(config: DistributedConfig) -> None:
    """One-line ValueErrors for settings `jax.distributed.initialize` would reject or hang on."""
    if not config.enabled:
        return
    if config.heartbeat_timeout_seconds < 1 or config.initialization_timeout_seconds < 1:
        raise ValueError(
            "distributed heartbeat and initialization timeouts must be >= 1 second, got "
            f"{config.heartbeat_timeout_seconds} and {config.initialization_timeout_seconds}"
        )
    address = config.coordinator_address
    match = _ADDRESS.match(address) if address is not None else None
    if address is not None and not (match and 1 <= int(match.group(2)) <= 65535):
        raise ValueError(
            f"--coordinator_address {address!r} must be host:port with a port in 1..65535, "
            "e.g. 10.0.0.1:1234"
        )
    if config.auto_detect:
        return
    missing = [
        f"--{name}"
        for name, value in (
            ("coordinator_address", address),
            ("num_processes", config.num_processes),
            ("process_id", config.process_id),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            f"a multi-process job needs --coordinator_address, --num_processes and "
            f"--process_id; missing {', '.join(missing)} (or pass --distributed to read them "
            f"from the cluster environment)"
        )
    if config.num_processes < 1 or not 0 <= config.process_id < config.num_processes:
        raise ValueError(
            f"--process_id must be in [0, --num_processes): got process_id="
            f"{config.process_id}, num_processes={config.num_processes}"
        )


def _flags_module():
    from absl import flags  # noqa: PLC0415 - only launchers parse flags

    return flags


def define_flags(flag_values: Any = None) -> None:
    """Registers the launcher flags read by `config_from_flags` (once per flag set).

    `flag_values` is an absl ``FlagValues`` (default: the global ``absl.flags.FLAGS``).
    """
    flags = _flags_module()
    flag_values = flags.FLAGS if flag_values is None else flag_values
    if "coordinator_address" in flag_values:
        return
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "host:port of process 0 of a multi-process job (every process passes the same; default "
        "$JAX_COORDINATOR_ADDRESS when --num_processes and --process_id are given).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_processes", None, "Processes in a multi-process job.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "process_id", None, "This process's index in [0, num_processes).", flag_values=flag_values
    )
    flags.DEFINE_bool(
        "distributed",
        False,
        "Join a multi-process job described by the cluster environment JAX detects (Cloud TPU "
        "pod slice, SLURM, Open MPI, Kubernetes).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "distributed_heartbeat_timeout",
        DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
        "Seconds without news from a process after which the others abort.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "distributed_init_timeout",
        DEFAULT_INITIALIZATION_TIMEOUT_SECONDS,
        "Seconds to wait for every process to join the job.",
        flag_values=flag_values,
    )


def config_from_flags(flag_values: Any = None) -> DistributedConfig:
    """The `DistributedConfig` of the flags `define_flags` registered (after parsing)."""
    flag_values = _flags_module().FLAGS if flag_values is None else flag_values
    address = flag_values.coordinator_address
    if address is None and (flag_values.num_processes, flag_values.process_id) != (None, None):
        address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None  # with the two flags only
    return DistributedConfig(
        coordinator_address=address,
        num_processes=flag_values.num_processes,
        process_id=flag_values.process_id,
        auto_detect=flag_values.distributed,
        heartbeat_timeout_seconds=flag_values.distributed_heartbeat_timeout,
        initialization_timeout_seconds=flag_values.distributed_init_timeout,
    )


def initialize(
    config: DistributedConfig, on_join_timeout: Callable[[str], None] | None = None
) -> bool:
    """Joins the job `config` describes; returns whether `jax.distributed` was initialized.

    Call it first, before any JAX computation (JAX refuses afterwards). A single-process config
    (nothing set, or one process) does nothing. Raises a one-line ValueError for bad settings.

    When some process has not joined after ``initialization_timeout_seconds``, JAX aborts the
    process from C++ (status 134, a stack trace). With ``on_join_timeout`` given, that function
    is called instead, from a timer thread, with a one-line reason (the launchers print it and
    exit 1); JAX's own deadline comes `JOIN_GRACE_SECONDS` later.
    """
    validate(config)
    if not config.enabled or (config.num_processes == 1 and not config.auto_detect):
        return False
    # Cross-process collectives of the CPU backend; GPU and TPU backends ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = config.initialization_timeout_seconds
    watchdog, joined = None, threading.Event()
    if on_join_timeout is not None:
        reason = join_timeout_reason(config)
        # A join that returns as the timer fires wins: the callback checks it first.
        give_up = lambda: None if joined.is_set() else on_join_timeout(reason)  # noqa: E731
        watchdog = threading.Timer(timeout, give_up)
        watchdog.daemon = True
        watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            initialization_timeout=timeout + (JOIN_GRACE_SECONDS if watchdog else 0),
            heartbeat_timeout_seconds=config.heartbeat_timeout_seconds,
        )
        joined.set()
    except ValueError as error:
        if not config.auto_detect:
            raise
        raise ValueError(
            f"--distributed: no cluster environment JAX recognizes (TPU pod slice, SLURM, Open "
            f"MPI, Kubernetes) supplied the job's settings ({error}); pass "
            f"--coordinator_address, --num_processes and --process_id instead"
        ) from error
    finally:
        if watchdog is not None:
            watchdog.cancel()
    return True


def join_timeout_reason(config: DistributedConfig) -> str:
    """Why a process gives up joining: the job it waited for, and the two ways on."""
    within = f"within {config.initialization_timeout_seconds} s"
    if config.auto_detect:
        return (
            f"not every process joined the job the cluster environment describes {within}: "
            f"check that every task of the cluster job started, or raise --distributed_init_timeout"
        )
    return (
        f"not every process joined the job of --num_processes={config.num_processes} at "
        f"{config.coordinator_address} (this is --process_id={config.process_id}) {within}: start "
        f"every process with the same command and its own --process_id, or raise "
        f"--distributed_init_timeout"
    )


def initialize_from_flags(
    flag_values: Any = None, on_join_timeout: Callable[[str], None] | None = None
) -> bool:
    """`initialize` with the launcher flags (see `define_flags`)."""
    return initialize(config_from_flags(flag_values), on_join_timeout)


def is_lead_process() -> bool:
    """Whether this process writes logs: process 0 of a job, or a process running alone."""
    return jax.process_index() == 0


def _fetch_leaf(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        from jax.experimental import multihost_utils  # noqa: PLC0415 - multi-process only

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return jax.device_get(leaf)


def fetch(tree: Any) -> Any:
    """Host (NumPy) copies of every leaf, gathered from all processes where sharded over them.

    A collective when some leaf spans several processes: every process calls it at the same
    point, with the same structure. Otherwise it is `jax.device_get`.
    """
    return jax.tree.map(_fetch_leaf, tree)


def any_process(flag: bool) -> bool:
    """Whether `flag` is True in at least one process (every process gets the same answer).

    A collective in a multi-process job (every process calls it at the same point); on a single
    process it returns `flag`.
    """
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils  # noqa: PLC0415 - multi-process only

    flags_of_all = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
    return bool(np.asarray(flags_of_all).max())


# How long a process waits at a `barrier` for the others: the rest of a job's runs may take days.
BARRIER_TIMEOUT_SECONDS = 7 * 24 * 3600


def barrier(name: str, timeout_seconds: float = BARRIER_TIMEOUT_SECONDS) -> None:
    """Waits until every process reaches the barrier called `name` (no-op on one process).

    A barrier of the coordination service, not a device collective: a job's first collective
    sets up its CPU communicator (gloo) within 30 s, so a process that reached its first one
    (e.g. an Atari job's end, where a process's runs had used none) more than 30 s before the
    others failed the whole job. Each `name` is used once per job."""
    if jax.process_count() == 1:
        return
    client = _service_client()
    if client is None:  # not started by `jax.distributed.initialize`
        from jax.experimental import multihost_utils  # noqa: PLC0415 - multi-process only

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(name, _milliseconds(timeout_seconds))


def _service_client() -> Any:
    """The coordination service's client of this process (None where none was started)."""
    from jax._src import distributed as jax_distributed  # noqa: PLC0415 - the service's client

    return jax_distributed.global_state.client


def _milliseconds(seconds: float) -> int:
    return int(min(seconds, 2**31 / 1000 - 1) * 1000)


# Each process's word on its launch once it is planned: READY, or REFUSED followed by the error.
_LAUNCH_KEY = "plasticity/launch_planned/{}"
_READY, _REFUSED = "ready", "refused: "
_announced = False  # this process said its word (once per job)


def _announce(value: str) -> bool:
    """Publishes this process's word on its launch; False when there is nowhere to (one
    process, no coordination service) or it was already said."""
    global _announced
    client = _service_client()  # first: asking for the process count would start JAX's backend
    if client is None or _announced or jax.process_count() == 1:
        return False
    client.key_value_set(_LAUNCH_KEY.format(jax.process_index()), value)
    _announced = True
    return True


def refuse_launch(error: str) -> None:
    """Tells the job's other processes that this one stops before training, with its one-line
    `error` (e.g. a setting its devices cannot take), so that they stop with that line too (see
    `agree_to_start`). Nothing on one process or once this process has agreed to start."""
    _announce(_REFUSED + error)


def agree_to_start(timeout_seconds: float = BARRIER_TIMEOUT_SECONDS) -> None:
    """Waits until every process of the job has planned its launch; a one-line ValueError when
    one of them refused it (`refuse_launch`). Call it after every check that could refuse the
    launch and before the first collective and the first file written.

    Without it, a process refusing its arguments (a mesh its devices cannot hold, a mistyped
    value given to one process only) left the others to fail at the job's first collective, 30 s
    later, with gloo's traceback, after process 0 had written the work dir's first files."""
    if not _announce(_READY):
        return
    client = _service_client()
    for process in range(jax.process_count()):
        if process == jax.process_index():
            continue
        word = client.blocking_key_value_get(
            _LAUNCH_KEY.format(process), _milliseconds(timeout_seconds)
        )
        if word.startswith(_REFUSED):
            raise ValueError(f"process {process} stopped: {word[len(_REFUSED) :]}")
