"""One launcher contract for every training script: flags, config files, signals, exit statuses.

A script is a docstring, a flag definition and a function from parsed flags to run results;
`main` does the rest, identically for every launcher:

* **Flags**: absl flags on the script's own `absl.flags.FlagValues`, plus the ones every launcher
  has (``--workdir``, ``--progress``, ``--stop_after_checkpoints``, ``--verbosity``,
  ``--cpu_devices`` and the multi-process flags of `plasticity.distributed`).
  ``--config.<field>=<value>`` overrides any field of the config the script builds
  (`apply_overrides`: the value is parsed as the field's type; an unknown field is one line
  naming the closest match; `plasticity.config_tools`).
  ``--help`` prints the docstring, the flags and every config field.
* **Start-up**: verbosity (WARNING unless ``--verbosity`` says otherwise: checkpointing libraries
  log every save at INFO), `jax.distributed` from the flags, `plasticity.runtime` defaults (one
  XLA device per CPU unless ``--cpu_devices`` says otherwise).
* **Signals**: SIGTERM and Ctrl-C (SIGINT) ask the run to stop at its next safe point, after a
  checkpoint (`plasticity.preemption`); a second one aborts at once.
* **Exit statuses**: 0 complete, stopped after a checkpoint, or already complete; 1 bad input
  (flags, config, work dir, sizes that cannot fit, out of memory) or a disk error during the run
  (full, read-only, a file that cannot be written), always one line ``<name>: error: ...`` and
  no traceback; 3 divergence (`plasticity.divergence`); 128 + the signal for a Ctrl-C or SIGTERM
  while the launcher still sets up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import flags, logging

from plasticity.config_tools import describe_config, split_overrides

ERROR_EXIT_CODE = 1
HELP_ARGS = ("--help", "-h", "--helpfull", "--helpshort", "-?")


# ---------------------------------------------------------------------------------------------
# The launch.


@dataclasses.dataclass
class Launch:
    """What a script's ``run`` function receives: parsed flags, overrides and the stop signal."""

    name: str
    flags: flags.FlagValues
    overrides: dict[str, str]
    should_stop: Callable[[], bool]
    signal_name: Callable[[], str | None]
    local_stop_requested: Callable[[], bool]  # this process's signal alone (no collective)

    @property
    def workdir(self) -> str:
        """``--workdir`` with a leading ``~`` expanded (the shell leaves ``--workdir=~/x`` as it
        is, which would make a directory named '~' here)."""
        return os.path.expanduser(self.flags["workdir"].value)

    def note(self, lines: Sequence[str]) -> None:
        """Prints each line as ``<name>: note: <line>`` on stderr: what the user should know before
        the run starts (e.g. a variant whose own value the command line replaced)."""
        for line in lines:
            print(f"{self.name}: note: {line}", file=sys.stderr)

    def stopped_between_runs(self, finished: Any, what: str = "run") -> None:
        """Says in one line that a stop request arrived as the run in ``finished`` (its work dir)
        completed, or with ``what='claim'`` the claim ``finished`` names, so the launch ends
        before its next one, which a relaunch starts."""
        by = self.signal_name() or "a stop request"
        done = f"the run in {finished}" if what == "run" else finished
        print(
            f"{self.name}: {by} arrived as {done} completed: the next {what} does not start "
            "(relaunch to go on)",
            file=sys.stderr,
        )

    def run_options(self) -> dict[str, Any]:
        """The `plasticity.run.Run` keyword arguments every launcher passes the same way."""
        progress = self.flags["progress"]
        return dict(
            show_progress=progress.value if progress.present else None,
            should_stop=self.should_stop,
            stop_after_checkpoints=self.flags["stop_after_checkpoints"].value,
            signal_name=self.signal_name,
        )


def define_common_flags(values: flags.FlagValues) -> None:
    """The flags every launcher has."""
    flags.DEFINE_string(
        "workdir", None, "Work dir (created; relaunching resumes it).", flag_values=values
    )
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=values)
    flags.DEFINE_integer(
        "stop_after_checkpoints",
        None,
        "Stop after writing this many checkpoints (time-sliced jobs); relaunch to resume.",
        lower_bound=1,
        flag_values=values,
    )
    flags.DEFINE_integer(
        "verbosity",
        -1,
        "absl logging verbosity (-1 warnings, 0 info, 1 debug).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "cpu_devices",
        "auto",
        "XLA devices on a CPU: auto (one per CPU, so seeds and runs the mesh splits use every "
        "core; one per process in a multi-process job) or a count.",
        flag_values=values,
    )
    from plasticity import distributed  # noqa: PLC0415 - imports JAX: once Ctrl-C is held

    distributed.define_flags(values)


def parse(
    argv: Sequence[str],
    define_flags: Callable[[flags.FlagValues], None],
    require_workdir: bool = True,
) -> tuple[flags.FlagValues, dict[str, str]]:
    """(parsed flags, ``--config.*`` overrides) of a command line (program name first); a
    ValueError or `absl.flags.Error` for anything the launcher cannot take."""
    values = flags.FlagValues()
    define_common_flags(values)
    define_flags(values)
    rest, overrides = split_overrides(argv)
    unparsed = values(rest)
    if len(unparsed) > 1:
        raise ValueError(f"unexpected arguments {' '.join(unparsed[1:])}")
    if require_workdir and not values["workdir"].value:
        raise ValueError("--workdir is required")
    return values, overrides


def usage(name: str, doc: str, values: flags.FlagValues, config: Any) -> str:
    """The ``--help`` text: the script's docstring, its flags and every config field."""
    text = [doc.strip(), "", "Flags:", values.get_help(include_special_flags=False)]
    if config is not None:
        text += ["", f"Config fields of {name} (override with --config.<field>=<value>):"]
        text.append(describe_config(config))
    return "\n".join(text)


def main(
    name: str,
    doc: str,
    define_flags: Callable[[flags.FlagValues], None],
    run: Callable[[Launch], Any],
    help_config: Callable[[flags.FlagValues], Any] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Runs a launcher and returns its exit status (see the module docstring).

    ``define_flags(values)`` adds the script's own flags; ``run(launch)`` validates, trains and
    returns a `plasticity.run.RunResult` or a list of them; ``help_config(values)`` gives the
    config ``--help`` lists (the parsed flags may choose it, e.g. ``--agent``).
    """
    argv = list(sys.argv if argv is None else argv)
    with _signals_held() as received:
        from plasticity import divergence, preemption  # noqa: PLC0415 - imports JAX

        try:
            if any(arg in HELP_ARGS for arg in argv[1:]):
                values, _ = parse(_without_help(argv), define_flags, require_workdir=False)
                config = help_config(values) if help_config is not None else None
                print(usage(name, doc, values, config))
                return 0
            values, overrides = parse(argv, define_flags)
        except (flags.Error, ValueError) as error:
            return _error(name, error)
        logging.set_verbosity(values["verbosity"].value)
        from plasticity import distributed, runtime  # noqa: PLC0415 - imports JAX's device code

        try:
            joined = distributed.initialize_from_flags(  # first: before anything runs
                values, on_join_timeout=lambda reason: _give_up(name, reason)
            )
            runtime.apply_runtime_defaults(values["cpu_devices"].value, multi_process=joined)
        except ValueError as error:
            return _error(name, error)
    if received:
        print(f"{name}: stopped by {received[0].name} before anything ran", file=sys.stderr)
        return 128 + int(received[0])
    guard = preemption.PreemptionGuard(signals=STOP_SIGNALS, acknowledge=_acknowledger(name))
    launch = Launch(
        name,
        values,
        overrides,
        guard.should_stop,
        lambda: guard.signal_name,
        lambda: guard.requested,
    )
    try:
        with guard:
            results = run(launch)
    except divergence.DivergenceError as error:
        _error(name, error)
        return divergence.DIVERGENCE_EXIT_CODE
    except (ValueError, MemoryError) as error:
        return _error(name, error if str(error) else "out of memory")
    except OSError as error:  # the disk: full, read-only, a file the run cannot write
        if error.errno not in DISK_ERRNOS:
            raise
        # A buffered write names no file: the run's work dir (`Run.__exit__`) or the launch's.
        where = error.filename or f"work dir {getattr(error, 'workdir', launch.workdir)}"
        return _error(name, f"{error.strerror or error}: {where}")
    except Exception as error:  # noqa: BLE001 - only an accelerator's out-of-memory is bad input
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return _error(name, f"out of memory: {str(error).splitlines()[0][:300]}")
    results = list(results) if isinstance(results, (list, tuple)) else [results]
    with _signals_held():  # the run is over: a late Ctrl-C must not cut its summary short
        for result in results:
            label = _run_label(result, launch.workdir) if len(results) > 1 else ""
            if result.reported_here:  # not a copy of the lead process's lines
                for line in result.outputs.get("summary", ()):
                    print(f"{label}: {line}" if label else line)
            if result.reported_here or not result.completed:  # each process says why it stopped
                print(f"{name}: {result.status_line()}", file=sys.stderr)
            if result.preempted:
                break
        for line in results[-1].outputs.get("launch_summary", ()) if results and _leads() else ():
            print(line)  # across the launch's runs (e.g. an Atari variant's seeds)
    return 0


def _leads() -> bool:
    """Whether this is the job's lead process (a single-process launch always is)."""
    from plasticity import distributed  # noqa: PLC0415 - imports JAX, after the flags

    return distributed.is_lead_process()


def _acknowledger(name: str) -> Callable[[str], None]:
    """The line a first Ctrl-C or SIGTERM prints at once (above the progress bar)."""

    def acknowledge(signal_name: str) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - the bar's writer keeps the bar whole

        tqdm.write(
            f"{name}: {signal_name} received: stopping after the next checkpoint "
            "(a second one stops at once)",
            file=sys.stderr,
        )

    return acknowledge


def _run_label(result: Any, workdir: str) -> str:
    """'rainbow_ln_nap' or 'rainbow/seed_1': which of a launch's runs a summary line is about."""
    path = getattr(result, "workdir", None)
    if path is None:
        return ""
    try:
        return str(Path(path).relative_to(workdir))
    except ValueError:
        return Path(path).name


def launch_command(
    argv: Sequence[str], orig_argv: Sequence[str], executable: str = sys.executable
) -> list[str]:
    """The command line as typed: ``python -m scripts.train_atari ...`` where the interpreter's
    own arguments (``orig_argv``, `sys.orig_argv`) ran a module, whose ``argv`` (`sys.argv`)
    starts with the module's file instead; else the interpreter's name and ``argv``."""
    arguments = max(len(argv) - 1, 0)  # the program's own: the tail of orig_argv
    head = list(orig_argv[: len(orig_argv) - arguments])
    if len(head) >= 3 and head[-2] == "-m" and list(orig_argv[len(head) :]) == list(argv[1:]):
        return [Path(executable).name, *orig_argv[1:]]
    return [Path(executable).name, *argv]


def exit_after(status: int) -> None:
    """Exits a launcher's process with ``status``, ignoring stop signals from here on: the run
    is over, and a Ctrl-C or SIGTERM during the interpreter's exit (JAX's clean-up) would
    otherwise print a traceback or turn a completed run's 0 into 143."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    sys.exit(status)


def _without_help(argv: Sequence[str]) -> list[str]:
    return [arg for arg in argv if arg not in HELP_ARGS]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Disk errors a launch reports in one line (another OSError is a bug and keeps its traceback).
DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.ENOTDIR,
}


@contextlib.contextmanager
def _signals_held():
    """Until the run's preemption guard takes over, a Ctrl-C or SIGTERM is recorded (in the list
    yielded) rather than raised: a KeyboardInterrupt raised inside a library's callback (JAX's,
    say) is swallowed, and the launch would go on as if nothing had been pressed."""
    received: list[signal.Signals] = []
    try:
        previous = {
            number: signal.signal(number, lambda n, _: received.append(signal.Signals(n)))
            for number in STOP_SIGNALS
        }
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        previous = {}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _give_up(name: str, reason: str) -> None:
    """Ends the process at once with the one-line error (from a timer thread, while the main
    thread waits inside JAX's C++ join, which no exception reaches). Nothing is written yet."""
    print(f"{name}: error: {reason}", file=sys.stderr, flush=True)
    os._exit(ERROR_EXIT_CODE)


def _error(name: str, error: object) -> int:
    """Prints the one-line error and returns the exit status of bad input."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    from plasticity import distributed  # noqa: PLC0415 - imported by the flags already

    distributed.refuse_launch(text)  # a process of a job tells the others (nothing alone)
    print(f"{name}: error: {text}", file=sys.stderr)
    return ERROR_EXIT_CODE
