"""Preemption-safe exact resume and the divergence guard of the MinAtar launcher, as a user (or a
scheduler) runs it: subprocesses, real signals.

The tiny two-seed run of the loop tests (breakout, space_invaders, twice; 512 frames a block, a
checkpoint every 256 frames, then space_invaders' fresh reference: 2,560 frames) is run

* uninterrupted (the reference);
* as a chain: SIGKILL once a checkpoint exists, relaunch to the end. The final state (networks,
  optimizer, replay, environments, keys) and metrics.jsonl must equal the reference's bit for bit
  (SIGTERM and Ctrl-C are tested on every launcher in tests/scripts/test_run_contract.py);
* on one CPU device (``JAX_NUM_CPU_DEVICES=1``), where the reference and the chain run on two
  with the seeds split over them (the launcher's ``run.mesh=auto``): the same run up to float
  rounding;
* with Adam at a learning rate of 1e30: a one-line error naming the update, exit status 3, and
  no checkpoint of the diverged state (keeping the last good one when there were several is
  tested on the continual launcher, `tests/scripts/test_resume.py`).

The processes share a JAX persistent compilation cache, so relaunches load the programs the
first runs compiled.
"""

from __future__ import annotations

import json
import signal

import jax
import numpy as np
import pytest

from plasticity import divergence, workdir
from plasticity.run import RUN_INFO_FILE
from tests.scripts.test_resume import (
    checkpoint_steps,
    finish,
    launch,
    restore_latest,
    signal_after_checkpoints,
)
from tests.scripts.test_rl_launchers import TINY_MINATAR

FINAL = 2560  # frames: 4 blocks and 1 reference of 512 frames, a checkpoint every 256
TINY = TINY_MINATAR
# The loss (a Huber loss on unbounded Q-values) overflows within the first updates.
DIVERGING = [*TINY, "--config.optimizer.learning_rate=1e30"]
# The reference and the chain split their 2 seeds over 2 CPU devices, whatever the cores.
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
MODULE = "scripts.train_minatar"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("minatar_resume")
    paths = {name: root / name for name in ("reference", "chain", "diverging")}
    cache = root / "compilation_cache"

    paths["one_device"] = root / "one_device"

    def start(args, name, env=TWO_DEVICES):
        return launch(*args, f"--workdir={paths[name]}", cache=cache, module=MODULE, env=env)

    started = {"reference": start(TINY, "reference"), "killed": start(TINY, "chain")}
    chain = {}
    try:
        (chain["killed_at"],) = signal_after_checkpoints(
            [(started["killed"], paths["chain"], 0, signal.SIGKILL)]
        )
        chain["killed"] = finish(started["killed"])
        chain["after_kill"] = checkpoint_steps(paths["chain"])
        started["diverging"] = start(DIVERGING, "diverging")
        chain["final"] = finish(start(TINY, "chain"))
        started["one_device"] = start(TINY, "one_device", env={"JAX_NUM_CPU_DEVICES": "1"})
        results = {name: finish(started[name]) for name in ("reference", "diverging", "one_device")}
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return paths, chain, results


def test_sigkill_mid_run_leaves_a_resumable_checkpoint(runs):
    _, chain, _ = runs
    returncode, _ = chain["killed"]
    assert returncode == -signal.SIGKILL
    assert chain["after_kill"] and chain["after_kill"][-1] < FINAL


def test_interrupted_and_resumed_run_ends_bit_identical(runs):
    paths, chain, results = runs
    returncode, stderr = chain["final"]
    assert returncode == 0, stderr[-3000:]
    assert results["reference"][0] == 0, results["reference"][1][-3000:]
    resumed, resumed_meta, resumed_step = restore_latest(paths["chain"])
    reference, reference_meta, reference_step = restore_latest(paths["reference"])
    assert resumed_step == reference_step == FINAL
    del resumed_meta["metrics_size"], reference_meta["metrics_size"]  # the chain has resume rows
    assert resumed_meta == reference_meta
    assert jax.tree.structure(resumed) == jax.tree.structure(reference)
    jax.tree.map(np.testing.assert_array_equal, resumed, reference)
    kernels = [np.abs(leaf).sum() for leaf in jax.tree.leaves(resumed["train_state"]["params"])]
    assert min(kernels) > 0
    rows = [workdir.read_metrics(paths[name]) for name in ("chain", "reference")]
    drop = ("frames_per_second", "seconds")
    chain_rows, reference_rows = (
        [{k: v for k, v in r.items() if k not in drop} for r in run if r["event"] != "resume"]
        for run in rows
    )
    assert chain_rows == reference_rows
    assert sum(r["event"] == "resume" for r in rows[0]) == 1  # the relaunch after the kill


def test_planted_divergence_is_one_line_exit_3_and_keeps_the_last_good_checkpoint(runs):
    paths, _, results = runs
    returncode, stderr = results["diverging"]
    assert returncode == divergence.DIVERGENCE_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    prefix = "train_minatar: error: divergence at step "
    assert last.startswith(prefix), last
    step = int(last[len(prefix) :].split(":")[0])
    assert step >= 1 and (": loss is " in last or ": grad_norm is " in last)
    assert "(sequence, seed " in last and "breakout" in last
    # It diverges in the first chunk: nothing was saved, and nothing diverged is.
    directory = paths["diverging"] / workdir.CHECKPOINT_DIR
    assert f"no checkpoint was written before it (in {directory})" in last
    assert checkpoint_steps(paths["diverging"]) == []
    rows = workdir.read_metrics(paths["diverging"])
    assert all(r["step"] < step for r in rows if r["event"] == "train")


def devices_of(path) -> list[str]:
    """The devices the launch of work dir ``path`` ran on, as its launch record lists them."""
    (launch,) = json.loads((path / RUN_INFO_FILE).read_text())["launches"]
    return launch["devices"]


def test_seeds_split_over_two_devices_give_the_run_of_one_device(runs):
    paths, _, results = runs
    returncode, stderr = results["one_device"]
    assert returncode == 0, stderr[-3000:]
    assert devices_of(paths["reference"]) == ["cpu:0", "cpu:1"]
    assert devices_of(paths["one_device"]) == ["cpu:0"]
    reference, _, reference_step = restore_latest(paths["reference"])
    one_device, _, one_device_step = restore_latest(paths["one_device"], template=reference)
    assert one_device_step == reference_step == FINAL
    for name in ("action", "frames", "reward"):  # the same trajectories were played ...
        np.testing.assert_array_equal(one_device["replay"][name], reference["replay"][name])
    pairs = zip(  # ... and learned from, up to the rounding of a differently batched program
        jax.tree.leaves(one_device["train_state"]["params"]),
        jax.tree.leaves(reference["train_state"]["params"]),
        strict=True,
    )
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    returns = [
        [
            (r["seed"], r["game"], r["return_mean"])
            for r in workdir.read_metrics(paths[name])
            if r["event"] in ("eval", "eval_fresh")
        ]
        for name in ("one_device", "reference")
    ]
    assert returns[0] == returns[1]
