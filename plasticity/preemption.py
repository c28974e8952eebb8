"""Preemption: SIGTERM (or Ctrl-C) asks a run to stop at its next safe point, checkpoint, exit 0.

Schedulers (Cloud TPU and GPU VMs being preempted, SLURM at the end of a time slice, Kubernetes
evicting a pod) send SIGTERM and allow a grace period before SIGKILL. A training loop wrapped in
`PreemptionGuard` finishes the step or chunk it is in, writes a checkpoint, and returns; the
launcher then exits with status 0, and relaunching the same command resumes from that
checkpoint. Python runs signal handlers between bytecodes of the main thread, so a handler never
interrupts a compiled computation: the flag is read at the loop's safe points.

A second signal while the first is pending kills the process at once with the signal's default
action (an impatient second Ctrl-C, or a scheduler's repeated SIGTERM, is not held up by a
compiled computation that is still running, as Python's KeyboardInterrupt would be).

In a multi-process job the signal may reach only some processes; `PreemptionGuard.should_stop`
is a collective that returns the same answer in every process, so they all stop after the same
step. Install the guard after `jax.distributed.initialize` (`plasticity.distributed`), which
installs JAX's own SIGTERM handler for its preemption notices.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Sequence

from plasticity import distributed

PREEMPTION_SIGNALS = (signal.SIGTERM,)


class PreemptionGuard:
    """Records SIGTERM (or `signals`) while active, as a request to stop at the next safe point.

    Use as a context manager around the training loop; the previous handlers are restored on
    exit. Outside the main thread (where Python cannot install handlers) it records nothing but
    `request()` calls.
    """

    def __init__(
        self,
        signals: Sequence[signal.Signals] = PREEMPTION_SIGNALS,
        acknowledge: Callable[[str], None] | None = None,
    ):
        """``acknowledge(signal_name)``, when given, is called on the first signal: a launcher
        says at once that the run will stop at its next checkpoint."""
        self._signals = tuple(signals)
        self._previous: dict[int, object] = {}
        self._received: int | None = None
        self._acknowledge = acknowledge

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, _installable(previous))
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self._received is not None:  # the second signal: stop at once, as the default does
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._received = signum
        if self._acknowledge is not None:
            self._acknowledge(signal.Signals(signum).name)

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Marks a stop as requested, as the signal `signum` would (tests, embedding code)."""
        self._received = signum

    @property
    def requested(self) -> bool:
        """Whether this process received a stop request."""
        return self._received is not None

    @property
    def signal_name(self) -> str | None:
        """Name of the signal received ('SIGTERM'), or None."""
        return None if self._received is None else signal.Signals(self._received).name

    def should_stop(self) -> bool:
        """Whether any process of the job received a stop request (the same answer everywhere).

        A collective in a multi-process job: every process calls it at the same safe points.
        """
        return distributed.any_process(self.requested)


def _installable(handler: object) -> object:
    """A handler `signal.signal` accepts: None (installed outside Python) becomes the default."""
    return signal.SIG_DFL if handler is None else handler
