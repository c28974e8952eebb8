"""The progress bar's counts and ETA, and the run's one-time warning about a budget of days,
with the bar shown or not (batch jobs run with ``--noprogress``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from plasticity import progress as progress_lib
from plasticity import run as run_lib


def test_a_hidden_bar_still_counts_and_estimates():
    bar = progress_lib.Progress(total=1_000, unit="frame", initial=100, disable=True)
    time.sleep(0.02)
    bar.advance(300, updates=30)
    bar.pause()  # the rate clock stops: the figures below are read at one instant
    assert bar.count == 400
    rate, updates = bar.rates()
    assert rate is not None and updates == pytest.approx(rate / 10)
    assert bar.eta_seconds() == pytest.approx(600 / rate)
    bar.close()


def run_of_days(show_progress: bool, **options) -> run_lib.Run:
    """A run of 10^12 frames whose budget is judged at the first advance after the steady pace
    starts (the harness's 20 s of measuring left out)."""
    run = run_lib.Run(
        "train_x",
        None,
        {},
        total=10**12,
        unit="frame",
        x_key="frames",
        show_progress=show_progress,
        budget_hint="lower --frames_per_game",
        **options,
    )
    run.budget_measure_seconds = 0.0
    return run


def advance_three_times(run: run_lib.Run) -> None:
    with run:
        for _ in range(3):
            time.sleep(0.01)
            run.advance(10)


@pytest.mark.parametrize("show_progress", [True, False])
def test_a_run_of_days_says_so_once_with_or_without_the_bar(show_progress, capsys):
    advance_three_times(run_of_days(show_progress))
    warnings = [
        line
        for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
        if "on this machine the run needs" in line
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("train_x: at ")  # a line of its own, not after the bar's text
    assert warnings[0].endswith("more; lower --frames_per_game")


def test_one_run_of_several_is_named_in_its_lines_and_its_bar(capsys):
    """A launch of several variants or seeds labels each run's lines (a resume, a warning) and
    its bar, which would otherwise all read 'train_x: ...'."""
    run = run_of_days(False, label="rainbow/seed_1")
    assert run.description == "train_x rainbow/seed_1"
    advance_three_times(run)
    assert "train_x rainbow/seed_1: at " in capsys.readouterr().err


def test_the_lines_above_the_bar_name_the_run_when_the_launch_has_several(capsys):
    """'rainbow: eval after block 0 ...' as the run's summary lines, where two variants' lines
    would read alike in a log; a launch of one run keeps them as they are."""
    for label in ("rainbow", None):
        with run_of_days(True, label=label) as run:
            run.message("eval after block 0 (pong, visit 1) at 10,240 frames: pong -2.00")
    lines = [line for line in capsys.readouterr().err.splitlines() if "eval after" in line]
    assert lines == [
        "rainbow: eval after block 0 (pong, visit 1) at 10,240 frames: pong -2.00",
        "eval after block 0 (pong, visit 1) at 10,240 frames: pong -2.00",
    ]


def test_the_rate_counts_from_the_steady_pace_once_the_harness_says_so(capsys):
    """A fast start (a replay filling at many times the learning speed) does not shorten the
    ETA once the steady pace is reached; the budget warning waits for that pace too."""
    bar = progress_lib.Progress(total=1_000_000, unit="frame", disable=True)
    bar.advance(100_000)  # the fast start: 100k frames at once
    time.sleep(0.05)
    bar.advance(10)
    bar.pause()  # the clock stops: the figures below are read at one instant
    fast, _ = bar.rates()
    bar.measure_rate_from_here()
    assert bar.rates()[0] == fast  # nothing counted since: the rate before
    bar.resume()
    time.sleep(0.05)
    bar.advance(10, updates=1)
    bar.pause()
    rate, updates = bar.rates()
    assert rate <= 10 / 0.05 and rate < fast and updates == pytest.approx(rate / 10)
    assert bar.eta_seconds() == pytest.approx((1_000_000 - 100_020) / rate)
    bar.close()

    run = run_of_days(False)
    run.budget_after, run.budget_measure_seconds = 1_000, 3_600.0
    with run:
        run.advance(2_000)  # reaches the steady pace: the rate restarts here
        time.sleep(0.01)
        run.advance(10)  # measured for less than an hour at that pace: no verdict yet
        assert "needs" not in capsys.readouterr().err
        run.budget_measure_seconds = 0.0  # as if the hour had passed
        run.advance(10)
    assert "train_x: at " in capsys.readouterr().err


def test_an_rl_run_shows_no_eta_until_its_steady_pace_even_after_a_resume():
    """While the replay fills (many times faster than learning) the rate shows but no ETA; a run
    resumed past the steady point measures its ETA from its first advance."""
    run = run_of_days(False)
    run.budget_after, run.eta_waits_for_steady_pace = 1_000, True
    with run:
        run.advance(600)
        time.sleep(0.01)
        run.advance(10)
        assert run.progress.rates()[0] > 0 and run.progress.eta_seconds() is None
        assert "ETA —" in run.progress._postfix(None)
        run.advance(600)  # past the steady point: the rate restarts here
        time.sleep(0.01)
        run.advance(10)
        assert run.progress.eta_seconds() > 0
    resumed = run_of_days(False)
    resumed.budget_after, resumed.eta_waits_for_steady_pace = 1_000, True
    resumed.done = 5_000  # as a restore past the steady point sets it
    with resumed:
        resumed.advance(10)
        time.sleep(0.01)
        resumed.advance(10)
        assert resumed.progress.eta_seconds() > 0


def test_a_run_that_ends_before_its_steady_pace_ends_its_bar_on_no_time_left():
    """A smoke run can finish while its replay still fills: the bar's last line reads 'ETA 00:00',
    not 'ETA —' beside 100%."""
    run = run_of_days(False)
    run.budget_after, run.eta_waits_for_steady_pace = 10**12 + 1, True
    with run:
        run.advance(10**12 - 10)
        assert run.progress.eta_seconds() is None
        run.advance(10)
        assert run.progress.eta_seconds() == 0.0
        assert "ETA 00:00" in run.progress._postfix(None)


def test_a_resumed_rl_run_shows_no_eta_while_its_first_frames_and_compiles_run():
    """After a resume the first advance (an actor's first frames, before the learner compiled)
    is no more its pace than a replay filling is a fresh run's: the ETA shows '—' through the
    compile after it, and is measured from there on."""
    resumed = run_of_days(False)
    resumed.budget_after, resumed.eta_waits_for_steady_pace = 1_000, True
    resumed.done = 5_000  # as a restore past the steady point sets it
    with resumed:
        assert resumed.progress.eta_seconds() is None
        time.sleep(0.02)  # slow first frames: restoring, compiling the actor
        resumed.advance(10)
        with resumed.phase("compiling the learner"):
            assert resumed.progress.eta_seconds() is None
            assert "ETA —" in resumed.progress._postfix(None)
            assert resumed.progress.rates()[0] > 0  # the rate still shows, over the launch
        resumed.advance(1_000)
        assert resumed.progress.eta_seconds() > 0


def test_counts_read_as_whole_numbers(capsys):
    """'20/720 steps', not '20.0/720'; large totals in k / M."""
    for total, done, shown in (
        (720, 20, "20/720 steps"),
        (4_000_000, 20_000, "20.0k/4.00M frames"),
    ):
        unit = "step" if total < 1000 else "frame"
        bar = progress_lib.Progress(total=total, unit=unit, disable=False)
        bar.advance(done)
        bar.close()
        assert shown in capsys.readouterr().err


def test_a_narrow_terminal_loses_whole_parts_of_the_postfix_from_the_end(monkeypatch):
    """Elapsed always shows; ETA, the rate, the fields and updates/s follow while they fit, and a
    part that does not fit is left out whole (tqdm would cut the line mid-word)."""
    bar = progress_lib.Progress(total=10_000, unit="frame", disable=True)
    bar.set_postfix(game="pong (1/4)", last_return=-21.0)
    time.sleep(0.02)
    bar.advance(300, updates=30)
    bar.pause()
    now = time.monotonic()  # the elapsed time, too, read at one instant (a stall would tick it)
    monkeypatch.setattr(progress_lib.time, "monotonic", lambda: now)
    full = bar._postfix(None)
    parts = full.replace(" | ", ", ").split(", ")
    assert parts[0].startswith("elapsed ") and parts[1].startswith("ETA ")
    assert parts[-1].endswith("updates/s") and len(parts) == 6
    for room in range(len(full) + 4):
        text, rest = bar._postfix_split(room)
        shown = text.replace(" | ", ", ").split(", ")
        assert shown + rest == parts, room  # what the bar leaves out goes to the status line
        assert len(shown) == 1 or len(text) + 2 <= room, room
    bar.close()


def test_a_narrow_terminal_shows_the_parts_the_bar_has_no_room_for_on_a_line_under_it(
    monkeypatch, capsys
):
    """At 120 columns the game, the last return and updates/s do not fit beside the bar: they
    show on a status line of their own under it, which stays under the bar's final line."""
    monkeypatch.setattr(progress_lib, "_is_terminal", lambda stream: True)
    monkeypatch.setattr(progress_lib, "_terminal_width", lambda: 119)
    bar = progress_lib.Progress(total=51_200, description="train_atari rainbow", unit="frame")
    bar.set_postfix(game="breakout (4/4)", last_return=1.0)
    time.sleep(0.02)
    bar.advance(30_720, updates=600)
    bar.close()
    err = capsys.readouterr().err.replace("\x1b[A", "")  # tqdm's cursor-up between its lines
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines()]
    bar_line = [line for line in lines if line.startswith("train_atari rainbow")][-1]
    assert "game=" not in bar_line and "elapsed" in bar_line
    final = lines[lines.index(bar_line) :]
    status = [line for line in final if line.startswith("game=breakout (4/4), last_return=1")]
    assert status and status[0].endswith("updates/s"), final
    assert all(len(line) <= 119 for line in lines)


def test_a_status_line_too_long_for_the_terminal_loses_whole_parts_from_its_end():
    parts = ["ETA 01:02", "2,009 frames/s", "game=space_invaders (1/1)", "502 updates/s"]
    assert (
        progress_lib._fitting(parts, 60) == "ETA 01:02, 2,009 frames/s, game=space_invaders (1/1)"
    )
    assert progress_lib._fitting(parts, 80) == ", ".join(parts)
    assert progress_lib._fitting(parts, 5) == "ETA 0"  # the first part alone is cut
    assert progress_lib._fitting([], 5) == ""


def test_a_wide_terminal_keeps_one_line(monkeypatch, capsys):
    monkeypatch.setattr(progress_lib, "_is_terminal", lambda stream: True)
    monkeypatch.setattr(progress_lib, "_terminal_width", lambda: 199)
    bar = progress_lib.Progress(total=51_200, description="train_atari rainbow", unit="frame")
    bar.set_postfix(game="breakout (4/4)", last_return=1.0)
    bar.advance(30_720, updates=600)
    bar.close()
    assert bar._status is None
    assert "game=breakout (4/4), last_return=1" in capsys.readouterr().err


def test_a_disk_error_naming_no_file_is_marked_with_the_runs_work_dir(tmp_path):
    """A launch of several runs (variants, Atari seeds) names the run whose write failed."""
    run = run_lib.Run(
        "train_x", str(tmp_path / "variant_b"), {}, total=10, unit="step", x_key="step"
    )
    with pytest.raises(OSError) as raised:
        with run:
            raise OSError(28, "No space left on device")
    assert raised.value.workdir == str(tmp_path / "variant_b")
    with pytest.raises(OSError) as raised:  # one that names its file keeps only that
        with run_lib.Run("train_x", str(tmp_path / "c"), {}, total=10, unit="step", x_key="step"):
            raise OSError(28, "No space left on device", "metrics.jsonl")
    assert not hasattr(raised.value, "workdir")
    closing = run_lib.Run("train_x", str(tmp_path / "d"), {}, total=10, unit="step", x_key="step")
    with pytest.raises(OSError) as raised:  # the event file's last flush, when the run closes
        with closing:
            closing.workdir.close = lambda: (_ for _ in ()).throw(OSError(28, "No space left"))
    assert raised.value.workdir == str(tmp_path / "d")


def test_a_status_line_never_reaches_past_its_room():
    """The ", " joining two parts counts: a line one or two characters too long would wrap
    onto the next terminal line (`_terminal_width`), leaving stale copies of it behind."""
    parts = ["ETA 01:02", "2,009 frames/s", "game=space_invaders (1/1)", "502 updates/s"]
    for room in range(80):
        assert len(progress_lib._fitting(parts, room)) <= room, room


def test_a_resume_on_another_device_layout_says_its_rows_agree_to_float_rounding(tmp_path, capsys):
    """The layout a checkpoint was written on is kept in it: a resume on another one says that
    the rows from there agree with an uninterrupted run's to float rounding only; a resume on
    the same layout says nothing more than where it resumes."""

    def launch(layout: str) -> run_lib.Run:
        return run_lib.Run(
            "train_x", str(tmp_path), {}, total=10, unit="step", x_key="step",
            show_progress=False, layout=layout,
        )  # fmt: skip

    template = lambda meta: {"w": np.zeros(2, np.float32)}  # noqa: E731
    with launch("mesh seed:2") as run:
        run.restore(template)
        run.save(template({}), {}, done=5)
    capsys.readouterr()
    for layout, noted in (("mesh seed:2", False), ("one device", True)):
        with launch(layout) as run:
            assert run.restore(template).done == 5
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[0].endswith("resuming from step 5 (checkpoint 5)")
        assert lines[1:] == (
            [
                "train_x: note: the checkpoint was written on mesh seed:2, this launch runs on one "
                "device: the rows from here agree with an uninterrupted run's to float rounding, "
                "not bit for bit"
            ]
            if noted
            else []
        )
