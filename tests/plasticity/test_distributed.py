"""Tests of multi-process jobs: flag validation in this process, and real 2-process jobs over
`jax.distributed` on loopback (one CPU device per process, gloo collectives).

* a tiny sharded job (a global batch built from each process's half, a jitted reduction, an
  all-gather, a cross-process vote) checks its results at every step;
* killing either process makes the other exit with an error within a bounded time
  (heartbeat timeout 5 s; the test allows 60 s) instead of hanging.

The continual launcher as a job of 2 processes (runs split over them, process 0 writing the
work dir, both writing the Orbax checkpoint, a SIGTERM to one stopping both, a resume as one
process) is tested in tests/scripts/test_resume.py, next to the single-process reference run.

Every subprocess has a timeout and is killed on the way out, so a failure cannot hang the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from plasticity import distributed
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "0"}
ENV.pop("XLA_FLAGS", None)  # one CPU device per process


# ---------------------------------------------------------------------------------------------
# In this process: settings and single-process behaviour.


@pytest.mark.parametrize(
    "config, match",
    [
        (
            distributed.DistributedConfig(num_processes=2),
            "missing --coordinator_address, --process_id",
        ),
        (distributed.DistributedConfig("10.0.0.1", 2, 0), "must be host:port"),
        (distributed.DistributedConfig("10.0.0.1:99999", 2, 0), "a port in 1..65535"),
        (distributed.DistributedConfig("host:0", 2, 0), "a port in 1..65535"),
        (distributed.DistributedConfig("10.0.0.1:80", 2, 2), r"must be in \[0, --num_processes\)"),
        (distributed.DistributedConfig("h:1", 2, 0, heartbeat_timeout_seconds=0), "timeouts"),
    ],
)
def test_bad_settings_are_one_line_errors(config, match):
    with pytest.raises(ValueError, match=match) as error:
        distributed.initialize(config)
    assert "\n" not in str(error.value)


_AUTO = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from plasticity import distributed
    try:
        distributed.initialize(distributed.DistributedConfig(
            auto_detect=True, initialization_timeout_seconds=5))
    except ValueError as error:
        print("ERROR " + str(error))
    """
)


def test_auto_detection_without_a_cluster_is_a_one_line_error():
    """In a subprocess whose environment names no cluster (so nothing tries to connect)."""
    markers = ("SLURM_", "OMPI_", "PMI_", "KUBERNETES_", "TPU_", "CLOUD_TPU", "JAX_COORDINATOR")
    env = {k: v for k, v in ENV.items() if not k.startswith(markers)}
    done = subprocess.run(
        [sys.executable, "-c", _AUTO.format(repo=str(REPO))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    assert lines, done.stderr[-3000:]
    assert "no cluster environment JAX recognizes" in lines[0]
    assert "--coordinator_address, --num_processes and --process_id" in lines[0]


@pytest.mark.parametrize("process_id", [0, 1])
def test_a_process_whose_job_never_gathers_stops_in_one_line_at_its_timeout(process_id, tmp_path):
    """The other process never starts: the coordinator (0) or a worker (1) stops after
    --distributed_init_timeout with one line and status 1, before JAX's own deadline aborts it
    from C++ (status 134 and a stack trace), and writes nothing."""
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "scripts.train_continual",
        "--experiment=benchmarks/configs/nap_label_reset.py:smoke",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{free_port()}",
        "--num_processes=2",
        f"--process_id={process_id}",
        "--distributed_init_timeout=2",
    ]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    # The launcher's one line, last; JAX's own logging (a retrying connection) is not ours to
    # silence, but no abort and no stack trace come before it.
    lines = done.stderr.strip().splitlines()
    line = lines[-1]
    assert [text for text in lines if text.startswith("train_continual")] == [line]
    assert not any("Check failure" in text or "Traceback" in text for text in lines)
    assert line.startswith("train_continual: error: not every process joined the job of ")
    assert f"(this is --process_id={process_id}) within 2 s" in line
    assert line.endswith("or raise --distributed_init_timeout")
    assert not workdir.exists()


def test_a_cluster_detected_job_that_never_gathers_names_the_cluster_not_the_flags():
    """The cluster assigns the process ids: its reason says to check the job's tasks."""
    auto = distributed.DistributedConfig(auto_detect=True, initialization_timeout_seconds=9)
    reason = distributed.join_timeout_reason(auto)
    assert reason.startswith("not every process joined the job the cluster environment describes")
    assert "within 9 s: check that every task of the cluster job started" in reason
    assert "--process_id" not in reason


def test_single_process_settings_do_nothing():
    assert not distributed.DistributedConfig().enabled
    assert distributed.DistributedConfig(auto_detect=True).enabled
    assert not distributed.initialize(distributed.DistributedConfig())
    assert not distributed.initialize(distributed.DistributedConfig("127.0.0.1:1", 1, 0))
    distributed.validate(distributed.DistributedConfig("[::1]:1234", 4, 3))
    assert distributed.is_lead_process() and jax.process_count() == 1
    tree = {"a": jax.numpy.arange(3), "b": np.ones(2)}
    fetched = distributed.fetch(tree)
    np.testing.assert_array_equal(fetched["a"], [0, 1, 2])
    assert isinstance(fetched["a"], np.ndarray)
    assert distributed.any_process(True) and not distributed.any_process(False)
    distributed.barrier("single")


def test_launcher_flags_parse_into_a_config():
    from absl import flags  # noqa: PLC0415

    values = flags.FlagValues()
    distributed.define_flags(values)
    distributed.define_flags(values)  # idempotent
    values(
        [
            "prog",
            "--coordinator_address=10.1.2.3:8476",
            "--num_processes=4",
            "--process_id=3",
            "--distributed_heartbeat_timeout=20",
        ]
    )
    config = distributed.config_from_flags(values)
    assert config == distributed.DistributedConfig(
        "10.1.2.3:8476", 4, 3, False, 20, distributed.DEFAULT_INITIALIZATION_TIMEOUT_SECONDS
    )
    assert config.enabled


def test_the_coordinator_address_may_come_from_the_environment_with_the_two_flags(monkeypatch):
    from absl import flags  # noqa: PLC0415

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.9.8.7:1234")

    def parsed(*argv):
        values = flags.FlagValues()
        distributed.define_flags(values)
        values(["prog", *argv])
        return distributed.config_from_flags(values)

    assert parsed("--num_processes=2", "--process_id=1").coordinator_address == "10.9.8.7:1234"
    assert (
        parsed(
            "--num_processes=2", "--process_id=1", "--coordinator_address=h:9"
        ).coordinator_address
        == "h:9"
    )
    assert not parsed().enabled  # the variable alone starts no multi-process job


class _KeyValueStore:
    """The coordination service's key-value store as JAX's client serves it: a key is set once
    (a second set raises, as the real client's does without ``allow_overwrite``); a blocking get
    of a key nobody set runs out its timeout."""

    def __init__(self, **values):
        self.values = {f"plasticity/launch_planned/{k[1:]}": v for k, v in values.items()}
        self.gets = []  # (key, timeout in ms) of every blocking get

    def key_value_set(self, key: str, value: str) -> None:
        if key in self.values:
            raise RuntimeError(f"ALREADY_EXISTS: {key}")
        self.values[key] = value

    def blocking_key_value_get(self, key: str, timeout_in_ms: int) -> str:
        self.gets.append((key, timeout_in_ms))
        if key not in self.values:
            raise RuntimeError(f"DEADLINE_EXCEEDED: {key}")
        return self.values[key]


def _process_of_a_job(monkeypatch, store: _KeyValueStore, index: int, count: int = 3) -> None:
    """Makes this process process `index` of a job of `count` served by `store`."""
    monkeypatch.setattr(distributed, "_service_client", lambda: store)
    monkeypatch.setattr(distributed, "_announced", False)
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "process_index", lambda: index)


def test_agreeing_to_start_waits_for_every_other_process_and_says_ready_once(monkeypatch):
    """Process 1 of 3 says it is ready under its own index, waits for processes 0 and 2 (each
    with the timeout in milliseconds), and starts; once it has agreed, a later refusal (an error
    in training) tells nobody anything, and a second agreement waits for nobody."""
    store = _KeyValueStore(p0="ready", p2="ready")
    _process_of_a_job(monkeypatch, store, index=1)
    distributed.agree_to_start(timeout_seconds=5)
    assert store.values["plasticity/launch_planned/1"] == "ready"
    assert {key for key, _ in store.gets} >= {f"plasticity/launch_planned/{i}" for i in (0, 2)}
    assert {timeout for _, timeout in store.gets} == {5000}
    waited = len(store.gets)
    distributed.refuse_launch("diverged at step 3")  # after the start: not a refusal
    distributed.agree_to_start(timeout_seconds=5)
    assert store.values["plasticity/launch_planned/1"] == "ready" and len(store.gets) == waited


# ---------------------------------------------------------------------------------------------
# Two processes on loopback.

_JOB = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from plasticity import distributed
    process, port = int(sys.argv[1]), sys.argv[2]
    steps, pause = int(sys.argv[3]), float(sys.argv[4])
    distributed.initialize(distributed.DistributedConfig(
        f"127.0.0.1:{{port}}", 2, process, heartbeat_timeout_seconds=5,
        initialization_timeout_seconds=60))
    import jax, jax.numpy as jnp, numpy as np
    from plasticity import mesh as mesh_lib, preemption
    assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    mesh = mesh_lib.make_mesh("data:2")
    guard = preemption.PreemptionGuard(signals=())
    sum_of_squares = jax.jit(lambda x: jnp.sum(x * x))
    for step in range(steps):
        local = np.arange(4, dtype=np.float32) + 4 * process + step  # this process's half
        batch = mesh_lib.global_batch(local, mesh)
        expected = np.arange(8, dtype=np.float32) + step
        assert float(distributed.fetch(sum_of_squares(batch))) == float(np.sum(expected ** 2))
        np.testing.assert_array_equal(distributed.fetch(batch), expected)
        assert distributed.any_process(process == 1 and step == 1) == (step == 1)
        if process == 1 and step == 1:
            guard.request()  # as a SIGTERM to this process alone would
        assert guard.should_stop() == (step >= 1)  # both processes stop at the same point
        print(f"step {{step}} ok", flush=True)
        time.sleep(pause)
    distributed.barrier("end")
    print("JOB_OK", flush=True)
    """
)


def start_script(script: str, *args) -> subprocess.Popen:
    """``python -c script args...`` from the repository, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-c", script.format(repo=str(REPO)), *map(str, args)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_job(process: int, port: int, steps: int, pause: float) -> subprocess.Popen:
    return start_script(_JOB, process, port, steps, pause)


def stop_all(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_two_processes_run_a_sharded_job_and_check_every_step():
    port = free_port()
    jobs = [start_job(i, port, steps=3, pause=0.0) for i in range(2)]
    try:
        outputs = [job.communicate(timeout=120) for job in jobs]
    finally:
        stop_all(jobs)
    for job, (stdout, stderr) in zip(jobs, outputs):
        assert job.returncode == 0 and "JOB_OK" in stdout, stderr[-3000:]
        assert [line for line in stdout.splitlines() if line.startswith("step")] == [
            "step 0 ok",
            "step 1 ok",
            "step 2 ok",
        ]


def _wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"job ended before {text!r}: {process.stderr.read()[-2000:]}")
    raise AssertionError(f"no {text!r} within {timeout} s")


@pytest.mark.parametrize("killed", [1, 0])
def test_killing_one_process_makes_the_other_exit_with_an_error_in_bounded_time(killed):
    port = free_port()
    jobs = [start_job(i, port, steps=10_000, pause=0.1) for i in range(2)]
    survivor = jobs[1 - killed]
    try:
        _wait_for_line(jobs[killed], "step 2 ok", timeout=120)
        jobs[killed].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            survivor.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the surviving process did not exit within 60 s of the kill")
        waited = time.monotonic() - killed_at
    finally:
        stop_all(jobs)
    assert survivor.returncode != 0
    assert waited < 60


_BARRIER_JOB = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from plasticity import distributed
    process, port, late = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    distributed.initialize(distributed.DistributedConfig(
        f"127.0.0.1:{{port}}", 2, process, heartbeat_timeout_seconds=10,
        initialization_timeout_seconds=60))
    import jax, jax.numpy as jnp
    float(jax.jit(lambda x: (x * x).sum())(jnp.ones(8)))  # a run's local work
    if process == 0:
        time.sleep(late)  # its runs take longer: the other waits (gloo's set-up gave up on it)
    distributed.barrier("runs_done")
    print("BARRIER_OK", time.monotonic(), flush=True)
    """
)


def run_barrier_job(late: float) -> list[tuple[int, str, str]]:
    port = free_port()
    jobs = [start_script(_BARRIER_JOB, i, port, late) for i in range(2)]
    try:
        outputs = [job.communicate(timeout=120 + late) for job in jobs]
    finally:
        stop_all(jobs)
    return [(job.returncode, *output) for job, output in zip(jobs, outputs)]


def test_a_barrier_waits_for_a_process_that_comes_late():
    for code, stdout, stderr in run_barrier_job(late=2.0):
        assert code == 0 and "BARRIER_OK" in stdout, stderr[-3000:]


@pytest.mark.slow
def test_a_barrier_waits_longer_than_a_first_collective_could():
    """A process reaching the job's end 35 s after the other, both having run local programs
    (an Atari job's runs): a device collective's first use gave up after 30 s of waiting, and
    the job aborted with status 134; both pass the barrier."""
    for code, stdout, stderr in run_barrier_job(late=35.0):
        assert code == 0 and "BARRIER_OK" in stdout, stderr[-3000:]
