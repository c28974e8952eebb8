"""A task, a diagnostic and an intervention of a researcher's own, registered by the
``--experiment`` file docs/extending.md shows (`benchmarks.tasks.register_task`,
`plasticity.diagnostics.register_diagnostic`, `plasticity.interventions.register_intervention`),
run by a launcher as the built-in ones are, and drawn by the report in a figure of their own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import jax
import numpy as np

from benchmarks import datasets, report, tasks
from plasticity import diagnostics, interventions
from plasticity import workdir as workdir_lib
from scripts import train_continual

ROOT = Path(__file__).resolve().parents[2]


def documented_experiment() -> str:
    """The experiment file docs/extending.md shows (its one Python block)."""
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)\n```", text, flags=re.S)
    return block + "\n"


def test_a_registered_diagnostic_and_intervention_run_from_an_experiment_file(tmp_path, capsys):
    experiment = tmp_path / "mine.py"
    experiment.write_text(documented_experiment())
    workdir = tmp_path / "run"
    argv = [f"--experiment={experiment}:smoke,no_norm", "--noprogress", f"--workdir={workdir}"]
    assert train_continual.main(["train_continual", *argv]) == 0
    rows = workdir_lib.read_metrics(workdir)
    assert {r["task_name"] for r in rows if r["event"] == "task"} == {"label_reversal"}
    measured = [r for r in rows if r["event"] == "diagnostics"]
    assert measured and all(r["mean_abs_act/hidden_0"] > 0 for r in measured)
    applied = [r["step"] for r in rows if r["event"] == "intervention" and r["seed"] == 0]
    assert applied == [20, 40]  # not after the last update (60)
    assert {r["name"] for r in rows if r["event"] == "intervention"} == {"reset_biases"}
    written = report.write_report([workdir], tmp_path / "report")
    assert written.figures["layers_mean_abs_act"].has_data
    manifest = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(manifest["figures"]["layers_mean_abs_act"]["panels"]) == {"hidden_0", "hidden_1"}
    # A bad option is refused in one line before anything is written, as a built-in's.
    bad = [*argv[:-1], f"--workdir={tmp_path / 'bad'}", "--config.intervention.options.value=x"]
    assert train_continual.main(["train_continual", *bad]) == 1
    assert "reset_biases: value must be a number" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_registered_task_draws_what_its_build_says():
    """The documented task: every task holds the previous one's labels in reverse class order,
    through the trainer's own path (`make_task_sequence` by name)."""
    namespace: dict = {}
    exec(compile(documented_experiment(), "mine.py", "exec"), namespace)  # registers it
    digits = datasets.load_dataset("digits")
    sequence = tasks.make_task_sequence("label_reversal", digits)
    states = tasks.task_states(sequence, jax.random.key(0), 3)
    labels = np.asarray(states.labels)
    assert not np.array_equal(labels[0], np.asarray(digits.y_train))  # label_reset's draw
    np.testing.assert_array_equal(labels[1], digits.num_classes - 1 - labels[0])
    np.testing.assert_array_equal(labels[2], labels[0])
    with pytest.raises(ValueError, match="built-in task"):
        tasks.register_task("label_reset", lambda config, dataset, data: None)


def test_a_built_in_name_cannot_be_taken():
    with pytest.raises(ValueError, match="built-in diagnostic"):
        diagnostics.register_diagnostic("srank", lambda seen: {})
    with pytest.raises(ValueError, match="built-in intervention"):
        interventions.register_intervention("redo", lambda context: None)


def test_a_registered_stream_trains_from_an_experiment_file_without_a_dataset(tmp_path):
    """The documented stream (a linear target drifting from task to task): the launcher trains
    on it by name with no dataset read (a data dir no task reads is only a note), each task's
    examples taken in order, and the network's regression loss falls within a task."""
    experiment = tmp_path / "mine.py"
    experiment.write_text(documented_experiment())
    workdir = tmp_path / "stream"
    argv = [
        "train_continual",
        f"--experiment={experiment}:smoke,no_norm",
        "--config.task.name=drifting_regression",
        "--config.task.steps_per_task=40",
        "--config.task.num_tasks=3",
        f"--config.data.data_dir={tmp_path / 'no_such_dir'}",
        "--noprogress",
        f"--workdir={workdir}",
    ]
    assert train_continual.main(argv) == 0
    rows = workdir_lib.read_metrics(workdir)
    ended = [r for r in rows if r["event"] == "task" and r["seed"] == 0]
    assert [r["task"] for r in ended] == [0, 1, 2]
    assert {r["task_name"] for r in ended} == {"drifting_regression"}
    assert "end_accuracy" not in ended[0]  # a regression: losses only
    assert all(r["end_loss"] < r["online_loss"] for r in ended), ended

    assert tasks.is_stream("drifting_regression") and not tasks.is_stream("label_reversal")
    sequence = tasks.make_task_sequence("drifting_regression")  # no dataset needed
    state = sequence.init(jax.random.key(0))
    inputs, targets = sequence.batch(state, np.arange(4))
    again, _ = sequence.batch(state, np.array([2, 3]))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(inputs)[2:])  # (key, i) alone
    np.testing.assert_allclose(targets[:, 0], inputs @ state.weights, rtol=1e-6)
