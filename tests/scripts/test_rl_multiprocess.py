"""Both RL launchers as jobs of two local processes (`jax.distributed` on loopback, gloo).

* MinAtar: the seeds are laid out on a mesh over both processes' devices: the job plays the
  same trajectories and ends with the same parameters as one process with the same seeds (up to
  the rounding of a differently batched program); a killed process makes the other exit in
  bounded time; a relaunch of the job resumes.
* Atari: each process trains whole runs (here one seed each) in sub-work-dirs of one work dir;
  each equals the same run launched alone; process 0 writes the combined evaluation matrix.

The processes share a JAX compilation cache with each other. The two kill-and-relaunch checks
take about 80 s together and are marked slow (``pytest -m slow``); in the default run
``tests/plasticity/test_distributed.py`` checks that killing one process of a job makes the other
exit in bounded time, and ``test_minatar_resume.py`` / ``test_resume.py`` that a killed run resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plasticity import workdir as workdir_lib
from tests.ports import free_port
from tests.scripts import test_resume
from tests.scripts.test_resume import restore_latest
from tests.scripts.test_rl_launchers import TINY_MINATAR
from tests.scripts.test_run_contract import TINY_ATARI_NET, checkpoints

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 400
ATARI = ["--games=Pong", "--frames_per_game=512", *TINY_ATARI_NET]
FRAMES = 768  # of the MinAtar job: one game, 3 checkpoints of 256 frames
MINATAR = [
    *(arg for arg in TINY_MINATAR if not arg.startswith(("--games", "--cycles", "--frames"))),
    "--games=breakout",
    f"--frames_per_game={FRAMES}",
    "--nofresh_reference",
]
VOLATILE = ("frames_per_second", "updates_per_second", "seconds")


def start(module: str, args: list[str], cache: Path, process: int | None = None, port=None):
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    env.pop("XLA_FLAGS", None)
    cluster = []
    if process is not None:
        cluster = [
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={process}",
            "--distributed_heartbeat_timeout=10",
        ]
    return subprocess.Popen(
        [sys.executable, "-m", module, *args, *cluster],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job(module: str, args: list[str], cache: Path) -> list[subprocess.Popen]:
    port = free_port()
    return [start(module, args, cache, process, port) for process in range(2)]


def finish(process: subprocess.Popen) -> tuple[int, str]:
    return test_resume.finish(process, TIMEOUT)


def stable(rows):
    return [
        {k: v for k, v in row.items() if k not in VOLATILE}
        for row in rows
        if row["event"] != "resume"
    ]


@pytest.fixture(scope="module")
def minatar(tmp_path_factory):
    root = tmp_path_factory.mktemp("minatar_job")
    cache = root / "cache"
    args = [*MINATAR, "--config.run.mesh=auto"]
    out = {"root": root}
    reference = start("scripts.train_minatar", [*args, f"--workdir={root / 'alone'}"], cache)
    pair = job("scripts.train_minatar", [*args, f"--workdir={root / 'job'}"], cache)
    out["job"] = [finish(process) for process in pair]
    out["alone"] = finish(reference)
    return out


@pytest.fixture(scope="module")
def minatar_killed(tmp_path_factory):
    """A job stopped by a SIGKILL of process 1, then the whole job relaunched."""
    root = tmp_path_factory.mktemp("minatar_killed_job")
    cache = root / "cache"
    args = [*MINATAR, "--config.run.mesh=auto"]
    out = {}
    killed = root / "killed"
    pair = job("scripts.train_minatar", [*args, f"--workdir={killed}"], cache)
    deadline = time.monotonic() + TIMEOUT
    while not checkpoints(killed):
        assert time.monotonic() < deadline and pair[0].poll() is None, pair[0].stderr.read()
        time.sleep(0.05)
    pair[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    out["survivor"] = finish(pair[0])
    out["survivor_seconds"] = time.monotonic() - killed_at
    finish(pair[1])
    pair = job("scripts.train_minatar", [*args, f"--workdir={killed}"], cache)
    out["relaunched"] = [finish(process) for process in pair]
    return out


def test_a_minatar_job_of_two_processes_equals_one_process(minatar):
    root = minatar["root"]
    for code, stderr in [*minatar["job"], minatar["alone"]]:
        assert code == 0, stderr[-3000:]
    assert "train_minatar: complete" in minatar["job"][0][1]
    assert "train_minatar: complete" not in minatar["job"][1][1]  # the lead's lines, once
    alone, _, alone_step = restore_latest(root / "alone")
    job_state, _, job_step = restore_latest(root / "job", template=alone)
    assert job_step == alone_step == FRAMES
    for name in ("action", "frames", "reward"):  # the same trajectories were played ...
        np.testing.assert_array_equal(job_state["replay"][name], alone["replay"][name])
    for a, b in zip(  # ... and learned from, up to rounding
        jax_leaves(job_state["train_state"]["params"]), jax_leaves(alone["train_state"]["params"])
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    returns = [
        [(r["seed"], r["game"], r["block"], r["return_mean"]) for r in read(root / name, "eval")]
        for name in ("job", "alone")
    ]
    assert returns[0] == returns[1] and len(returns[0]) == 2  # one game, two seeds


@pytest.mark.slow
def test_a_killed_process_ends_the_minatar_job_in_bounded_time_and_a_relaunch_resumes(
    minatar_killed,
):
    code, _ = minatar_killed["survivor"]
    assert code != 0 and minatar_killed["survivor_seconds"] < 60
    for code, stderr in minatar_killed["relaunched"]:
        assert code == 0, stderr[-3000:]
    assert "resuming from frame" in minatar_killed["relaunched"][0][1]
    assert "complete" in minatar_killed["relaunched"][0][1]


def jax_leaves(tree):
    import jax  # noqa: PLC0415

    return jax.tree.leaves(tree)


def read(path: Path, event: str):
    return [row for row in workdir_lib.read_metrics(path) if row["event"] == event]


def test_an_atari_job_trains_one_run_per_process_as_if_launched_alone(tmp_path):
    cache = tmp_path / "cache"
    pair = job(
        "scripts.train_atari", [*ATARI, "--num_seeds=2", f"--workdir={tmp_path / 'job'}"], cache
    )
    alone = [
        start(
            "scripts.train_atari",
            [*ATARI, f"--seed={seed}", f"--workdir={tmp_path / str(seed)}"],
            cache,
        )
        for seed in (0, 1)
    ]
    results = [finish(process) for process in [*pair, *alone]]
    for code, stderr in results:
        assert code == 0, stderr[-3000:]
    for seed in (0, 1):
        run = tmp_path / "job" / f"seed_{seed}"
        assert stable(workdir_lib.read_metrics(run)) == stable(
            workdir_lib.read_metrics(tmp_path / str(seed))
        )
        assert checkpoints(run) == checkpoints(tmp_path / str(seed))
    combined = json.loads((tmp_path / "job" / "evaluation_matrix.json").read_text())
    assert sorted(combined["runs"]) == ["seed_0", "seed_1"]
    assert combined["runs"]["seed_1"]["games"] == ["pong"]
    assert "process 0" not in results[1][1]  # each process reports its own run
    assert "seed_1" in results[1][1] and "seed_0" in results[0][1]


@pytest.mark.slow
def test_a_killed_process_ends_the_atari_job_in_bounded_time_and_a_relaunch_resumes_both(
    tmp_path,
):
    cache, workdir = tmp_path / "cache", tmp_path / "job"
    long_run = ["--games=Pong", "--frames_per_game=51200", *TINY_ATARI_NET, "--num_seeds=2"]
    pair = job("scripts.train_atari", [*long_run, f"--workdir={workdir}"], cache)
    deadline = time.monotonic() + TIMEOUT
    while not (checkpoints(workdir / "seed_0") and checkpoints(workdir / "seed_1")):
        assert time.monotonic() < deadline and pair[0].poll() is None, pair[0].stderr.read()
        time.sleep(0.05)
    pair[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    code, _ = finish(pair[0])
    assert code != 0 and time.monotonic() - killed_at < 60
    finish(pair[1])
    saved = {seed: checkpoints(workdir / f"seed_{seed}")[-1] for seed in (0, 1)}
    pair = job(
        "scripts.train_atari",
        [*long_run, "--stop_after_checkpoints=1", f"--workdir={workdir}"],
        cache,
    )
    for seed, (code, stderr) in enumerate(finish(process) for process in pair):
        assert code == 0, stderr[-3000:]
        assert f"train_atari seed_{seed}: resuming from frame {saved[seed]:,}" in stderr
