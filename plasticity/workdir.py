"""The work dir of a run: resolved config, one JSON line per event, TensorBoard events, checkpoints.

Layout::

    <workdir>/config.json          the resolved config (JSON object)
    <workdir>/metrics.jsonl        one JSON object per line (schema below)
    <workdir>/events.out.tfevents.*  TensorBoard scalars (means over seeds)
    <workdir>/checkpoints/         Orbax checkpoints (see `plasticity.checkpointing`)

Before a launch writes one, `check_workdir` refuses a path that cannot be a run's own directory
(a file, a dangling link, not writable, nested in or over other runs) and `lock_workdir` keeps a
second launch out. Only process 0 (``jax.process_index() == 0``) writes files; on every other process the writer
methods do nothing, so multi-host launchers call them unconditionally.

metrics.jsonl schema
--------------------
Every row has:

* ``event``: ``"task"`` (one row per run and task, written when the task ends) or
  ``"diagnostics"`` (one row per run every K optimizer steps, and once at step 0);
* ``step``: optimizer updates done by the run when the row was measured (for a task row, the
  step at the end of the task);
* ``seed``: the integer seed of the run; ``variant``: the name of the structural variant
  (e.g. ``"layernorm_nap"``); ``task``: index of the task the run is in (0-based);
* the continuous hyper-parameters of the run's grid point: ``learning_rate``,
  ``weight_decay``, ``l2``, ``l2_init`` (floats);
* ``task_name``: the task sequence (e.g. ``"label_reset"``).

RL launchers add ``frames`` and ``game``. Task rows add:

* ``online_loss``, ``online_accuracy``: training-batch loss / accuracy, measured before each
  update and averaged over the task's steps;
* ``end_loss``, ``end_accuracy``: after the task's last update, on (up to ``eval.max_examples``
  of) the task's training examples with the task's current targets (memorization accuracy);
* ``end_test_loss``, ``end_test_accuracy``: the same on held-out examples, for tasks with a
  test set (class / input permutation);
* ``param_norm``: Frobenius norm of all parameters together at the end of the task.

Accuracy fields are absent for regression tasks. Diagnostics rows hold flat scalar keys
``<name>/<layer>`` (layers as in `plasticity.param_labels`, without a trailing ``/linear``:
``hidden_0``, ``output``, ``torso/conv_1``), at least ``weight_norm/<layer>`` (kernel
Frobenius norm), ``effective_lr/<layer>`` (η/‖W‖^p, p = 2 for SGD and momentum, 1 for Adam and
RMSProp) and ``update_ratio/<layer>`` (‖ΔW‖/‖W‖ of the last update), plus ``param_norm`` and
whatever `plasticity.diagnostics` adds (e.g. ``dormant_0.025/hidden_0``, ``srank/hidden_1``,
``hessian_top_eigenvalue``). Non-finite values are written as ``null``.
Rows of a block of tasks are appended only once the whole block has run, and a resumed run
first truncates the file to what the restored checkpoint had seen, so no row is ever repeated.
(TensorBoard event files cannot be truncated: after a crash between a block's rows and its
checkpoint, that block's scalars appear twice there, with the same values on CPU.)
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def is_lead_process() -> bool:
    """Whether this process writes logs (process 0 of a multi-host job, or a single process)."""
    return jax.process_index() == 0


def _json_scalar(value: Any) -> Any:
    """A JSON-ready value: NumPy scalars become Python numbers, non-finite floats None."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json_line(row: Mapping[str, Any]) -> str:
    """One metrics row as a compact JSON line (no trailing newline)."""
    return json.dumps(
        {key: _json_scalar(value) for key, value in row.items()},
        separators=(",", ":"),
        allow_nan=False,
    )


def read_metrics(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file (or of the one inside a work dir); with ``limit``, those
    of its first ``limit`` bytes. A line that is not a JSON row (a damaged file) is a one-line
    ValueError naming the file and the line."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    with open(path, "rb") as f:
        data = f.read() if limit is None else f.read(limit)
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}: line {number} is not a JSON row ({error.msg}); restore the file or use "
                "a new --workdir"
            ) from None
    return rows


def config_differences(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Dotted names of the fields that differ between two nested config dicts.

    With ``defaults`` (the launcher's default config), a field ``old`` lacks but ``new`` holds at
    its default value is no difference: ``old`` was written by code from before the field
    existed, which computed what the default computes (so an upgrade does not refuse to resume
    or to recognize a finished run).
    """
    differences = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        default = defaults.get(key, "<absent>") if isinstance(defaults, Mapping) else "<absent>"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = default if isinstance(default, Mapping) else None
            differences += config_differences(a, b, name + ".", inner)
        elif a == "<absent>" and default != "<absent>" and b == default:
            continue
        elif a != b:
            differences.append(name)
    return differences


# A sweep's fields: every variant's overrides (which a flag such as --norm sets in each) and
# their order; a resolved variant's config keeps them beside its own, resolved fields.
SWEEP_FIELDS = ("variants", "variant_order")


def shown_differences(differences: Sequence[str], most: int = 8) -> str:
    """The differing fields a refusal to relaunch names (at most ``most``): a sweep's
    ``variants.*`` and ``variant_order`` only when nothing else differs. A relaunch of one
    variant with ``--norm=rmsnorm`` changes its ``network.norm``, which says it; the same change
    in the overrides of variants it does not run (``variants.rainbow_ln.network.norm`` in
    ``rainbow``'s work dir) would only mislead."""
    own = [name for name in differences if name.split(".")[0] not in SWEEP_FIELDS]
    names = own or list(differences)
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def read_scalars(workdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the TensorBoard event files of a work dir, in file order.

    What TensorBoard shows, read without TensorBoard: event files are TFRecord files (a record is
    an 8-byte little-endian length, a 4-byte CRC, the bytes of one ``Event`` protocol buffer and
    a 4-byte CRC; CRCs are not checked), parsed with tensorboardX's ``Event`` message. A
    truncated last record (a killed writer) ends a file.
    """
    import struct  # noqa: PLC0415

    from tensorboardX.proto import event_pb2  # noqa: PLC0415

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(workdir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        position = 0
        while position + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[position : position + 8])
            start, end = position + 12, position + 12 + length
            if end + 4 > len(data):
                break
            event = event_pb2.Event()
            event.ParseFromString(data[start:end])
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((int(event.step), value.simple_value))
            position = end + 4
    return scalars


def _new_event_file(directory: Path) -> Path:
    """A TensorBoard event file name no other writer in ``directory`` has used (a relaunch in
    the same second must not truncate the previous launch's events)."""
    stem = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
    path, count = directory / stem, 0
    while path.exists():
        count += 1
        path = directory / f"{stem}.{count}"
    return path


class WorkDir:
    """Writer of a work dir; a no-op on processes other than the lead one.

    Args:
      path: the work dir (created if missing).
      tensorboard: write TensorBoard scalars too.
      is_writer: override the process check (tests); default `is_lead_process()`.
    """

    def __init__(
        self, path: str | os.PathLike, *, tensorboard: bool = True, is_writer: bool | None = None
    ):
        self.path = Path(path)
        self.is_writer = is_lead_process() if is_writer is None else is_writer
        self._tensorboard = tensorboard
        self._summary_writer = None
        if self.is_writer:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Writes config.json atomically (temporary file, then rename)."""
        if not self.is_writer:
            return
        temporary = self.path / (CONFIG_FILE + ".tmp")
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a crash leaves the old or the new
        os.replace(temporary, self.path / CONFIG_FILE)

    def check_or_write_config(self, config: Mapping[str, Any], ignore: Sequence[str] = ()) -> None:
        """Writes config.json, or checks that the one already there describes the same run.

        Raises a one-line ValueError naming the differing fields: resuming a work dir with another
        config would mix two experiments in one metrics file. Dotted names in `ignore` (e.g.
        'run.progress') may differ; the file keeps the first launch's values.
        """
        existing = read_config(self.path)
        if existing is None:
            self.write_config(config)
            return
        normalized = json.loads(json.dumps(config, default=str))
        differences = [
            name for name in config_differences(existing, normalized) if name not in ignore
        ]
        if differences:
            raise ValueError(
                f"work dir {self.path} holds a run with a different config (fields: "
                f"{shown_differences(differences)}); use a new --workdir or the same config to "
                "resume"
            )

    def metrics_size(self) -> int:
        """Bytes in metrics.jsonl (0 when absent): the resume point recorded with a checkpoint."""
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        """Drops everything after byte `size` of metrics.jsonl (rows of an unfinished block)."""
        if not self.is_writer or not self.metrics_path.exists():
            return
        if self.metrics_size() > size:
            with open(self.metrics_path, "r+b") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())

    def append_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Appends rows (flushed and fsynced) and returns the file size afterwards."""
        if not self.is_writer:
            return 0
        text = "".join(to_json_line(row) + "\n" for row in rows)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return self.metrics_size()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """TensorBoard scalars at `step`, one event (tags as given; non-finite values skipped).

        Written on the calling thread into an event file of TFRecords (tensorboardX's
        ``RecordWriter``; not its ``SummaryWriter``, whose writer thread dies on a full disk and
        then blocks the caller for good): a disk error reaches the caller like any other
        write's."""
        if not self.is_writer or not self._tensorboard:
            return
        from tensorboardX.proto import event_pb2, summary_pb2  # noqa: PLC0415 - writers only

        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in scalars.items()
            if math.isfinite(float(value))
        ]
        if not values:
            return
        if self._summary_writer is None:
            from tensorboardX.record_writer import RecordWriter  # noqa: PLC0415

            self._summary_writer = RecordWriter(str(_new_event_file(self.path)))
            version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
            self._summary_writer.write(version.SerializeToString())
        summary = summary_pb2.Summary(value=values)
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._summary_writer.write(event.SerializeToString())

    def flush(self) -> None:
        """Pushes TensorBoard events to disk (flushed and fsynced)."""
        if self._summary_writer is not None:
            self._summary_writer.flush()

    def close(self) -> None:
        """Flushes and closes the TensorBoard event file; the writer is gone even when that
        fails (a full disk), so nothing tries again at exit."""
        writer, self._summary_writer = self._summary_writer, None
        if writer is not None:
            try:
                writer.flush()
            finally:
                writer.close()

    def __enter__(self) -> "WorkDir":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Checks before a launch writes a work dir (`plasticity.run.Run`).


def check_workdir(path: Path) -> None:
    """One-line ValueError unless ``path`` is (or can be made) a writable directory; writes
    nothing that survives the check."""
    try:
        _check_workdir(path)
    except OSError as error:  # a name too long, a loop of links: what the OS says, in one line
        raise ValueError(f"work dir {path}: {error.strerror or error}") from None


def _check_workdir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"work dir {path} is {_not_a_directory(path)}, not a directory")
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # the work dir or a parent to be created: a dangling link
            link = "" if existing == path else f": {existing}"
            raise ValueError(
                f"work dir {path}{link} is a symbolic link to nothing ({os.readlink(existing)})"
            )
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(
            f"work dir {path}: {existing} is {_not_a_directory(existing)}, not a directory"
        )
    try:
        probe = _probe_file(existing)
        probe.unlink()
    except OSError as error:
        raise ValueError(f"work dir {path} is not writable ({error.strerror})") from None
    _check_run_files_writable(path)
    _check_not_nested(path)


def _check_run_files_writable(path: Path) -> None:
    """One-line ValueError when a run's own files or checkpoint folder inside a writable work dir
    cannot be written (found before training rather than at the first checkpoint)."""
    checkpoints = path / CHECKPOINT_DIR
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ValueError(f"{checkpoints} is {_not_a_directory(checkpoints)}, not a directory")
    if checkpoints.is_dir():
        try:
            _probe_file(checkpoints).unlink()
        except OSError as error:
            raise ValueError(f"{checkpoints} is not writable ({error.strerror})") from None
    for name in (METRICS_FILE, CONFIG_FILE):
        file = path / name
        if file.exists() and not os.access(file, os.W_OK):
            raise ValueError(f"{file} is not writable; make it writable or use a new --workdir")


def _check_not_nested(path: Path) -> None:
    """One-line ValueError when ``path`` would put one run inside another: under a directory
    that is a run's work dir (it holds a ``config.json``), or over runs of its own (a parent of
    variant or seed work dirs, e.g. another launcher's), which the report would not tell apart."""
    for parent in list(path.parents)[:2]:
        if (parent / CONFIG_FILE).is_file():
            raise ValueError(
                f"work dir {path} is inside the work dir of another run ({parent}); use a "
                "--workdir of its own"
            )
    if path.is_dir():
        inner = [p for p in (*path.glob(f"*/{CONFIG_FILE}"), *path.glob(f"*/*/{CONFIG_FILE}"))]
        inner = [p for p in inner if "checkpoints" not in p.relative_to(path).parts]
        if inner:
            raise ValueError(
                f"work dir {path} holds other runs ({inner[0].parent}); use a --workdir of its own"
            )


def _not_a_directory(path: Path) -> str:
    """What a path that is not a directory is, for messages."""
    return "a regular file" if path.is_file() else "a special file (a device, pipe or socket)"


def lock_workdir(path: Path) -> int | None:
    """An exclusive lock on the work dir (``flock`` on the directory itself, so no file is left
    behind), held by the returned descriptor until it is closed; a one-line ValueError when
    another launch holds it, so two launches never write one work dir at once. None where the
    platform has no ``fcntl``."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:
        return None
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise ValueError(
            f"work dir {path} is in use by another launch; wait for it to end or use a new "
            "--workdir"
        ) from None
    return descriptor


def _probe_file(directory: Path) -> Path:
    probe = directory / f".write_probe_{os.getpid()}"
    with open(probe, "w", encoding="utf-8") as f:
        f.write("")
    return probe


def read_config(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The work dir's ``config.json``, None when absent; one-line ValueError when it is empty or
    not a JSON object (it names the file, and says what to do: without checkpoints, deleting it
    starts the run afresh; with them, nothing can check a resume against another copy)."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    problem = None
    if not text.strip():
        problem = "is empty"
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            problem = f"is corrupt ({error.msg} at line {error.lineno})"
        else:
            problem = None if isinstance(config, dict) else "is corrupt (not a JSON object)"
    if problem is None:
        return config
    if checkpoint_steps(Path(workdir)):
        advice = "restore it from a copy to resume the run's checkpoints, or use a new --workdir"
    else:
        advice = "delete it or use a new --workdir"
    raise ValueError(f"{path} {problem}; {advice}")


def checkpoint_steps(workdir: Path) -> list[int]:
    """Steps of the finalized checkpoints in a work dir, newest first, without opening Orbax
    (which would create directories)."""
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()), reverse=True)
