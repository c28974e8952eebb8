"""The host side of every training run: one harness for the continual, MinAtar and Atari trainers.

A trainer plans its chunks, runs a chunk and turns the chunk's outputs into rows; everything else
a user sees happens here, once, the same way for every launcher:

* **Work dir and config check** (`Run.__enter__`): the work dir must be a writable directory (or
  creatable); ``config.json`` must be readable JSON; a relaunch must bring the same config
  (fields in ``resume_free`` may differ). A work dir with no checkpoint holds nothing to resume
  (its launch failed before the first save: bad size, out of memory), so its config, metrics and
  TensorBoard events are replaced rather than blocking the corrected relaunch. Every launch
  appends to ``run_info.json`` (command line and working directory, git commit, package
  versions, devices, CPU).
* **Resume point** (`Run.restore`): the newest checkpoint whose tree and metadata both load. A
  truncated or partial one gets one warning line, is moved to ``<workdir>/corrupt_checkpoints/``
  and the next older one is tried; only then are the metrics truncated to the size that
  checkpoint recorded and the 'resume' row written. A metrics file *shorter* than that size lost
  rows: the run refuses to go on (one line naming the file) rather than silently drop them. A run
  whose newest checkpoint says it finished is reported as complete and not trained again, once
  that checkpoint's arrays are seen to be there (a truncated one is set aside as above, and the
  run's tail is trained again from the one before).
* **Save** (`Run.save`): the parameters are checked for NaN/Inf first (a diverged state is never
  written, `plasticity.divergence`), PRNG keys become raw data, and the checkpoint records how
  many units (steps or frames) are done and how long the metrics file is, so rows and state stay
  in step.
* **Rows** (`Run.log`): appended to ``metrics.jsonl`` and, as seed means of every numeric field,
  to TensorBoard under ``<event>/<field>`` (prefixed by ``tag_prefix(row)``), at x = the row's
  ``x_key`` (``frames`` for RL, ``step`` for continual runs).
* **Progress** (`Run.advance`, `Run.phase`): a bar over the whole run's units with a phase label
  whenever the loop is not training (compiling, filling the replay, evaluating).
* **Periods** (`due`): the one "is it time" helper for every periodic event.
* **Stopping** (`Run.stop_requested`): preemption (a SIGTERM or Ctrl-C caught by the launcher's
  guard) and the early stop of time-sliced jobs and tests (``stop_after_checkpoints``), asked at
  the trainer's safe points after a save.
* **Result** (`RunResult`): what happened, in one type for every trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from plasticity import divergence
from plasticity import checkpointing
from plasticity.checkpointing import Checkpointer, LocalCheckpointer
from plasticity.progress import Progress, format_seconds
from plasticity.provenance import code_version, run_info  # noqa: F401 - code_version: the API
from plasticity.workdir import (
    WorkDir,
    check_workdir,
    checkpoint_steps,
    config_differences,
    lock_workdir,
    read_config,
    read_metrics,
    shown_differences,
)

RUN_INFO_FILE = "run_info.json"
BUDGET_WARNING_SECONDS = 86_400  # a run longer than this says how to shorten it
BUDGET_MEASURE_SECONDS = 20.0  # training time at the steady pace before the budget is judged
CORRUPT_DIR = "corrupt_checkpoints"
# Row fields that locate a row rather than measure something: never TensorBoard scalars.
INDEX_FIELDS = (
    *("event", "step", "frames", "agent_steps", "updates", "seed", "game", "trained_game"),
    *("block", "visit", "cycle", "task", "task_name", "variant", "segment", "end_of_block"),
    "done",
    *("every", "every_frames", "first_frames"),  # an intervention summary row's
    *("checkpoint", "iteration", "run_frames", "run_step"),  # a 'resume' row's
)


def due(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (before, after]: the one test of every period.

    ``every`` <= 0 switches the event off. A loop that advances from ``before`` to ``after``
    units (steps, frames) runs the event once when it crosses a multiple, however large its
    stride.
    """
    return every > 0 and after // every > before // every


def due_mask(after: np.ndarray, stride: int, every: int) -> np.ndarray:
    """`due` for many iterations at once: ``after`` holds the units after each one, each
    iteration advancing by ``stride`` (vectorized, for plans computed ahead of a run)."""
    after = np.asarray(after, np.int64)
    if every <= 0:
        return np.zeros(after.shape, bool)
    return (after // every) > ((after - stride) // every)


# ---------------------------------------------------------------------------------------------
# PRNG keys in checkpoints.


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def saveable(tree: Any) -> Any:
    """Typed PRNG keys replaced by their raw uint32 data (checkpoints store plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _key_impl(template: Any) -> Any:
    """The PRNG implementation of a key array, or of a key's shape (from `jax.eval_shape`)."""
    if isinstance(template, jax.ShapeDtypeStruct):
        return template.dtype._impl  # a key dtype knows its implementation
    return jax.random.key_impl(template)


def restore_keys(tree: Any, template: Any) -> Any:
    """Raw key data back to typed keys wherever ``template`` (arrays or shapes) has keys."""
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=_key_impl(t)) if _is_key(t) else x,
        tree,
        template,
    )


def _abstract(tree: Any) -> Any:
    """Shapes and dtypes of ``tree`` with keys as raw data, with the shardings of ``tree``'s
    leaves: a restore target (a checkpoint written by several processes is then read back onto
    this process's devices)."""

    def leaf(shape, original):
        return jax.ShapeDtypeStruct(
            shape.shape, shape.dtype, sharding=getattr(original, "sharding", None)
        )

    return jax.tree.map(leaf, jax.eval_shape(saveable, tree), tree)


# ---------------------------------------------------------------------------------------------
# The result.


@dataclasses.dataclass
class RunResult:
    """What a trainer's call did, the same for every trainer.

    ``completed``: the whole run is done (now or by an earlier launch: ``already_complete``);
    ``preempted``: a stop request (SIGTERM, Ctrl-C) ended it after a checkpoint; ``stopped``: the
    early stop of ``stop_after_checkpoints`` did; ``resumed_from``: units done when this launch
    started from a checkpoint; ``done`` / ``total``: units (``unit``s) of the run; ``outputs``:
    whatever else the trainer returns (final states, evaluations, summary lines); ``shared``:
    every process of a multi-process job ran this same run (its lead process reports it).
    """

    name: str
    workdir: Path | None
    unit: str
    total: int
    done: int = 0
    completed: bool = False
    preempted: bool = False
    stopped: bool = False
    already_complete: bool = False
    resumed_from: int | None = None
    signal_name: str | None = None
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    shared: bool = False

    @property
    def reported_here(self) -> bool:
        """Whether this process prints the run's summary and status: not a copy of the lead's."""
        return not self.shared or jax.process_index() == 0

    @property
    def where(self) -> str:
        return f"work dir {self.workdir}" if self.workdir is not None else "no work dir"

    def status_line(self) -> str:
        """One line saying how the call ended, for the launcher to print."""
        progress = f"{self.unit} {self.done:,} of {self.total:,}"
        if self.already_complete:
            return f"already complete ({progress}); nothing to do; {self.where}"
        if self.completed:
            return f"complete ({progress}); {self.where}"
        if self.preempted:
            by = self.signal_name or "a signal to another process"
            return f"stopped by {by} after a checkpoint at {progress} (relaunch to resume); {self.where}"
        return f"stopped after a checkpoint at {progress} (relaunch to resume); {self.where}"


@dataclasses.dataclass
class Restored:
    """A checkpoint that loaded: its tree (keys typed again), the trainer's metadata, its step
    and the units done when it was written."""

    tree: Any
    metadata: dict[str, Any]
    step: int
    done: int


# ---------------------------------------------------------------------------------------------
# The harness.


class Run:
    """The host side of one run (see the module docstring). Use as a context manager.

    Args:
      name: the launcher's name, for messages ('train_minatar').
      workdir: the work dir, or None to run without files (tests, references in memory).
      config: the resolved config as a JSON-ready dict (what ``config.json`` holds).
      total: units of the whole run; unit: 'step' or 'frame' (messages and the bar).
      x_key: the row field TensorBoard scalars are plotted against ('step' or 'frames').
      resume_free: dotted config fields a relaunch may change without changing results.
      keep_checkpoints: how many checkpoints to keep.
      tensorboard, show_progress: switches.
      should_stop: asked at safe points; True means a stop request arrived (preemption).
      stop_after_checkpoints: stop after this many saves of this launch (time slices, tests).
      tag_prefix: ``row -> str`` put before ``<event>/<field>`` in TensorBoard tags.
      index_fields: row fields that locate a row (never TensorBoard scalars).
      description: text before the progress bar (default: the name and the label, or the work
        dir's name).
      label: which of a launch's runs this is ('rainbow/seed_1'), put after the name in the
        lines the harness says, when a launch has several.
      signal_name: ``() -> str | None``, the name of the signal behind a stop request.
      defaults: the launcher's default config (JSON-ready), against which a field that an
        existing ``config.json`` lacks (code from before the field) is compared at a relaunch.
      budget_hint: what to change for a shorter run ('lower --frames_per_game (now 200,000,000)'),
        said once when the measured ETA exceeds a day.
      independent: this process runs this run alone in a multi-process job (writes its work dir,
        saves its checkpoints and shows its progress by itself); by default process 0 writes and
        every process takes part in the saves.
      layout: how the run is laid out over devices ('mesh seed:2'), kept in every checkpoint: a
        resume on another layout says that its rows agree with an uninterrupted run's to float
        rounding, not bit for bit (the compiled programs differ).
    """

    def __init__(
        self,
        name: str,
        workdir: str | os.PathLike | None,
        config: Mapping[str, Any],
        *,
        total: int,
        unit: str,
        x_key: str,
        resume_free: Sequence[str] = (),
        keep_checkpoints: int = 2,
        tensorboard: bool = True,
        show_progress: bool = True,
        should_stop: Callable[[], bool] | None = None,
        stop_after_checkpoints: int | None = None,
        tag_prefix: Callable[[Mapping[str, Any]], str] | None = None,
        index_fields: Sequence[str] = INDEX_FIELDS,
        description: str | None = None,
        signal_name: Callable[[], str | None] | None = None,
        budget_hint: str | None = None,
        independent: bool = False,
        label: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        layout: str | None = None,
    ):
        self.name = name
        self.layout = layout
        self.label = label
        self.independent = independent
        self.path = Path(workdir) if workdir is not None else None
        self.config = json.loads(json.dumps(dict(config), default=str))
        self.defaults = json.loads(json.dumps(dict(defaults or {}), default=str))
        self.total = int(total)
        self.unit = unit
        self.x_key = x_key
        self.resume_free = tuple(resume_free)
        self.keep_checkpoints = int(keep_checkpoints)
        self.tensorboard = tensorboard
        self.show_progress = show_progress
        self._should_stop = should_stop
        self._signal_name = signal_name
        self.stop_after_checkpoints = stop_after_checkpoints
        self.tag_prefix = tag_prefix
        self.index_fields = tuple(index_fields)
        self.description = description or " ".join(
            [name] + ([label or self.path.name] if label or self.path is not None else [])
        )
        self.done = 0
        self.saves = 0
        self.last_saved_done: int | None = None
        self.finished_before = False
        self.workdir: WorkDir | None = None
        self.checkpointer: Checkpointer | LocalCheckpointer | None = None
        self._lock: int | None = None  # the work dir's open descriptor while it is locked
        self._progress: Progress | None = None
        self.budget_hint = budget_hint
        self.budget_after = 0  # the run's units after which the pace is steady (RL: learning)
        self.eta_waits_for_steady_pace = False  # no ETA before (RL: a replay fills much faster)
        self.budget_measure_seconds = BUDGET_MEASURE_SECONDS
        self._budget_checked = False
        self._steady_since: float | None = None  # training seconds when the pace became steady
        self._phase: str | None = None
        self._postfix: dict[str, Any] = {}
        shared = jax.process_count() > 1 and not self.independent
        self.result = RunResult(name, self.path, unit, self.total, shared=shared)

    # Opening ---------------------------------------------------------------------------------

    def __enter__(self) -> "Run":
        if self.path is None:
            return self
        check_workdir(self.path)
        existing = read_config(self.path)
        steps = checkpoint_steps(self.path)
        if existing is None and steps:
            raise ValueError(
                f"work dir {self.path} holds checkpoints but no config.json to check a resume "
                "against; put the run's config.json back or use a new --workdir"
            )
        if existing is not None and steps:
            differences = [
                name
                for name in config_differences(existing, self.config, defaults=self.defaults)
                if not any(name == free or name.startswith(free + ".") for free in self.resume_free)
            ]
            if differences:
                raise ValueError(
                    f"work dir {self.path} holds a run with a different config (fields: "
                    f"{shown_differences(differences)}); use a new --workdir or the same config "
                    "to resume"
                )
        writer = True if self.independent else None
        self.workdir = WorkDir(self.path, tensorboard=self.tensorboard, is_writer=writer)
        if self.workdir.is_writer:
            self._lock = lock_workdir(self.path)
        try:
            if not steps:  # nothing to resume: whatever an earlier, failed launch left is replaced
                self._clear_unresumable_files()
                self.workdir.write_config(self.config)
            self._append_run_info()
            self.checkpointer = checkpointing.for_directory(
                self.workdir.checkpoint_dir,
                self.keep_checkpoints,
                saves_alone=self.independent or jax.process_count() == 1,
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _clear_unresumable_files(self, keep: bool = False) -> None:
        """Empties metrics.jsonl and removes the TensorBoard events for a fresh start; with
        ``keep``, moves them into the folder of the checkpoints set aside instead."""
        if not self.workdir.is_writer:
            return
        if keep and self.workdir.metrics_size():
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            target = self.path / CORRUPT_DIR / f"{self.workdir.metrics_path.name}.{stamp}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.workdir.metrics_path, target)
            self._say(f"no checkpoint loads: starting over; the earlier rows are kept in {target}")
        self.workdir.truncate_metrics(0)
        for events in self.path.glob("events.out.tfevents.*"):
            if keep:
                shutil.move(str(events), str(self.path / CORRUPT_DIR / events.name))
            else:
                events.unlink()

    def _append_run_info(self) -> None:
        if not self.workdir.is_writer:
            return
        path = self.path / RUN_INFO_FILE
        launches = []
        if path.exists():
            try:
                launches = json.loads(path.read_text(encoding="utf-8")).get("launches", [])
            except (json.JSONDecodeError, AttributeError):
                launches = []  # a damaged record of earlier launches is not worth stopping for
        launches.append(run_info())
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"launches": launches}, indent=1) + "\n", encoding="utf-8")
        temporary.replace(path)

    def __exit__(self, *exc_info) -> None:
        """Closes the bar, the event file and the checkpointer, each even when one before it
        fails (a full disk), and releases the work dir's lock last. A disk error naming no file
        (a buffered write's, here or in the run) gets ``error.workdir``, this run's work dir,
        which the launch's one line names (a launch of several runs has several)."""
        self._mark_disk_error(exc_info[1] if len(exc_info) > 1 else None)
        try:
            with contextlib.ExitStack() as closing:  # run last to first, each whatever fails
                closing.callback(self._release_lock)
                for part in (self.checkpointer, self.workdir, self._progress):
                    if part is not None:
                        closing.callback(part.close)
        except OSError as error:
            self._mark_disk_error(error)
            raise

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _mark_disk_error(self, error: BaseException | None) -> None:
        if isinstance(error, OSError) and error.filename is None and self.path is not None:
            error.workdir = str(self.path)

    # Resume ----------------------------------------------------------------------------------

    def restore(
        self,
        template: Callable[[dict[str, Any]], Any],
        resume_row: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Restored | None:
        """The newest checkpoint that loads, or None (a fresh start, or no work dir).

        ``template(metadata)`` gives arrays or shapes of the saved tree (it may depend on where
        the run stood). A checkpoint that fails to load is moved aside with one warning line and
        the next older one is tried. On success the metrics file is truncated to the size the
        checkpoint recorded, the 'resume' row (``resume_row(metadata)``'s fields) is written and
        one line says where the run resumes. A run whose checkpoint says it finished sets
        `already_complete` and restores nothing, once the checkpoint's arrays are seen to be
        there (`check_readable`; otherwise it is set aside like one that fails to load).
        """
        if self.checkpointer is None:
            return None
        steps = checkpoint_steps(self.path)
        for step in steps:
            try:
                metadata = self.checkpointer.restore_metadata(step)
            except Exception as error:  # noqa: BLE001 - any failure to read means unusable
                self._set_aside(step, error)
                continue
            if metadata.get("finished"):
                try:  # nothing is restored: its arrays at least must be there to be loaded later
                    self.checkpointer.check_readable(step)
                except Exception as error:  # noqa: BLE001 - the tail is trained again instead
                    self._set_aside(step, error)
                    continue
                self._check_metrics_length(step, metadata)
                self.done = int(metadata.get("done", self.total))
                self.finished_before = True
                self.result.already_complete = self.result.completed = True
                # What the run did (a run finished by an older plan may differ from this one's).
                self.result.done = self.result.total = self.done
                return None
            try:
                shapes = template(metadata)
                tree, metadata = self.checkpointer.restore(self._target(shapes), step)
            except Exception as error:  # noqa: BLE001
                self._set_aside(step, error)
                continue
            self._check_metrics_length(step, metadata)
            self.workdir.truncate_metrics(int(metadata["metrics_size"]))
            self.done = self.last_saved_done = int(metadata["done"])
            self.result.resumed_from = self.result.done = self.done
            self._say(f"resuming from {self.unit} {self.done:,} (checkpoint {step})")
            saved_on = metadata.get("layout")
            if self.layout is not None and saved_on is not None and saved_on != self.layout:
                self._say(
                    f"note: the checkpoint was written on {saved_on}, this launch runs on "
                    f"{self.layout}: the rows from here agree with an uninterrupted run's to "
                    "float rounding, not bit for bit"
                )
            # Its x as the rows around it count it (a segment's, a variant's), and the run's.
            row = {"event": "resume", self.x_key: self.done}
            row.update({**(resume_row(metadata) if resume_row else {}), "checkpoint": step})
            self.workdir.append_metrics([{**row, f"run_{self.x_key}": self.done}])
            return Restored(restore_keys(tree, shapes), metadata, step, self.done)
        # A fresh start: rows no checkpoint covers are dropped, but when checkpoints existed and
        # none loads (damaged, or saved by other code), that run's rows are kept beside them.
        self._clear_unresumable_files(keep=bool(steps))
        return None

    def _target(self, shapes: Any) -> Any:
        """The restore target of a checkpoint: shapes with their shardings, or for a run of its
        own in a multi-process job host arrays (what it saved), placed by the trainer."""
        target = _abstract(shapes)
        if self.independent:
            target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), target)
        return target

    def _check_metrics_length(self, step: int, metadata: Mapping[str, Any]) -> None:
        """One-line ValueErrors, before anything trains, when the rows the checkpoint recorded
        are not all there, or not all readable."""
        recorded = int(metadata.get("metrics_size", 0))
        size = self.workdir.metrics_size()
        if size < recorded:
            raise ValueError(
                f"{self.workdir.metrics_path} is shorter ({size:,} bytes) than checkpoint {step} "
                f"recorded ({recorded:,} bytes): rows were lost; restore the file or use a new "
                "--workdir"
            )
        read_metrics(self.workdir.metrics_path, limit=recorded)

    def _set_aside(self, step: int, error: BaseException) -> None:
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        source = self.workdir.checkpoint_dir / str(step)
        target = self.path / CORRUPT_DIR / str(step)
        self._say(
            f"warning: checkpoint {step} cannot be loaded ({reason}); moved to {target}, trying "
            "an older one",
        )
        if self.workdir.is_writer and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(source), str(target))
        self.checkpointer.reload()

    # Rows ------------------------------------------------------------------------------------

    def log(self, rows: Sequence[Mapping[str, Any]], *, scalars: bool = True) -> None:
        """Appends ``rows`` to metrics.jsonl and their seed means to TensorBoard."""
        if self.workdir is None or not rows:
            return
        self.workdir.append_metrics(rows)
        if scalars and self.tensorboard:
            scalars = tensorboard_scalars(rows, self.x_key, self.tag_prefix, self.index_fields)
            for x, values in sorted(scalars.items()):
                self.workdir.write_scalars(x, values)

    # Saving ----------------------------------------------------------------------------------

    def save(
        self,
        tree: Any,
        metadata: Mapping[str, Any],
        *,
        done: int,
        params: Any = None,
        step: int | None = None,
        finished: bool = False,
        context: str = "",
    ) -> None:
        """Checkpoints ``tree`` with the trainer's ``metadata`` once ``done`` units are done.

        ``params`` (when given) are checked for NaN/Inf first: a diverged state raises
        `divergence.DivergenceError` naming ``step`` (the update count) and ``context`` and is
        never written. ``finished`` marks the run's last save: a relaunch then has nothing to do.
        """
        self.done = int(done)
        self.result.done = self.done
        if params is not None and not bool(_all_finite(params)):
            divergence.check_params(
                params, self.done if step is None else step, context=context, kept=self.kept()
            )
        if self.checkpointer is None:
            return
        self.workdir.flush()
        record = {
            **dict(metadata),
            "done": self.done,
            "finished": bool(finished),
            "metrics_size": self.workdir.metrics_size(),
            **({"layout": self.layout} if self.layout is not None else {}),
        }
        with self.phase("saving a checkpoint"):
            tree = saveable(tree)
            if self.independent:  # host copies, written by this process alone
                tree = jax.device_get(tree)
            self.checkpointer.save(self.done, tree, record)
        self.last_saved_done = self.done
        self.saves += 1

    def kept(self) -> str:
        """Which checkpoint a stopped run keeps, for one-line error messages."""
        if self.checkpointer is None:
            return "no work dir, nothing saved"
        step = self.checkpointer.latest_step()
        where = f"{self.unit} {step:,}" if step is not None else ""
        return divergence.kept_checkpoint_text(self.checkpointer.directory, step, where)

    # Stopping --------------------------------------------------------------------------------

    def preemption_requested(self) -> bool:
        """Whether a stop request (SIGTERM, Ctrl-C) arrived: ``should_stop``, a collective in
        multi-process jobs, so every process asks at the same points. Sets the result's flags."""
        if self._should_stop is not None and self._should_stop():
            self.result.preempted = True
            self.result.signal_name = self._signal_name() if self._signal_name else None
            return True
        return False

    def stop_requested(self) -> bool:
        """Asked at a safe point after a save: whether to stop there (a stop request, or the
        early stop of ``stop_after_checkpoints``). Sets the result's flags."""
        if self.preemption_requested():
            return True
        if self.stop_after_checkpoints is not None and self.saves >= self.stop_after_checkpoints:
            self.result.stopped = True
            return True
        return False

    def finish(self, **outputs: Any) -> RunResult:
        """The result of a call that ran to the end of the run."""
        self.result.completed = True
        self.result.done = self.done = self.total
        self.result.outputs.update(outputs)
        return self.result

    def stop(self, **outputs: Any) -> RunResult:
        """The result of a call that stopped early (a checkpoint holds where it stood)."""
        self.result.done = self.done
        self.result.outputs.update(outputs)
        return self.result

    # Progress --------------------------------------------------------------------------------

    @property
    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                total=self.total,
                description=self.description,
                unit=self.unit,
                initial=self.done,
                disable=(None if not self.independent else False) if self.show_progress else True,
            )
            # Resumed too: its first units (restoring, compiling) are not its pace either.
            if self.eta_waits_for_steady_pace:
                self._progress.wait_for_steady_pace()
        return self._progress

    def advance(self, units: int, updates: int = 0, **postfix: Any) -> None:
        """``units`` more done (and ``updates`` learner updates); ``postfix`` fields (game,
        return, ...) replace the shown ones. Once the pace is steady and measured, a run whose
        ETA exceeds a day says so once, with the flag that shortens it (``budget_hint``)."""
        self._postfix.update(postfix)
        self.progress.advance(int(units), int(updates), **self._shown())
        self._warn_about_budget()

    def show(self, **postfix: Any) -> None:
        """Updates the fields after the bar without advancing it."""
        self._postfix.update(postfix)
        self.progress.set_postfix(**self._shown())

    def _shown(self) -> dict[str, Any]:
        return {key: value for key, value in self._postfix.items() if value is not None}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Shows ``name`` (compiling, evaluating, ...) while the loop does something other than
        training; the rate, and so the ETA, leave the time spent in it out."""
        previous, self._phase = self._phase, name
        self.progress.pause()
        self.progress.set_phase(name)
        try:
            yield
        finally:
            self._phase = previous
            self.progress.set_phase(previous)
            if previous is None:
                self.progress.resume()

    def _warn_about_budget(self) -> None:
        """Once the run reaches ``budget_after`` units (the steady pace: RL learning, not the
        replay filling; a run resumed past them at its first advance, after its compiles), the
        bar's rate (and ETA) counts from there; after
        ``budget_measure_seconds`` of training at that pace, a run whose ETA exceeds a day says
        so once."""
        progress = self.progress
        if self._steady_since is None:
            if progress.count >= self.budget_after:
                progress.measure_rate_from_here()
                self._steady_since = progress.training_seconds()
            return
        if self._budget_checked or self.budget_hint is None:
            return
        if progress.training_seconds() - self._steady_since < self.budget_measure_seconds:
            return
        eta = progress.eta_seconds()
        if eta is None:
            return
        self._budget_checked = True
        if eta > BUDGET_WARNING_SECONDS:
            rate, _ = self.progress.rates()
            self._say(
                f"at {rate:,.0f} {self.unit}s/s on this machine the run needs "
                f"{format_seconds(eta)} more; {self.budget_hint}"
            )

    def message(self, text: str) -> None:
        """A line above the bar (evaluation results, switches), from the process reporting the
        run; after the run's label when the launch has several ('rainbow: eval after block 0
        ...', as its summary lines are), whose lines would otherwise read alike in a log."""
        if self.show_progress and self.result.reported_here:
            self.progress.write(f"{self.label}: {text}" if self.label else text)

    def _say(self, text: str) -> None:
        """A line on stderr from the lead process (or this one, running alone), with the
        launcher's name and the run's label."""
        if self.independent or jax.process_index() == 0:
            speaker = f"{self.name} {self.label}" if self.label else self.name
            if self._progress is not None:
                self._progress.write(f"{speaker}: {text}")  # above the bar, not glued to it
            else:
                print(f"{speaker}: {text}", file=sys.stderr, flush=True)


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def tensorboard_scalars(
    rows: Iterable[Mapping[str, Any]],
    x_key: str,
    tag_prefix: Callable[[Mapping[str, Any]], str] | None = None,
    index_fields: Sequence[str] = INDEX_FIELDS,
) -> dict[int, dict[str, float]]:
    """{x: {tag: mean over rows}} for every numeric, non-index field of ``rows``.

    Tags are ``[<prefix>/]<event>/<field>``; rows sharing x and tag (the seeds of one log point)
    are averaged; non-finite values are left out.
    """
    sums: dict[tuple[int, str], list[float]] = {}
    for row in rows:
        x = row.get(x_key)
        if x is None:
            continue
        prefix = tag_prefix(row) if tag_prefix is not None else ""
        head = f"{prefix}/{row.get('event')}" if prefix else str(row.get("event"))
        for key, value in row.items():
            number = _finite_number(value)
            if key in index_fields or number is None:
                continue
            sums.setdefault((int(x), f"{head}/{key}"), []).append(number)
    scalars: dict[int, dict[str, float]] = {}
    for (x, tag), values in sums.items():
        scalars.setdefault(x, {})[tag] = float(np.mean(values))
    return scalars


_all_finite = jax.jit(divergence.tree_is_finite)
