"""Tests of the continual launcher, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plasticity import workdir
from plasticity.run import RUN_INFO_FILE

REPO = Path(__file__).resolve().parents[2]
# Halves XLA:CPU compile time of the run (see tests/benchmarks/test_continual.py).
ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "0"}
TINY = [
    "--experiment=benchmarks/configs/nap_label_reset.py",
    "--config.variant_order=('layernorm_nap',)",
    "--config.num_seeds=2",
    "--config.task.num_tasks=2",
    "--config.task.steps_per_task=4",
    "--config.task.batch_size=8",
    "--config.network.hidden_sizes=(8,)",
    "--config.data.max_train_examples=64",
    "--config.diagnostics.every=2",
    "--config.eval.max_examples=32",
    "--config.run.tasks_per_chunk=1",
    "--config.intervention.name=redo",
    "--config.intervention.every=3",
    "--config.intervention.at_task_boundaries=true",
]


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.train_continual", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("launcher") / "run"
    done = launch(*TINY, f"--workdir={path}")
    assert done.returncode == 0, done.stderr[-3000:]
    return path, done


def test_tiny_run_writes_the_work_dir(tiny_run):
    path, done = tiny_run
    assert "complete" in done.stderr
    config = json.loads((path / workdir.CONFIG_FILE).read_text())
    assert config["task"]["num_tasks"] == 2 and config["network"]["hidden_sizes"] == [8]
    rows = workdir.read_metrics(path)
    task_rows = [row for row in rows if row["event"] == "task"]
    assert sorted((row["seed"], row["task"]) for row in task_rows) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert {row["variant"] for row in rows} == {"layernorm_nap"}
    for row in task_rows:
        assert 0.0 <= row["end_accuracy"] <= 1.0 and row["param_norm"] > 0
    diagnostics = [row for row in rows if row["event"] == "diagnostics"]
    assert sorted({row["step"] for row in diagnostics}) == [0, 2, 4, 6, 8]
    assert "weight_norm/hidden_0" in diagnostics[0] and "effective_lr/output" in diagnostics[0]
    # ReDo after updates 3 and 6 and at the second task's start (step 4), for each seed.
    interventions = [row for row in rows if row["event"] == "intervention"]
    assert sorted((row["seed"], row["step"]) for row in interventions) == [
        (seed, step) for seed in (0, 1) for step in (3, 4, 6)
    ]
    assert {row["name"] for row in interventions} == {"redo"}
    assert list(path.glob("events.out.tfevents.*"))
    assert any((path / workdir.CHECKPOINT_DIR).iterdir())


def test_relaunch_resumes_and_appends_no_rows(tiny_run):
    path, _ = tiny_run
    before = (path / workdir.METRICS_FILE).read_bytes()
    done = launch(*TINY, f"--workdir={path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (path / workdir.METRICS_FILE).read_bytes() == before


def test_missing_dataset_is_one_line_and_nonzero_exit(tmp_path):
    done = launch(
        "--experiment=benchmarks/configs/nap_label_reset.py",
        "--config.data.name=mnist",
        f"--data_dir={tmp_path / 'nothing_here'}",
        f"--workdir={tmp_path / 'run'}",
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(
        "train_continual: error: variant 'no_norm': dataset 'mnist' not "
        "found: expected train-images-idx3-ubyte"
    )
    assert "--data_dir" in lines[-1] and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start


# The launcher pinned to the given CPUs by the child itself (a `preexec_fn` would run Python
# between fork and exec of this multithreaded process, which can deadlock the child).
PINNED_LAUNCH = (
    "import os, runpy, sys; os.sched_setaffinity(0, {cpus}); "
    "sys.argv[0] = 'train_continual'; "
    "runpy.run_module('scripts.train_continual', run_name='__main__', alter_sys=True)"
)


def test_vmapped_runs_on_two_cpu_devices_finish(tmp_path):
    """Two runs vmapped on each of 2 CPU devices, 2 cores, default runs_per_batch=0: the batched
    LAPACK SVDs of the diagnostics deadlocked XLA:CPU's 2-thread pool (`plasticity.linalg`), so
    the launcher hung forever after compiling. The child is pinned to 2 CPUs, which sizes the
    pool as on a 2-core machine; the timeout (SIGKILL) turns a hang into a failure."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    env = {k: v for k, v in ENV.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    args = [
        "--experiment=benchmarks/configs/disentangling.py:smoke",
        "--config.variant_order=('no_norm',)",
        "--config.task.num_tasks=2",
        "--cpu_devices=2",
        "--noprogress",
    ]  # run.runs_per_batch stays 0: each device vmaps its 2 runs (l2 grid of 2 × 2 seeds)
    try:
        done = subprocess.run(
            [sys.executable, "-c", PINNED_LAUNCH.format(cpus=cpus[:2]), *args]
            + [f"--workdir={tmp_path / 'run'}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,  # about 60 s, 80 s beside the suite's heaviest fixture; a deadlock never ends
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the launcher hung (LAPACK deadlock in XLA:CPU's thread pool?)")
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "run" / RUN_INFO_FILE).read_text())
    assert info["launches"][-1]["devices"] == ["cpu:0", "cpu:1"]


def test_a_sweep_resumed_at_a_variant_boundary_starts_the_next_variant_afresh(tmp_path, capsys):
    """The checkpoint written when a variant ends resumes the next one from its own initial
    state: with both arms the same network (``--norm=layernorm``), the resumed second arm's rows
    equal an uninterrupted run's, step-0 diagnostics included."""
    from scripts import train_continual  # noqa: PLC0415

    sweep = [  # TINY with two arms (later overrides win)
        *TINY,
        "--config.variant_order=('no_norm','layernorm')",
        "--norm=layernorm",
        "--config.num_seeds=1",
        "--config.task.num_tasks=3",
        "--config.task.steps_per_task=2",
        "--noprogress",
    ]

    def run(path: Path, *extra: str) -> list[dict]:
        status = train_continual.main(["train_continual", *sweep, *extra, f"--workdir={path}"])
        assert status == 0, capsys.readouterr().err[-3000:]
        return [row for row in workdir.read_metrics(path) if row["event"] != "resume"]

    reference = run(tmp_path / "reference")
    printed = capsys.readouterr()
    summary = printed.out.splitlines()
    assert (  # the arm named no_norm runs with a norm: said before it starts
        "train_continual: note: variant 'no_norm' runs with network.norm='none' but the command line "
        "makes it 'layernorm'; its work dir keeps the variant's name"
    ) in printed.err.splitlines()
    assert [line.split(":")[0] for line in summary] == ["no_norm", "layernorm"]
    interrupted = tmp_path / "interrupted"
    run(interrupted, "--stop_after_checkpoints=3")  # the third: the first arm's end
    capsys.readouterr()
    resumed = run(interrupted)
    second = [row for row in reference if row.get("variant") == "layernorm"]
    assert second and any(row["step"] == 0 for row in second)
    assert resumed == reference
    # The whole sweep's summary, after a resume and after a relaunch of the finished run.
    assert capsys.readouterr().out.splitlines() == summary
    run(interrupted)
    assert capsys.readouterr().out.splitlines() == summary
