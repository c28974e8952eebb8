"""Reading work dirs and plotting their plasticity diagnostics (what the diagnostics notebook calls).

A work dir (`plasticity.workdir`) holds ``config.json`` and ``metrics.jsonl``: one JSON object per
line with an ``event`` ('task', 'diagnostics', and for RL 'train' and 'eval'), ``step``, ``seed``,
``variant``, ``task`` and, for RL, ``frames``, ``game`` and ``visit``. Diagnostics rows carry flat
keys '<metric>/<layer>' and '<metric>' (`plasticity.diagnostics`).

Everything here is plain json + NumPy + matplotlib and tolerates what a real run leaves behind:
missing files or keys, ``null`` values (non-finite numbers), a truncated last line. A *curve* is
one (work dir, variant) pair; curves are averaged over seeds (mean, with the min–max band) and
compared side by side in every figure.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"

TASK_METRICS = ("end_accuracy", "online_accuracy", "end_test_accuracy", "end_loss", "online_loss")
UNIT_FRACTIONS = ("dead", "linearized", "dohare_inactive")
CURVATURE_METRICS = (
    "hessian_top_eigenvalue",
    "feature_top_singular_value",
    "feature_condition_number",
    "ntk_top_eigenvalue",
    "ntk_effective_rank",
    "ntk_offdiagonal_mass",
    "probe_loss",
    "probe_loss_fresh",
    "param_norm",
    "grad_norm",
)


@dataclasses.dataclass
class Run:
    """One work dir: a label, its config (may be empty) and its metrics rows."""

    name: str
    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    skipped_lines: int = 0


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
    return Run(name or workdir.name, workdir, config, rows, skipped)


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Reads several work dirs, giving each a unique label (its name, then its parent's too)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("No work dirs given: set `workdirs` to a list of paths.")
    names = [p.name if p.is_dir() else p.parent.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{n}" for p, n in zip(paths, names)]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return [load_run(p, n) for p, n in zip(paths, names)]


def events(run: Run, event: str) -> list[dict[str, Any]]:
    """Rows of one event type (rows without 'event' count as 'diagnostics' if they have metrics)."""
    return [row for row in run.rows if row.get("event", "diagnostics") == event]


def variants(run: Run) -> list[str | None]:
    """The variants of a run, in order of first appearance ([None] when rows name none)."""
    seen: list[str | None] = []
    for row in run.rows:
        variant = row.get("variant")
        if variant not in seen:
            seen.append(variant)
    return seen or [None]


def curves(runs: Sequence[Run]) -> list[tuple[Run, str | None, str]]:
    """(run, variant, label) for every curve to draw; labels name the run when there are several
    and the variant when rows name one."""
    out = []
    for run in runs:
        for variant in variants(run):
            if variant is None:
                label = run.name
            else:
                label = variant if len(runs) == 1 else f"{run.name}: {variant}"
            out.append((run, variant, label))
    return out


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
    """The seed-aggregated series of `key` in `event` rows of `variant`; None when absent."""
    x = x or x_axis(run, event)
    by_x: dict[float, list[float]] = {}
    seeds = set()
    for row in events(run, event):
        if row.get("variant") != variant:
            continue
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


# ---------------------------------------------------------------------------------------------
# Figures. Each function returns a matplotlib Figure, or None when there is nothing to draw.


def pyplot():
    """matplotlib.pyplot, imported on first use (reading work dirs needs no plotting stack).

    Without a display matplotlib picks the non-interactive Agg backend by itself.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def draw(ax, s: Series, label: str, color=None) -> None:
    line = ax.plot(s.x, s.mean, label=label, color=color, lw=1.5)[0]
    if s.seeds > 1:
        ax.fill_between(s.x, s.low, s.high, color=line.get_color(), alpha=0.2, lw=0)


def grid(plt, panels: int, width: float = 4.2, height: float = 3.2, max_columns: int = 4):
    """A figure with `panels` axes in rows of at most `max_columns`, room below for a legend.

    A fixed layout (no tight/constrained layout pass), which halves the drawing time.
    """
    columns = min(panels, max_columns)
    rows = -(-panels // columns)
    legend_room = 0.6
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows + legend_room), squeeze=False
    )
    total = height * rows + legend_room
    fig.subplots_adjust(
        left=0.07 if columns > 1 else 0.14,
        right=0.98,
        wspace=0.3,
        hspace=0.55,
        top=1 - 0.55 / total,
        bottom=(legend_room + 0.45) / total,
    )
    flat = axes.ravel()
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def finish(fig, axes, title: str):
    """One legend for the whole figure (below the panels) and a title."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(len(labels), 4),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )
    fig.suptitle(title)
    return fig


def _panel_figure(
    runs: Sequence[Run],
    panels: Sequence[tuple[str, str]],
    event: str,
    title: str,
    log_keys: Iterable[str] = (),
    x: str | None = None,
):
    """One panel per (key, panel title); one line per curve; panels without data are dropped."""
    plt = pyplot()
    drawn = []
    for key, panel_title in panels:
        found = [
            (label, series(run, key, event, variant, x)) for run, variant, label in curves(runs)
        ]
        found = [(label, s) for label, s in found if s is not None]
        if found:
            drawn.append((key, panel_title, found))
    if not drawn:
        return None
    fig, axes = grid(plt, len(drawn))
    log_keys = set(log_keys)
    colors = {label: f"C{i}" for i, (_, _, label) in enumerate(curves(runs))}
    for ax, (key, panel_title, found) in zip(axes, drawn):
        for label, s in found:
            draw(ax, s, label, colors[label])
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(x or x_axis(runs[0], event))
        if x == "task":
            ax.xaxis.get_major_locator().set_params(integer=True)
        if key in log_keys or key.split("/")[0] in log_keys:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    return finish(fig, axes, title)


def plot_task_metrics(runs: Sequence[Run], keys: Sequence[str] = TASK_METRICS):
    """Per-task metrics (end-of-task and online accuracy, losses) against the task index."""
    present = [k for k in keys if k in metric_keys(runs, "task")]
    return _panel_figure(
        runs, [(k, k.replace("_", " ")) for k in present], "task", "Per-task performance", x="task"
    )


def plot_layer_metric(
    runs: Sequence[Run], metric: str, title: str | None = None, log: bool = False
):
    """'<metric>/<layer>' for every layer: one panel per layer, one line per curve."""
    layers = layers_of(runs, metric)
    panels = [(f"{metric}/{layer}", layer) for layer in layers]
    return _panel_figure(
        runs, panels, "diagnostics", title or metric.replace("_", " "), [metric] if log else ()
    )


def plot_metrics(
    runs: Sequence[Run], keys: Sequence[str], title: str, log_keys: Iterable[str] = ()
):
    """Network-level metrics (keys without a layer): one panel per key present."""
    present = set(metric_keys(runs))
    return _panel_figure(
        runs,
        [(k, k.replace("_", " ")) for k in keys if k in present],
        "diagnostics",
        title,
        log_keys,
    )


def unit_fraction_keys(runs: Sequence[Run]) -> list[str]:
    """'dormant_<τ>' totals (in τ order), then dead / linearized / Dohare-inactive totals."""
    present = metric_keys(runs)
    dormant = [k for k in present if k.startswith("dormant_") and "/" not in k]
    dormant.sort(key=lambda k: float(k.split("_", 1)[1]) if _is_float(k.split("_", 1)[1]) else 0)
    return dormant + [k for k in UNIT_FRACTIONS if k in present]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def summary(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per curve: seeds, tasks, last step and the final mean of key metrics (a table)."""
    table = []
    for run, variant, label in curves(runs):
        task_rows = [r for r in events(run, "task") if r.get("variant") == variant]
        entry: dict[str, Any] = {
            "curve": label,
            "seeds": len({r.get("seed") for r in run.rows if r.get("variant") == variant}),
            "tasks": len({r.get("task") for r in task_rows}),
            "last_step": max((r.get("step", 0) or 0 for r in run.rows), default=0),
        }
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
