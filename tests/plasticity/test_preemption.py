"""Tests of the SIGTERM guard. The launcher-level behaviour (SIGTERM mid-run → checkpoint, exit 0,
relaunch resumes bit-identically) is in tests/scripts/test_resume.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from plasticity import preemption

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_is_recorded_and_the_previous_handler_restored():
    previous = signal.getsignal(signal.SIGTERM)
    with preemption.PreemptionGuard() as guard:
        assert not guard.requested and not guard.should_stop() and guard.signal_name is None
        signal.raise_signal(signal.SIGTERM)  # delivered to this (main) thread at once
        assert guard.requested and guard.should_stop() and guard.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_handler_installed_before_the_guard_is_the_one_restored():
    """The guard puts back whatever handler it found (a framework's own, here a function), and a
    handler installed outside Python (reported as None) comes back as the default."""

    def own_handler(signum, frame):
        del signum, frame

    before = signal.signal(signal.SIGUSR1, own_handler)
    try:
        with preemption.PreemptionGuard(signals=(signal.SIGUSR1,)):
            assert signal.getsignal(signal.SIGUSR1) is not own_handler
        assert signal.getsignal(signal.SIGUSR1) is own_handler
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert preemption._installable(None) is signal.SIG_DFL
    assert preemption._installable(own_handler) is own_handler


def test_the_first_signal_is_acknowledged_once():
    said = []
    with preemption.PreemptionGuard(signals=(signal.SIGUSR1,), acknowledge=said.append):
        signal.raise_signal(signal.SIGUSR1)
        assert said == ["SIGUSR1"]


def test_request_marks_a_stop_without_a_signal():
    guard = preemption.PreemptionGuard(signals=(signal.SIGUSR1,))
    assert not guard.should_stop()
    guard.request(signal.SIGUSR1)
    assert guard.should_stop() and guard.signal_name == "SIGUSR1"


def test_outside_the_main_thread_no_handler_is_installed():
    seen = {}

    def enter():
        with preemption.PreemptionGuard() as guard:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["requested"] = guard.requested

    before = signal.getsignal(signal.SIGTERM)
    worker = threading.Thread(target=enter)
    worker.start()
    worker.join(timeout=10)
    assert seen == {"handler": before, "requested": False}


_TWICE = textwrap.dedent(
    """
    import signal, sys
    sys.path.insert(0, {repo!r})
    from plasticity import preemption
    with preemption.PreemptionGuard() as guard:
        signal.raise_signal(signal.SIGTERM)
        print("first signal recorded:", guard.requested, flush=True)
        signal.raise_signal(signal.SIGTERM)
        print("still running after the second signal", flush=True)
    """
)


def test_a_second_signal_stops_at_once():
    done = subprocess.run(
        [sys.executable, "-c", _TWICE.format(repo=str(REPO))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "first signal recorded: True" in done.stdout, done.stderr[-2000:]
    assert "still running" not in done.stdout
    assert done.returncode == -signal.SIGTERM
