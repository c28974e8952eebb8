"""Tests of the work-dir writer: config check, metrics rows, truncation, process gating."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from plasticity import workdir


def test_rows_round_trip_with_numpy_scalars_and_non_finite_values(tmp_path):
    writer = workdir.WorkDir(tmp_path, tensorboard=False)
    rows = [
        {"event": "task", "step": np.int64(10), "seed": 0, "end_accuracy": np.float32(0.5)},
        {"event": "diagnostics", "step": 20, "seed": 1, "loss": math.nan, "x": math.inf},
    ]
    size = writer.append_metrics(rows)
    assert size == writer.metrics_size() > 0
    read = workdir.read_metrics(tmp_path)
    assert read == [
        {"event": "task", "step": 10, "seed": 0, "end_accuracy": 0.5},
        {"event": "diagnostics", "step": 20, "seed": 1, "loss": None, "x": None},
    ]
    for line in (tmp_path / workdir.METRICS_FILE).read_text().splitlines():
        json.loads(line)  # strict JSON: no NaN/Infinity tokens


def test_truncate_drops_rows_after_the_recorded_size(tmp_path):
    writer = workdir.WorkDir(tmp_path, tensorboard=False)
    first = writer.append_metrics([{"event": "task", "task": 0}])
    writer.append_metrics([{"event": "task", "task": 1}, {"event": "task", "task": 2}])
    writer.truncate_metrics(first)
    assert [row["task"] for row in workdir.read_metrics(tmp_path)] == [0]
    writer.truncate_metrics(0)
    assert workdir.read_metrics(tmp_path) == []


def test_config_written_once_and_a_different_config_refused(tmp_path):
    writer = workdir.WorkDir(tmp_path, tensorboard=False)
    config = {"task": {"name": "label_reset", "num_tasks": 3}, "seed": 0, "sizes": (1, 2)}
    writer.check_or_write_config(config)
    assert workdir.read_config(tmp_path)["task"]["num_tasks"] == 3
    writer.check_or_write_config(config)  # same config: a resume, accepted
    changed = {**config, "task": {"name": "label_reset", "num_tasks": 4}}
    with pytest.raises(ValueError, match=r"different config \(fields: task.num_tasks\)"):
        writer.check_or_write_config(changed)
    writer.check_or_write_config(changed, ignore=("task.num_tasks",))
    assert workdir.read_config(tmp_path)["task"]["num_tasks"] == 3


def test_a_refused_relaunch_names_the_fields_of_the_run_not_of_other_variants(tmp_path):
    """``--norm=rmsnorm`` on ``rainbow``'s work dir changes its network.norm and every variant's
    override of it: the refusal names network.norm, not variants it does not run; a change in
    the variants alone is still refused, and named."""
    from plasticity import run as run_lib  # noqa: PLC0415

    def config(norm: str, other: str) -> dict:
        variants = {"rainbow_ln": {"network": {"norm": other}}, "rainbow": {}}
        return {"network": {"norm": norm}, "variants": variants, "variant_order": ["rainbow"]}

    def launch(path, launched: dict) -> run_lib.Run:
        return run_lib.Run(
            "train_x",
            str(path),
            launched,
            total=10,
            unit="frame",
            x_key="frames",
            show_progress=False,
        )

    with launch(tmp_path / "rainbow", config("none", "layernorm")) as run:
        run.save({"w": np.zeros(2)}, {}, done=5)
    with pytest.raises(ValueError, match=r"different config \(fields: network.norm\);"):
        launch(tmp_path / "rainbow", config("rmsnorm", "rmsnorm")).__enter__()
    writer = workdir.WorkDir(tmp_path / "wd", tensorboard=False)
    writer.check_or_write_config(config("none", "layernorm"))
    with pytest.raises(ValueError, match=r"different config \(fields: network.norm\);"):
        writer.check_or_write_config(config("rmsnorm", "rmsnorm"))
    with pytest.raises(ValueError, match=r"\(fields: variants.rainbow_ln.network.norm\);"):
        writer.check_or_write_config(config("none", "rmsnorm"))
    assert workdir.shown_differences([f"f{i}" for i in range(9)], most=2) == "f0, f1 ..."


def test_a_finished_run_whose_last_checkpoint_is_truncated_trains_its_tail_again(tmp_path, capsys):
    """A relaunch of a finished run restores nothing, yet a final checkpoint whose arrays are
    gone is noticed: it is set aside and the run goes on from the one before (and a later
    relaunch finds it complete)."""
    from plasticity import run as run_lib  # noqa: PLC0415

    def launch() -> run_lib.Run:
        return run_lib.Run(
            "train_x", str(tmp_path), {"a": 1}, total=10, unit="step", x_key="step",
            show_progress=False,
        )  # fmt: skip

    with launch() as run:
        run.log([{"event": "train", "step": 5}])
        run.save({"w": np.full(2, 5.0, np.float32)}, {}, done=5)
        run.log([{"event": "train", "step": 10}])
        run.save({"w": np.full(2, 10.0, np.float32)}, {}, done=10, finished=True)
    final = tmp_path / "checkpoints" / "10" / "tree.npz"
    final.write_bytes(final.read_bytes()[:-40])
    capsys.readouterr()
    with launch() as run:
        restored = run.restore(lambda metadata: {"w": np.zeros(2, np.float32)})
        assert not run.result.already_complete
        assert restored.done == 5 and restored.tree["w"].tolist() == [5.0, 5.0]
        run.log([{"event": "train", "step": 10}])
        run.save({"w": np.full(2, 10.0, np.float32)}, {}, done=10, finished=True)
    warning, resuming = capsys.readouterr().err.strip().splitlines()[:2]
    assert warning.startswith("train_x: warning: checkpoint 10 cannot be loaded (tree.npz: ")
    assert resuming == "train_x: resuming from step 5 (checkpoint 5)"
    assert (tmp_path / "corrupt_checkpoints" / "10" / "tree.npz").exists()
    with launch() as run:
        assert run.restore(lambda metadata: {"w": np.zeros(2, np.float32)}) is None
        assert run.result.already_complete
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["event"], row["step"]) for row in rows] == [
        ("train", 5), ("resume", 5), ("train", 10)
    ]  # fmt: skip


def test_non_lead_process_writes_nothing(tmp_path):
    path = tmp_path / "run"
    writer = workdir.WorkDir(path, is_writer=False)
    writer.write_config({"a": 1})
    assert writer.append_metrics([{"event": "task"}]) == 0
    writer.write_scalars(1, {"x": 1.0})
    writer.close()
    assert not path.exists()


def test_tensorboard_events_are_written(tmp_path):
    with workdir.WorkDir(tmp_path) as writer:
        writer.write_scalars(5, {"arm/task/end_accuracy": 0.75, "skipped": math.nan})
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_tensorboard_scalars_average_seeds_and_leave_out_what_locates_a_row():
    """Index fields (the x axis, the game, a summary row's period and first application, a resume
    row's counts) and strings are not scalars; the seeds of one log point are averaged under one
    tag."""
    from plasticity.run import tensorboard_scalars

    summary = dict(event="intervention", frames=96, name="redo", every_frames=8, first_frames=16)
    rows = [
        dict(event="eval", frames=64, game="pong", seed=0, return_mean=-3.0),
        dict(event="eval", frames=64, game="pong", seed=1, return_mean=-1.0),
        dict(summary, seed=0, applications=11),
        dict(event="resume", frames=64, run_frames=640, checkpoint=64, iteration=8, seed=0),
    ]
    assert tensorboard_scalars(rows, "frames") == {
        64: {"eval/return_mean": -2.0},
        96: {"intervention/applications": 11.0},
    }


def _records(data: bytes) -> list[bytes]:
    """The payloads of a TFRecord file, each record's two masked CRC32Cs checked."""
    records, position = [], 0
    while position < len(data):
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[position + 8 : position + 12])
        payload = data[position + 12 : position + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[position + 12 + length : position + 16 + length])
        assert header_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload)
        records.append(payload)
        position += 16 + length
    return records


def test_events_read_back_and_a_second_writer_in_the_same_second_keeps_the_first(tmp_path):
    for step, value in ((1, 0.5), (2, 0.25)):  # two launches, well within one second
        with workdir.WorkDir(tmp_path) as writer:
            writer.write_scalars(step, {"loss": value, "acc": 1.0 - value})
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2
    for file in files:  # TFRecords whose checksums TensorBoard checks, the version record first
        records = _records(file.read_bytes())
        first = event_pb2.Event.FromString(records[0])
        assert first.file_version == "brain.Event:2" and len(records) == 2
    scalars = workdir.read_scalars(tmp_path)
    assert sorted(scalars["loss"]) == [(1, 0.5), (2, 0.25)]
    assert sorted(scalars["acc"]) == [(1, 0.5), (2, 0.75)]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_is_an_error_of_the_caller_and_closing_leaves_nothing_to_retry(
    tmp_path, monkeypatch
):
    """Events are written on the calling thread: a full device raises OSError there (a writer
    thread would die and then block the caller), and after a failed close nothing is left."""
    monkeypatch.setattr(workdir, "_new_event_file", lambda directory: Path("/dev/full"))
    writer = workdir.WorkDir(tmp_path)
    writer.write_scalars(1, {"loss": 0.5})
    with pytest.raises(OSError, match="No space left on device"):
        writer.flush()
    with pytest.raises(OSError, match="No space left on device"):
        writer.close()
    writer.close()  # nothing left to flush or close


def test_a_field_the_saved_config_lacks_is_compared_with_its_default():
    old = {"task": {"num_tasks": 4}, "seed": 0}
    defaults = {"task": {"num_tasks": 10, "sampling": "uniform"}, "seed": 0, "run": {"k": 1}}
    same = {"task": {"num_tasks": 4, "sampling": "uniform"}, "seed": 0, "run": {"k": 1}}
    assert workdir.config_differences(old, same, defaults=defaults) == []
    other = {"task": {"num_tasks": 4, "sampling": "shuffled"}, "seed": 0, "run": {"k": 2}}
    assert workdir.config_differences(old, other, defaults=defaults) == ["run", "task.sampling"]
    assert workdir.config_differences(old, same) == ["run", "task.sampling"]  # no defaults given
    assert workdir.config_differences(same, old, defaults=defaults) == ["run", "task.sampling"]


def test_run_info_says_which_code_ran_and_whether_it_was_edited(tmp_path):
    """A checkout records its commit and whether tracked files differ from it; a copy outside
    git records no commit (an editable install has no pip-recorded one) but the version."""
    import subprocess  # noqa: PLC0415

    from plasticity import run  # noqa: PLC0415

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = run.code_version(tmp_path)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (tmp_path / "untracked.txt").write_text("a work dir's files are not edits\n")
    assert run.code_version(tmp_path)["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert run.code_version(tmp_path) == {**clean, "git_dirty": True}
    outside = run.code_version(tmp_path / "untracked.txt")
    assert outside["git_commit"] is None and outside["git_dirty"] is None
    assert outside["version"] == clean["version"] is not None


def test_run_info_records_the_command_as_typed_and_where_it_ran(tmp_path, monkeypatch):
    """``python -m scripts.train_atari ...`` as typed, not the module's file (sys.argv[0]), and
    the working directory a relative --workdir is relative to."""
    from plasticity import launch, run  # noqa: PLC0415

    argv = ["/repo/scripts/train_atari.py", "--workdir=wd"]
    typed = ["python3", "-X", "dev", "-m", "scripts.train_atari", "--workdir=wd"]
    command = launch.launch_command(argv, typed, "/venv/bin/python")
    assert command == ["python", "-X", "dev", "-m", "scripts.train_atari", "--workdir=wd"]
    as_file = ["python3", "scripts/train_atari.py", "--workdir=wd"]
    assert launch.launch_command(argv, as_file, "/venv/bin/python") == ["python", *argv]
    assert launch.launch_command(["x.py"], ["python", "-m", "x"], "python") == ["python", "-m", "x"]
    monkeypatch.chdir(tmp_path)
    assert run.run_info()["cwd"] == str(tmp_path)


def test_a_work_dir_two_levels_inside_another_run_is_refused(tmp_path):
    """A run's own directory cannot sit in another run's work dir, directly or one folder
    further down (as a ``<variant>/seed_<s>`` work dir would)."""
    outer = tmp_path / "run"
    outer.mkdir()
    (outer / workdir.CONFIG_FILE).write_text("{}")
    for inner in (outer / "variant", outer / "variant" / "seed_0"):
        with pytest.raises(ValueError) as error:
            workdir.check_workdir(inner)
        assert f"is inside the work dir of another run ({outer})" in str(error.value)
    assert sorted(p.name for p in outer.iterdir()) == [workdir.CONFIG_FILE]
