"""Preemption-safe exact resume and the divergence guard, through the continual launcher as a user
(or a scheduler) runs it: subprocesses, real signals.

One tiny sweep (2 seeds, 12 tasks of 2 steps, one chunk and one checkpoint per task) is run
in several ways at once:

* uninterrupted, to the end (the reference);
* a planted divergence: SGD at a learning rate far above the stable limit (a linear network on
  a regression task with a large offset), which blows up during the second task;
* the chain: SIGKILL once a checkpoint exists, relaunch; SIGTERM once that run has written a
  newer checkpoint (exit 0); relaunch to the end. The final parameters, the whole train state
  and metrics.jsonl must equal the reference's bit for bit;
* as a job of two processes (`jax.distributed` on loopback, one CPU device each, runs split
  over them): a SIGTERM to process 1 alone stops both after the same chunk (exit 0, both
  writing their checkpoint shards), then one process resumes that work dir to the end. Its rows
  equal the reference's up to float rounding (a run's arithmetic is vectorized differently).

The processes share a JAX persistent compilation cache (a fresh directory of this module), so
the relaunches load the programs the first runs compiled instead of compiling them again (half
of a launch's CPU time here); the reference compiles its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from plasticity import checkpointing, divergence, workdir
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ}
ENV.pop("XLA_FLAGS", None)
ENV.pop("JAX_THREEFRY_PARTITIONABLE", None)  # the launcher's own default, as a user runs it
NUM_TASKS = 12
STEPS = 2 * NUM_TASKS  # checkpoints are numbered by the steps done
TINY = [
    "--experiment=benchmarks/configs/nap_label_reset.py",
    "--config.variant_order=('no_norm',)",
    "--config.num_seeds=2",
    f"--config.task.num_tasks={NUM_TASKS}",
    "--config.task.steps_per_task=2",
    "--config.task.batch_size=8",
    "--config.network.hidden_sizes=(8,)",
    "--config.data.max_train_examples=64",
    "--config.diagnostics.every=2",
    "--config.diagnostics.names=()",
    "--config.eval.max_examples=32",
    "--config.run.tasks_per_chunk=1",
    "--config.run.progress=False",
    "--config.run.tensorboard=False",
]
DIVERGING = [
    "--experiment=benchmarks/configs/nap_label_reset.py",
    "--config.variant_order=('no_norm',)",
    "--config.task.name=large_offset_regression",
    "--config.task.num_tasks=6",
    "--config.task.steps_per_task=4",
    "--config.task.batch_size=8",
    "--config.network.hidden_sizes=(8,)",
    "--config.network.activation=identity",
    "--config.optimizer.name=sgd",
    "--config.optimizer.learning_rate=0.01",
    "--config.data.max_train_examples=64",
    "--config.diagnostics.every=4",
    "--config.diagnostics.names=()",
    "--config.eval.max_examples=32",
    "--config.run.tasks_per_chunk=1",
    "--config.run.progress=False",
    "--config.run.tensorboard=False",
]
TIMEOUT = 300


def launch(
    *args: str,
    cache: Path,
    module: str = "scripts.train_continual",
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Starts ``python -m module *args`` as a user would, sharing the compilation cache ``cache``
    (``env``: extra environment variables)."""
    env = {
        **ENV,
        **(env or {}),
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkpoint_steps(path: Path) -> list[int]:
    """Steps of the finished checkpoints (Orbax renames a temporary directory when done)."""
    directory = path / workdir.CHECKPOINT_DIR
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def signal_after_checkpoints(watches: list[tuple[subprocess.Popen, Path, int, int]]) -> list[int]:
    """For each (process, work dir, step, signal): sends the signal once a checkpoint newer than
    that step exists there; returns those checkpoints' steps."""
    sent: dict[int, int] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(sent) < len(watches):
        assert time.monotonic() < deadline, "no new checkpoint in time"
        for index, (process, path, newer_than, signum) in enumerate(watches):
            if index in sent:
                continue
            steps = checkpoint_steps(path)
            if steps and steps[-1] > newer_than:
                process.send_signal(signum)
                sent[index] = steps[-1]
            elif process.poll() is not None:
                raise AssertionError(
                    f"run ended before a checkpoint newer than {newer_than}: "
                    f"{process.stderr.read()[-3000:]}"
                )
        time.sleep(0.01)
    return [sent[index] for index in range(len(watches))]


def finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    """(exit status, stderr) of a launched process, killed if it outlives ``timeout``."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


def restore_latest(path: Path, template: dict | None = None) -> tuple[dict, dict, int]:
    """(train-state tree, metadata, step) of the newest checkpoint, read without a template, or
    like `template`'s NumPy arrays (a checkpoint saved on devices this process does not have).
    A single-process run writes NumPy checkpoints, a multi-process job Orbax ones."""
    directory = path / workdir.CHECKPOINT_DIR
    if checkpointing.is_local_format(directory):
        local = checkpointing.LocalCheckpointer(directory)
        tree, metadata = local.restore_nested()
        return tree, metadata, local.latest_step()
    manager = ocp.CheckpointManager(path / workdir.CHECKPOINT_DIR, item_names=("tree", "metadata"))
    step = manager.latest_step()
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            tree=ocp.args.StandardRestore(template), metadata=ocp.args.JsonRestore()
        ),
    )
    manager.close()
    return jax.tree.map(np.asarray, restored["tree"]), dict(restored["metadata"]), step


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    paths = {name: root / name for name in ("reference", "diverging", "chain", "two_processes")}
    cache = root / "compilation_cache"
    cluster = [
        f"--coordinator_address=127.0.0.1:{free_port()}",
        "--num_processes=2",
        # Generous: nothing here kills one of the pair, and one full-suite run on 2 cores lost the
        # pair to a heartbeat timeout of 10 s beside this fixture's five other JAX processes.
        "--distributed_heartbeat_timeout=30",
    ]
    started = {
        "reference": launch(*TINY, f"--workdir={paths['reference']}", cache=cache),
        "diverging": launch(*DIVERGING, f"--workdir={paths['diverging']}", cache=cache),
    }
    chain, pair = {}, {}
    try:
        for i in range(2):
            started[f"process_{i}"] = launch(
                *TINY,
                f"--workdir={paths['two_processes']}",
                *cluster,
                f"--process_id={i}",
                cache=cache,
            )
        started["killed"] = launch(*TINY, f"--workdir={paths['chain']}", cache=cache)
        chain["killed_at"], pair["stopped_at"] = signal_after_checkpoints(
            [
                (started["killed"], paths["chain"], 0, signal.SIGKILL),
                (started["process_1"], paths["two_processes"], 0, signal.SIGTERM),
            ]
        )
        chain["killed"] = finish(started["killed"])
        chain["after_kill"] = checkpoint_steps(paths["chain"])
        pair["stopped"] = [finish(started[f"process_{i}"]) for i in range(2)]
        pair["after_stop"] = checkpoint_steps(paths["two_processes"])
        latest = paths["two_processes"] / workdir.CHECKPOINT_DIR / str(pair["after_stop"][-1])
        pair["shards"] = sorted(p.name for p in (latest / "tree").glob("ocdbt.process_*"))

        # One process on one device, so this test process (one device) reads its checkpoint.
        alone = (*TINY, f"--workdir={paths['two_processes']}", "--cpu_devices=1")
        started["resumed_alone"] = launch(*alone, cache=cache)
        started["terminated"] = launch(*TINY, f"--workdir={paths['chain']}", cache=cache)
        (chain["terminated_at"],) = signal_after_checkpoints(
            [(started["terminated"], paths["chain"], chain["after_kill"][-1], signal.SIGTERM)]
        )
        chain["terminated"] = finish(started["terminated"])
        chain["after_term"] = checkpoint_steps(paths["chain"])

        chain["final"] = finish(launch(*TINY, f"--workdir={paths['chain']}", cache=cache))
        pair["resumed_alone"] = finish(started["resumed_alone"])
        results = {name: finish(started[name]) for name in ("reference", "diverging")}
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return paths, chain, results, pair


def test_sigkill_mid_run_leaves_a_resumable_checkpoint(runs):
    _, chain, _, _ = runs
    returncode, _ = chain["killed"]
    assert returncode == -signal.SIGKILL
    assert chain["after_kill"] and chain["after_kill"][-1] < STEPS


def test_sigterm_writes_a_checkpoint_and_exits_zero(runs):
    _, chain, _, _ = runs
    returncode, stderr = chain["terminated"]
    assert returncode == 0, stderr[-3000:]
    assert "stopped by SIGTERM after a checkpoint at step " in stderr
    assert f" of {STEPS} (relaunch to resume)" in stderr
    # It finished the chunk it was in (or had just checkpointed) and stopped before the end.
    assert chain["after_kill"][-1] < chain["terminated_at"] <= chain["after_term"][-1] < STEPS


def test_interrupted_and_resumed_run_ends_bit_identical(runs):
    paths, chain, results, _ = runs
    returncode, stderr = chain["final"]
    assert returncode == 0 and "complete" in stderr, stderr[-3000:]
    reference_code, reference_err = results["reference"]
    assert reference_code == 0 and "complete" in reference_err, reference_err[-3000:]
    resumed, resumed_meta, resumed_step = restore_latest(paths["chain"])
    reference, reference_meta, reference_step = restore_latest(paths["reference"])
    assert resumed_step == reference_step == STEPS
    assert resumed_meta.pop("metrics_size") > reference_meta.pop("metrics_size")  # resume rows
    assert resumed_meta == reference_meta
    assert jax.tree.structure(resumed) == jax.tree.structure(reference)
    jax.tree.map(np.testing.assert_array_equal, resumed, reference)
    assert np.abs(resumed["state"]["params"]["output"]["kernel"]).sum() > 0
    chain_rows = workdir.read_metrics(paths["chain"])
    assert [row["event"] for row in chain_rows].count("resume") == 2  # after SIGKILL and SIGTERM
    tasks = [row for row in chain_rows if row["event"] != "resume"]
    assert tasks == workdir.read_metrics(paths["reference"])
    assert sorted((r["seed"], r["task"]) for r in tasks if r["event"] == "task") == [
        (seed, task) for seed in (0, 1) for task in range(NUM_TASKS)
    ]


def test_planted_divergence_is_one_line_nonzero_and_keeps_the_last_good_checkpoint(runs):
    paths, _, results, _ = runs
    returncode, stderr = results["diverging"]
    assert returncode == divergence.DIVERGENCE_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    prefix = "train_continual: error: divergence at step "
    assert last.startswith(prefix), last
    step = int(last[len(prefix) :].split(":")[0])
    assert 4 < step < 24  # during the second task or later, after at least one good chunk
    assert ": loss is " in last and "(variant 'no_norm', seed 0)" in last
    tree, metadata, kept = restore_latest(paths["diverging"])
    directory = paths["diverging"] / workdir.CHECKPOINT_DIR
    assert f"last good checkpoint kept: {directory}/{kept}" in last
    assert kept < step  # the kept state is from before the divergence ...
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(tree["state"]))  # ... and sane
    rows = workdir.read_metrics(paths["diverging"])
    assert metadata["metrics_size"] == (paths["diverging"] / workdir.METRICS_FILE).stat().st_size
    assert (
        max(row["task"] for row in rows) == kept // 4 - 1
    )  # no rows of the diverged chunk (4 steps a task)


def test_two_processes_stop_together_on_one_sigterm_and_resume_as_one(runs):
    paths, _, results, pair = runs
    (code_0, stderr_0), (code_1, stderr_1) = pair["stopped"]
    assert code_0 == 0 and code_1 == 0, (stderr_0[-2000:], stderr_1[-2000:])
    assert "stopped by SIGTERM after a checkpoint" in stderr_1
    assert "stopped by a signal to another process after a checkpoint" in stderr_0
    assert pair["stopped_at"] <= pair["after_stop"][-1] < STEPS
    assert pair["shards"] == ["ocdbt.process_0", "ocdbt.process_1"]  # a collective save
    code, stderr = pair["resumed_alone"]
    assert code == 0 and "complete" in stderr, stderr[-3000:]
    assert results["reference"][0] == 0
    two, one = (workdir.read_metrics(paths[name]) for name in ("two_processes", "reference"))
    two = [row for row in two if row["event"] != "resume"]
    assert len(two) == len(one) == 2 * (2 * NUM_TASKS + 1)  # per seed: initial + 2 per task
    for a, b in zip(two, one):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
            else:
                assert a[key] == b[key], key
    _, metadata, step = restore_latest(paths["two_processes"])
    assert step == STEPS
    metrics_file = paths["two_processes"] / workdir.METRICS_FILE
    assert metadata["metrics_size"] == metrics_file.stat().st_size
