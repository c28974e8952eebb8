"""Reading work dirs and plotting their plasticity diagnostics (what ``scripts.report`` and the
diagnostics notebook call, through `benchmarks.analysis` and `benchmarks.report`).

A work dir (`plasticity.workdir`) holds ``config.json`` and ``metrics.jsonl``: one JSON object per
line with an ``event`` ('task', 'diagnostics', 'intervention' where one ran, and for RL 'train',
'eval' and 'switch'), ``step``, ``seed``, ``variant``, ``task`` and, for RL, ``frames``, ``game``,
``block`` and ``visit``.
Diagnostics rows carry flat keys '<metric>/<layer>' and '<metric>' (`plasticity.diagnostics`).
`load_runs` also takes a directory of per-variant work dirs (an RL launch with variants) and reads
Atari's ``seed_<s>`` work dirs as one run (`expand_workdirs`).

Everything here is plain json + NumPy + matplotlib and tolerates what a real run leaves behind:
missing files or keys, ``null`` values (non-finite numbers), a truncated last line. A *curve* is one
(work dir, variant) pair, each grid point of a continual sweep apart (`Run.curve_of`); curves are
averaged over seeds (mean, with the min–max band) and compared side by side in every figure, each in
one colour and line style throughout (`curve_colors`). Figures read as the values: x-axes in frames
(RL) or optimizer steps (continual) from 0 with game / task switches marked (`switches`), tick
labels without offsets (`plain_ticks`), y-limits from what a metric means rather than from its float
noise (`YScale`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"

TASK_METRICS = ("end_accuracy", "online_accuracy", "end_test_accuracy", "end_loss", "online_loss")
UNIT_FRACTIONS = ("dead", "linearized", "dohare_inactive")
CURVATURE_METRICS = (
    "hessian_top_eigenvalue",
    "hessian_top_eigenvalue_rel_change",
    "feature_top_singular_value",
    "feature_condition_number",
    "ntk_top_eigenvalue",
    "ntk_trace",
    "ntk_effective_rank",
    "ntk_offdiagonal_mass",
    "jacobian_norm",
    "probe_loss",
    "probe_loss_fresh",
    "param_norm",
    "grad_norm",
)


# A continual sweep's grid of continuous hyper-parameters, compiled into one program: every row
# carries its point's values (`benchmarks.continual_config.GRID_KEYS`).
GRID_FIELDS = ("learning_rate", "weight_decay", "l2", "l2_init")


@dataclasses.dataclass
class Run:
    """One work dir: a label, its config (may be empty) and its metrics rows."""

    name: str
    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    skipped_lines: int = 0
    workdirs: list[Path] = dataclasses.field(default_factory=list)  # seeds' work dirs, or [path]

    @functools.cached_property  # read for every row; the config does not change after loading
    def swept(self) -> tuple[str, ...]:
        """The grid fields the config sweeps over more than one value: runs that differ in one
        are different curves, not seeds of one."""
        grid = self.config.get("grid")
        if not isinstance(grid, dict):
            return ()
        return tuple(
            field
            for field in GRID_FIELDS
            if isinstance(grid.get(field), list) and len(grid[field]) > 1
        )

    def curve_of(self, row: dict[str, Any]) -> str | None:
        """The curve a row belongs to: its variant, followed by its grid point where the config
        sweeps one ('layernorm, l2=0.0001')."""
        variant, swept = row.get("variant"), self.swept
        if not swept:
            return variant
        point = ", ".join(f"{field}={_grid_value(row.get(field))}" for field in swept)
        return point if variant is None else f"{variant}, {point}"


def _grid_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def variant_of(run: Run, curve: str | None) -> str | None:
    """The variant a curve of `run` draws (its name without the grid point)."""
    for row in run.rows:
        if run.curve_of(row) == curve:
            return row.get("variant")
    return curve


def grid_point(run: Run, curve: str | None) -> dict[str, Any]:
    """The grid values of a curve of `run` ({} where the config sweeps none)."""
    for row in run.rows:
        if run.swept and run.curve_of(row) == curve:
            return {field: row.get(field) for field in run.swept}
    return {}


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of a metrics.jsonl file; lines that are not JSON objects are counted and skipped."""
    if not path.exists():
        return [], 0
    rows, skipped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                skipped += 1
    return rows, skipped


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Reads a work dir (or a metrics.jsonl file). A missing path is a one-line ValueError."""
    path = Path(path)
    if path.is_file():
        metrics, workdir = path, path.parent
    elif path.is_dir():
        metrics, workdir = path / METRICS_FILE, path
    else:
        raise ValueError(f"No work dir or metrics file at {path}.")
    config: dict[str, Any] = {}
    if (workdir / CONFIG_FILE).exists():
        try:
            with open(workdir / CONFIG_FILE, encoding="utf-8") as f:
                loaded = json.load(f)
            config = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            config = {}
    rows, skipped = _read_rows(metrics)
    return Run(name or workdir.name, workdir, config, rows, skipped, [workdir])


def is_workdir(path: Path) -> bool:
    """A directory holding a run's files (metrics.jsonl or config.json)."""
    return path.is_dir() and ((path / METRICS_FILE).is_file() or (path / CONFIG_FILE).is_file())


_SEED_DIR = re.compile(r"seed_\d+")


def _ordered_children(parent: Path) -> list[Path]:
    """Sub-directories of `parent` that are work dirs or hold some, in the sweep's
    ``variant_order`` when their configs name one (launch order), else by name."""
    children = sorted(
        (c for c in parent.iterdir() if c.is_dir() and (is_workdir(c) or _holds_workdirs(c))),
        key=lambda c: c.name,
    )
    order: list[str] = []
    for child in children:
        config = child / CONFIG_FILE
        if not config.is_file():
            seeds = [c for c in child.iterdir() if is_workdir(c)]
            config = seeds[0] / CONFIG_FILE if seeds else config
        try:
            listed = json.loads(config.read_text(encoding="utf-8")).get("variant_order") or []
        except (OSError, json.JSONDecodeError, AttributeError):
            listed = []
        order += [v for v in listed if isinstance(v, str) and v not in order]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(children, key=lambda c: (rank.get(c.name, len(rank)), c.name))


def _holds_workdirs(path: Path) -> bool:
    return path.is_dir() and any(is_workdir(c) for c in path.iterdir() if c.is_dir())


def expand_workdirs(paths: str | Path | Iterable[str | Path]) -> list[tuple[str, list[Path]]]:
    """(name, work dirs) of every run under `paths`, in order.

    A path is a work dir (its name), a metrics.jsonl file (its work dir), or a directory of work
    dirs, expanded one level (two for Atari's ``<variant>/seed_<s>``): the per-variant work dirs an
    RL launch writes (``<workdir>/<variant>``), named by their variant. Work dirs named
    ``seed_<s>`` under one directory are the seeds of one run (their rows carry ``seed``) and
    load as one run named after that directory. Anything else is a one-line ValueError.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("No work dirs given: set `workdirs` to a list of paths.")
    groups: list[tuple[str, list[Path]]] = []

    def add(directory: Path) -> None:
        if is_workdir(directory):
            groups.append((directory.name, [directory]))
            return
        children = _ordered_children(directory)
        seeds = [c for c in children if _SEED_DIR.fullmatch(c.name) and is_workdir(c)]
        if seeds and len(seeds) == len(children):
            seeds.sort(key=lambda c: int(c.name.split("_")[1]))
            groups.append((directory.name, seeds))
            return
        for child in children:
            if is_workdir(child):
                groups.append((child.name, [child]))
            else:
                add(child)

    for path in paths:
        if path.is_file():
            if path.name != METRICS_FILE:
                raise ValueError(f"{path} is not a work dir or a {METRICS_FILE} file.")
            groups.append((path.parent.name, [path]))
        elif not path.exists():
            raise ValueError(f"No work dir or metrics file at {path}.")
        elif (
            is_workdir(path)
            or _holds_workdirs(path)
            or any(_holds_workdirs(c) for c in path.iterdir() if c.is_dir())
        ):
            add(path)
        else:
            raise ValueError(
                f"{path} is not a work dir: it holds no {METRICS_FILE} or {CONFIG_FILE}, "
                "and no work dirs inside."
            )
    return groups


def _home(members: list[Path]) -> Path:
    """The directory a run's files are in (for seed work dirs, the directory above them)."""
    if len(members) > 1:
        return members[0].parent
    return members[0] if members[0].is_dir() else members[0].parent


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """Reads the runs under `paths` (`expand_workdirs`), giving each a unique label (its name,
    then its parent's too). The seeds of one run in several work dirs load as one run."""
    groups = expand_workdirs(paths)
    homes = [_home(members) for _, members in groups]
    names = [name for name, _ in groups]
    if len(set(names)) < len(names):
        names = [f"{home.resolve().parent.name}/{n}" for home, n in zip(homes, names)]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    runs = []
    for name, home, (_, members) in zip(names, homes, groups):
        loaded = [load_run(p, name) for p in members]
        run = loaded[0]
        for other in loaded[1:]:
            run.rows.extend(other.rows)
            run.skipped_lines += other.skipped_lines
            run.workdirs += other.workdirs
        run.path = home
        runs.append(run)
    return runs


def events(run: Run, event: str) -> list[dict[str, Any]]:
    """Rows of one event type (rows without 'event' count as 'diagnostics' if they have metrics)."""
    return [row for row in run.rows if row.get("event", "diagnostics") == event]


def variants(run: Run) -> list[str | None]:
    """The curves of a run (`Run.curve_of`: its variants, each grid point of a sweep apart), in
    order of first appearance ([None] when rows name none)."""
    seen: list[str | None] = []
    for row in run.rows:
        if any(row.get(field) is None for field in run.swept):
            continue  # a row of no grid point (a resume): no curve of its own
        curve = run.curve_of(row)
        if curve not in seen:
            seen.append(curve)
    return seen or [None]


def curves(runs: Sequence[Run]) -> list[tuple[Run, str | None, str]]:
    """(run, curve, label) for every curve to draw (`variants`); labels name the run when there
    are several and the curve when rows name one."""
    out = []
    for run in runs:
        for curve in variants(run):
            if curve is None:
                label = run.name
            else:
                label = curve if len(runs) == 1 else f"{run.name}: {curve}"
            out.append((run, curve, label))
    return out


def curve_rows(run: Run, curve: str | None, event: str | None = None) -> list[dict[str, Any]]:
    """The rows of one curve of `run` (of one event when given)."""
    rows = run.rows if event is None else events(run, event)
    return [row for row in rows if run.curve_of(row) == curve]


def task_family(run: Run, curve: str | None) -> str | None:
    """The task sequence a curve trains on: its rows' ``task_name`` (one continual sweep may
    train several, e.g. permuted digits for 15k steps and bit flipping for 1M), None where its
    rows name none (RL runs)."""
    for row in run.rows:
        if row.get("task_name") is not None and run.curve_of(row) == curve:
            return str(row["task_name"])
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_keys(runs: Sequence[Run], event: str = "diagnostics") -> list[str]:
    """Sorted keys with a numeric value in some row of `event`."""
    keys = set()
    for run in runs:
        for row in events(run, event):
            keys.update(k for k, v in row.items() if number(v) is not None)
    return sorted(keys)


def layers_of(runs: Sequence[Run], metric: str) -> list[str]:
    """Layers with a '<metric>/<layer>' key, in first-seen order (network order for one run)."""
    seen: list[str] = []
    prefix = metric + "/"
    for run in runs:
        for row in events(run, "diagnostics"):
            for key, value in row.items():
                if key.startswith(prefix) and number(value) is not None:
                    layer = key[len(prefix) :]
                    if layer not in seen:
                        seen.append(layer)
    return seen


def x_axis(run: Run, event: str = "diagnostics") -> str:
    """'frames' for RL runs (rows carry frames), else 'step'."""
    rows = events(run, event)
    return "frames" if rows and all("frames" in row for row in rows) else "step"


@dataclasses.dataclass
class Series:
    """A metric against x, over seeds: mean and the min–max band."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def series(
    run: Run, key: str, event: str = "diagnostics", variant: str | None = None, x: str | None = None
) -> Series | None:
    """The seed-aggregated series of `key` in `event` rows of the curve `variant` (`curves`);
    None when absent."""
    x = x or x_axis(run, event)
    by_x: dict[float, list[float]] = {}
    seeds = set()
    for row in curve_rows(run, variant, event):
        value, position = number(row.get(key)), number(row.get(x))
        if value is None or position is None:
            continue
        by_x.setdefault(position, []).append(value)
        seeds.add(row.get("seed"))
    if not by_x:
        return None
    xs = np.array(sorted(by_x))
    values = [np.asarray(by_x[p]) for p in xs]
    return Series(
        xs,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
        len(seeds),
    )


def summary(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per curve: how many seeds, tasks (continual runs), how far it got (frames for RL
    runs, steps otherwise) and the final mean of key metrics (a table)."""
    table = []
    for run, variant, label in curves(runs):
        own = curve_rows(run, variant)
        task_rows = [r for r in own if r.get("event") == "task"]
        x = "frames" if own and all("frames" in r for r in own) else "step"  # any event
        entry: dict[str, Any] = {
            "curve": label,
            "seed count": len({r["seed"] for r in own if r.get("seed") is not None}),
        }
        if task_rows:
            entry["tasks"] = len({r.get("task") for r in task_rows})
        entry[f"last {x}"] = int(max((number(r.get(x)) or 0 for r in own), default=0))
        for key, event in (
            ("end_accuracy", "task"),
            ("param_norm", "diagnostics"),
            ("param_norm", "task"),
            ("dormant_0.025", "diagnostics"),
        ):
            s = series(run, key, event, variant, x="task" if event == "task" else None)
            if s is not None and f"final {key}" not in entry:
                entry[f"final {key}"] = float(s.mean[-1])
        table.append(entry)
    return table
