"""Figures of work dirs, drawn from `plasticity.analysis`'s series: what every trainer logs.

Each ``plot_*`` function returns a matplotlib Figure, or None when there is nothing to draw. How
they read is decided here once: one colour and line style per curve in every figure of a report,
y-limits from what a metric means (fractions from 0, at least 10% of the value for norms, a decade
on log axes: a NaP weight norm held constant is a flat line), plain tick labels (no hidden offset),
x-axes in frames (RL) or optimizer steps (continual) and dashed lines at game or task switches
(every k-th of more than `MAX_SWITCH_LINES`). Runs that train several task families (one
continual sweep of permuted digits and bit flipping) get a row of panels per family, each on its
own x-range.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import textwrap
from typing import Iterable, Sequence

import numpy as np

from plasticity.analysis import (
    TASK_METRICS,
    UNIT_FRACTIONS,
    Run,
    Series,
    curve_rows,
    curves,
    layers_of,
    metric_keys,
    number,
    series,
    task_family,
    x_axis,
)

# ---------------------------------------------------------------------------------------------
# How figures read: one colour per curve, honest y-limits, plain tick labels, switch markers.

# matplotlib's tab10, then the light tab20 shades: the colour of a curve is its position among
# the curves of the runs compared, so it is the same in every figure of one report.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip

X_LABELS = {"frames": "frames", "step": "optimizer steps", "task": "task"}

SWITCH_GID = "switch"  # matplotlib gid of switch markers (not data; `figure_contents` skips them)
INTERVENTION_GID = "intervention"  # the same for intervention markers
SWITCH_NAME_FONTSIZE = 6  # the game names written at the top of RL panels
# Switch lines a panel draws at most: 100 flip periods of bit flipping would cover its curves.
MAX_SWITCH_LINES = 24


# Line styles cycle with the curves too, so that curves that coincide (variants sharing their
# initial networks) stay visible and colour is not the only cue.
LINE_STYLES = ("-", "--", "-.", ":")


def curve_colors(runs: Sequence[Run]) -> dict[str, str]:
    """{curve label: colour}, by the curve's position in `curves(runs)`."""
    return {label: PALETTE[i % len(PALETTE)] for i, (_, _, label) in enumerate(curves(runs))}


def curve_styles(runs: Sequence[Run]) -> dict[str, str]:
    """{curve label: line style}, by the curve's position in `curves(runs)`."""
    return {
        label: LINE_STYLES[i % len(LINE_STYLES)] for i, (_, _, label) in enumerate(curves(runs))
    }


@dataclasses.dataclass(frozen=True)
class YScale:
    """How a metric's y-axis is bounded, so that its limits come from what the metric means
    rather than from the float noise of the data.

    Linear axes span at least ``min_span`` and ``min_relative_span`` × the largest |value|
    (a weight norm held at 45.02 reads as a flat line at 45.02, not as noise filling the panel),
    include 0 when ``include_zero`` (fractions, ranks), and stay inside [lower, upper] (plus a
    margin); ``fixed`` shows [lower, upper] exactly. Log axes span at least ``min_decades``.
    """

    log: bool = False
    lower: float | None = None
    upper: float | None = None
    fixed: bool = False
    include_zero: bool = False
    min_span: float = 0.0
    min_relative_span: float = 0.1
    min_decades: float = 1.0


LOG_METRICS = (
    "effective_lr",
    "update_ratio",
    "grad_norm",
    "hessian_top_eigenvalue",
    "hessian_top_eigenvalue_rel_change",
    "feature_condition_number",
    "feature_top_singular_value",  # grows 30-fold without a norm, barely with NaP
    "ntk_top_eigenvalue",
    "ntk_trace",
    "jacobian_norm",
)
RANK_METRICS = ("srank", "effective_rank", "ntk_effective_rank")


def y_scale(key: str) -> YScale:
    """The `YScale` of a metric key ('<metric>' or '<metric>/<layer>')."""
    metric = key.split("/")[0]
    if metric.endswith("accuracy"):
        return YScale(lower=0.0, upper=1.0, fixed=True)
    if metric.startswith("dormant_") or metric in UNIT_FRACTIONS:
        return YScale(lower=0.0, upper=1.0, include_zero=True, min_span=0.1)
    if metric == "ntk_offdiagonal_mass":  # a fraction of the kernel's mass
        return YScale(lower=0.0, upper=1.0, min_span=0.1)
    if metric in RANK_METRICS:
        return YScale(lower=0.0, include_zero=True, min_span=1.0)
    if metric in LOG_METRICS:
        return YScale(log=True)
    if metric == "human_normalized":  # 0: a random policy, 1: the human reference
        return YScale(include_zero=True, min_span=0.2)
    if metric.startswith("return"):
        return YScale(min_span=1.0)
    return YScale()


# What a metric's y-axis measures, where its name alone does not say (the panel's title names
# the metric or the layer).
Y_LABELS = {
    "weight_norm": "‖W‖ (Frobenius)",
    "effective_lr": "η / ‖W‖^p",
    "update_ratio": "‖ΔW‖ / ‖W‖",
    "param_norm": "‖θ‖",
    "grad_norm": "‖∇L‖",
    "hessian_top_eigenvalue": "top Hessian eigenvalue",
    "hessian_top_eigenvalue_rel_change": "relative change",
    "ntk_offdiagonal_mass": "fraction of mass",
    "human_normalized": "human-normalized score",
    "return_mean": "mean return",
}


def y_label(key: str) -> str:
    """The y-axis label of a metric key ('<metric>' or '<metric>/<layer>')."""
    metric = key.split("/")[0]
    if metric.startswith("dormant_") or metric in UNIT_FRACTIONS:
        return "fraction of units"
    if metric.endswith("accuracy"):
        return "accuracy"
    if metric.endswith("loss") or metric.endswith("loss_fresh"):
        return "loss"
    return Y_LABELS.get(metric, metric.replace("_", " "))


def y_limits(values: np.ndarray, scale: YScale) -> tuple[float, float] | None:
    """Limits of a y-axis showing `values` on `scale` (None when no value can be shown)."""
    if scale.fixed and scale.lower is not None and scale.upper is not None:
        margin = 0.02 * (scale.upper - scale.lower)
        return scale.lower - margin, scale.upper + margin
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if scale.log:
        values = values[values > 0]
        if not values.size:
            return None
        low, high = float(values.min()), float(values.max())
        ratio = 10.0**scale.min_decades
        if high / low < ratio:
            center = math.sqrt(low * high)
            low, high = center / math.sqrt(ratio), center * math.sqrt(ratio)
        return low / 1.15, high * 1.15
    if not values.size:
        return None
    data_low, data_high = float(values.min()), float(values.max())
    low, high = data_low, data_high
    if scale.include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    need = max(scale.min_span, scale.min_relative_span * max(abs(low), abs(high))) or 1.0
    if high - low < need:
        if scale.include_zero and data_low >= 0:
            low, high = 0.0, need
        elif scale.include_zero and data_high <= 0:
            low, high = -need, 0.0
        else:
            middle = (low + high) / 2
            low, high = middle - need / 2, middle + need / 2
    if scale.upper is not None and high > scale.upper:
        low, high = (
            max(scale.upper - max(need, high - low), low - (high - scale.upper)),
            scale.upper,
        )
    if scale.lower is not None and low < scale.lower:
        low, high = scale.lower, high + (scale.lower - low)
        if scale.upper is not None:
            high = min(high, scale.upper)
    margin = 0.05 * (high - low)
    return low - margin, high + margin


def plain_ticks(ax, axis: str = "y") -> None:
    """Tick labels that read as the values: no offset ('+4.278' above the axis) and no shared
    scientific multiplier on linear axes; log axes keep matplotlib's 10^k labels."""
    from matplotlib import ticker  # noqa: PLC0415

    target = ax.yaxis if axis == "y" else ax.xaxis
    if (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log":
        return
    formatter = ticker.ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    target.set_major_formatter(formatter)


def count_formatter():
    """Tick labels for frame and step counts in one unit per axis, chosen by its largest tick:
    0, 2,000, 4,000 or 0, 20k, 40k or 0, 1.5M, 3M (the unit is in every label, never a
    multiplier at the axis' end)."""
    from matplotlib import ticker  # noqa: PLC0415

    class CountFormatter(ticker.Formatter):
        ticks: tuple[float, ...] = ()

        def set_locs(self, locs) -> None:  # kept here: `Formatter.locs` goes in Matplotlib 3.13
            self.ticks = tuple(locs)

        def __call__(self, value: float, position=None) -> str:
            largest = max((abs(v) for v in self.ticks), default=abs(value))
            for above, size, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
                if largest >= above:
                    return f"{value / size:g}{suffix}" if value else "0"
            return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"

    return CountFormatter()


def style_axes(ax, key: str, values: Sequence[np.ndarray], x: str, scale: YScale | None = None):
    """y scale and limits (`y_scale`), plain tick labels, the axes' labels and a light grid."""
    scale = scale or y_scale(key)
    if scale.log:
        ax.set_yscale("log")
    limits = y_limits(np.concatenate([np.ravel(v) for v in values]), scale) if values else None
    if limits is not None:
        ax.set_ylim(*limits)
    plain_ticks(ax, "y")
    if key.split("/")[0] == "srank":  # a count of singular values: no ticks at halves
        from matplotlib import ticker  # noqa: PLC0415

        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel(y_label(key), fontsize=8)
    ax.set_xlabel(X_LABELS.get(x, x))
    if x in ("frames", "step"):
        ax.xaxis.set_major_formatter(count_formatter())
        if ax.get_xlim()[0] > 0 or ax.dataLim.x0 >= 0:
            ax.set_xlim(left=0)  # a run starts at frame / step 0
    ax.grid(alpha=0.3)


def switches(run: Run, variant: str | None, x: str) -> list[tuple[float, str | None]]:
    """(x, what starts there) of every game switch (RL, x = frames: 'switch' rows, else the
    config's schedule) or task switch (continual, x = step: the end steps of 'task' rows)."""
    if x == "frames":
        marks = {
            (float(r["frames"]), r.get("game"))
            for r in curve_rows(run, variant, "switch")
            if number(r.get("frames")) is not None
        }
        if not marks and isinstance(run.config.get("schedule"), list):
            start = 0.0
            for block in run.config["schedule"]:
                if not isinstance(block, dict) or number(block.get("frames")) is None:
                    return []
                if start > 0:
                    marks.add((start, block.get("game")))
                start += float(block["frames"])
        return sorted(marks, key=lambda mark: mark[0])
    if x == "step":
        ends = {
            number(r.get("step"))
            for r in curve_rows(run, variant, "task")
            if number(r.get("step")) is not None
        }
        return [(end, None) for end in sorted(ends)]
    return []


def first_game(run: Run, variant: str | None) -> str | None:
    """The game of a sequence's first block (RL), from its rows or its config's schedule."""
    for row in curve_rows(run, variant):
        if row.get("block") == 0 and row.get("game"):
            return str(row["game"])
    schedule = run.config.get("schedule")
    if isinstance(schedule, list) and schedule and isinstance(schedule[0], dict):
        return schedule[0].get("game")
    return None


def mark_switches(ax, marks: Sequence[tuple[str, list, float, str | None]], colors, x: str):
    """Vertical lines at the switches of every curve: (label, switches, last x drawn, first
    game). Curves that switch at the same x share grey dashed lines (RL: with the game played
    next written at the top); otherwise each curve's lines are drawn in its colour. Only
    switches inside the drawn range (before the last point) are marked."""
    kept = [
        (label, [(p, name) for p, name in found if p < end], first)
        for label, found, end, first in marks
    ]
    kept = [entry for entry in kept if entry[1]]
    if not kept:
        return
    kind = "game switch" if x == "frames" else "task switch"
    shared = len({tuple(p for p, _ in found) for _, found, _ in kept}) == 1
    stride = switch_stride(len(kept[0][1]) if shared else sum(len(f) for _, f, _ in kept))
    every = f"every {_ordinal(stride)}" if stride > 1 else ""
    if shared:
        label, found, first = kept[0]
        kind = f"{kind} ({every})" if every else kind
        for i, (position, _) in enumerate(found[stride - 1 :: stride]):
            ax.axvline(
                position,
                color="0.45",
                ls="--",
                lw=0.8,
                alpha=0.7,
                zorder=0,
                gid=SWITCH_GID,
                label=kind if i == 0 else "_" + kind,
            )
        if x == "frames" and len(found) <= 12:
            _add_headroom(ax, fraction=0.12 / 1.12)  # so that no curve runs through the names
            starts = [(0.0, first)] + list(found)
            for (position, name), room in zip(starts, _name_room(ax, starts)):
                if name and room >= 3:
                    if len(name) > room:  # the game before its family prefix
                        name = name.rsplit("/", 1)[-1]
                    name = name if len(name) <= room else name[: room - 1] + "…"
                    ax.text(
                        position,
                        0.99,
                        f" {name}",
                        transform=ax.get_xaxis_transform(),
                        ha="left",
                        va="top",
                        fontsize=SWITCH_NAME_FONTSIZE,
                        color="0.35",
                        gid=SWITCH_GID,
                    )
        return
    legend = f"{kind} (run colour, {every})" if every else f"{kind} (run colour)"
    for label, found, _ in kept:
        for i, (position, _) in enumerate(found[stride - 1 :: stride]):
            ax.axvline(
                position,
                color=colors[label],
                ls=":",
                lw=0.8,
                alpha=0.7,
                zorder=0,
                gid=SWITCH_GID,
                label=legend if i == 0 else "_" + kind,
            )


def switch_stride(count: int, most: int = MAX_SWITCH_LINES) -> int:
    """k such that drawing every k-th of ``count`` switch lines leaves at most ``most``: a panel
    of 50 permuted-digits tasks or 100 flip periods would otherwise be as dense with lines as
    with data (each task's point already marks where it ends)."""
    return max(1, math.ceil(count / most))


def _ordinal(n: int) -> str:
    """'2nd', '3rd', '4th', '11th', '21st'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _name_room(ax, starts: Sequence[tuple[float, str | None]]) -> list[int]:
    """How many characters of a block's game name fit between its start and the next block's
    (the panel's right edge for the last), so that the names of short blocks or long prefixed
    names ('minatar/space_invaders') are shortened rather than written over each other."""
    left, right = ax.get_xlim()
    char_width = 0.6 * SWITCH_NAME_FONTSIZE / 72 * ax.figure.dpi  # pixels, about
    pixels_per_x = ax.bbox.width / (right - left)
    ends = [position for position, _ in starts[1:]] + [right]
    return [
        int((end - position) * pixels_per_x / char_width) - 1
        for (position, _), end in zip(starts, ends)
    ]


def _add_headroom(ax, fraction: float) -> None:
    """Raises the panel's top so that the top ``fraction`` of its height is above what it
    showed (in the axis' own scale, linear or log)."""
    if fraction <= 0:
        return
    low, high = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(low, low * (high / low) ** (1.0 / (1.0 - fraction)))
    else:
        ax.set_ylim(low, low + (high - low) / (1.0 - fraction))


def interventions(run: Run, variant: str | None, x: str) -> list[tuple[float, float]]:
    """(first, last) x of a curve's interventions ('intervention' rows, all seeds): a point for
    one application, a span for a row summarizing several (continual: ``applications`` every
    ``every`` steps up to its step; RL: from ``first_frames`` to its frames)."""
    spans = set()
    for row in curve_rows(run, variant, "intervention"):
        at = number(row.get(x))
        if at is None:
            continue
        count, every = number(row.get("applications")), number(row.get("every"))
        first = at - (count - 1) * every if x == "step" and count and every else at
        if x == "frames" and number(row.get("first_frames")) is not None:
            first = min(at, number(row["first_frames"]))
        spans.add((first, at))
    return sorted(spans)


def mark_interventions(ax, marks: Sequence[tuple[str, list, float]], colors):
    """Where each curve intervened, in its colour, along the panel's top edge: a triangle per
    application, a bar over a summarized stretch. marks: (label, `interventions`, last x drawn);
    those after the last point drawn are left out, and each curve gets its own row so that
    curves intervening at the same x stay apart."""
    kept = [
        (label, [(a, min(b, end)) for a, b in found if a <= end]) for label, found, end in marks
    ]
    kept = [(label, found) for label, found in kept if found]
    if not kept:
        return
    # Below the game names when the panel shows them, with headroom so that no curve runs
    # through the marks.
    named = any(text.get_gid() == SWITCH_GID for text in ax.texts)
    top = 0.9 if named else 0.98
    step = min(0.035, 0.25 / max(len(kept) - 1, 1))  # many curves' rows share a quarter
    lowest = top - step * (len(kept) - 1)
    data_top = 1.0 / 1.12 if named else 1.0  # `mark_switches` left room for the names
    _add_headroom(ax, fraction=1.0 - (lowest - 0.03) / data_top)
    legend = "intervention" if len(kept) == 1 else "intervention (run colour)"
    for row, (label, found) in enumerate(kept):
        y, style = top - step * row, dict(color=colors[label], clip_on=False, zorder=3)
        points = [first for first, last in found if first == last]
        for first, last in (span for span in found if span[0] != span[1]):
            ax.plot(
                [first, last],
                [y, y],
                transform=ax.get_xaxis_transform(),
                lw=3,
                alpha=0.6,
                solid_capstyle="butt",
                gid=INTERVENTION_GID,
                label=legend,
                **style,
            )
            legend = "_" + legend.lstrip("_")
        if points:
            ax.plot(
                points,
                [y] * len(points),
                transform=ax.get_xaxis_transform(),
                ls="none",
                marker="v",
                ms=4,
                gid=INTERVENTION_GID,
                label=legend,
                **style,
            )
            legend = "_" + legend.lstrip("_")


# ---------------------------------------------------------------------------------------------
# Figures. Each function returns a matplotlib Figure, or None when there is nothing to draw.


def pyplot():
    """matplotlib.pyplot, imported on first use (reading work dirs needs no plotting stack).

    Without a display matplotlib picks the non-interactive Agg backend by itself.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def draw(ax, s: Series, label: str, color=None, style: str = "-") -> None:
    """The seed mean as a line (dots on its points when there are few) and, over several seeds,
    the min–max band (an error bar where the curve has one point, which a band cannot show)."""
    marker = "." if len(s.x) <= 40 else None
    line = ax.plot(s.x, s.mean, label=label, color=color, ls=style, lw=1.5, marker=marker, ms=4)
    if s.seeds > 1 and len(s.x) == 1:
        spread = [s.mean - s.low, s.high - s.mean]
        ax.errorbar(s.x, s.mean, yerr=spread, color=line[0].get_color(), capsize=3, lw=1)
    elif s.seeds > 1:
        ax.fill_between(s.x, s.low, s.high, color=line[0].get_color(), alpha=0.18, lw=0)


def positive_only(s: Series) -> Series:
    """``s`` with its values ≤ 0 left out (gaps), for a log axis: the update ratio is 0 before the
    first update, and a line drawn up from there would read as a jump."""
    keep = lambda values: np.where(values > 0, values, np.nan)  # noqa: E731
    return dataclasses.replace(s, mean=keep(s.mean), low=keep(s.low), high=keep(s.high))


# The narrowest figure: room for a figure title and a legend of four entries in a row.
MIN_FIGURE_WIDTH = 7.5
LEFT_MARGIN = 0.9  # inches left of the first column: tick labels like '-1.25' and the y label
# Inches `grid` leaves under its lowest panels for their tick labels and axis label.
LEGEND_TO_AXES = 0.5
# Inches kept between the legend and what the lowest panels draw below them.
LEGEND_GAP = 0.08
# Inches from the figure's top to its title (matplotlib's default, 2% of a 4-inch figure).
TITLE_FROM_TOP = 0.08


def grid(plt, panels: int, width: float = 4.2, height: float = 3.2, max_columns: int = 4):
    """A figure with `panels` axes in rows of at most `max_columns`, room below for a legend, at
    least `MIN_FIGURE_WIDTH` wide (a one-panel figure would cut its title and legend).

    A fixed layout (no tight/constrained layout pass), which halves the drawing time.
    """
    columns = min(panels, max_columns)
    rows = -(-panels // columns)
    legend_room = 0.6
    figure_width = max(width * columns, MIN_FIGURE_WIDTH)
    fig, axes = plt.subplots(
        rows, columns, figsize=(figure_width, height * rows + legend_room), squeeze=False
    )
    total = height * rows + legend_room
    fig.subplots_adjust(
        # At least LEFT_MARGIN inches: a 2-panel row's 7% cut the y label beside '-1.25'.
        left=max(0.07 if columns > 1 else 0.14, LEFT_MARGIN / figure_width),
        right=0.98,
        wspace=0.3,
        hspace=0.55,
        top=1 - 0.8 / total,  # the figure's title above the panels' titles
        bottom=(legend_room + LEGEND_TO_AXES) / total,
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
        place_legend(fig, handles, labels)
    # A fixed distance from the top, in inches: a figure grown for its legend keeps it there.
    fig.suptitle(title, y=1 - TITLE_FROM_TOP / fig.get_figheight())
    return fig


def place_legend(fig, handles, labels, max_columns: int = 4):
    """The figure's legend below its panels in as many columns (up to `max_columns`) as fit its
    width; where the rows then need more than the room `grid` left, the figure grows downwards
    and the panels keep their size. Long labels (several task families and variants) would
    otherwise run off both sides of a narrow figure."""
    renderer = fig.canvas.get_renderer()
    width = 0.98 * fig.get_figwidth() * fig.dpi
    draw = lambda texts, columns: fig.legend(  # noqa: E731
        handles,
        texts,
        loc="lower center",
        ncol=columns,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    for columns in range(min(len(labels), max_columns), 0, -1):
        legend = draw(labels, columns)
        drawn = legend.get_window_extent(renderer).width
        if drawn <= width:
            break
        legend.remove()
    else:  # one label wider than the figure even alone on its row: wrapped to fit
        longest = max(len(label) for label in labels)
        characters = max(12, int(longest * width / drawn) - 4)
        legend = draw([textwrap.fill(label, characters) for label in labels], 1)
    legend_top = legend.get_window_extent(renderer).y1 / fig.dpi  # its height and bottom pad
    params = fig.subplotpars
    height = fig.get_figheight()
    # Measured, not assumed: the lowest panels' tick labels, axis label and offset text.
    lowest = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible())
    room = lowest / fig.dpi - LEGEND_GAP
    if legend_top > room:
        grown = height + legend_top - room
        top, bottom = (1 - params.top) * height, params.bottom * height + legend_top - room
        fig.set_size_inches(fig.get_figwidth(), grown)
        fig.subplots_adjust(top=1 - top / grown, bottom=bottom / grown)
    return legend


def _panel_figure(
    runs: Sequence[Run],
    panels: Sequence[tuple[str, str]],
    event: str,
    title: str,
    log_keys: Iterable[str] = (),
    x: str | None = None,
):
    """One panel per (key, panel title); one line per curve, in the curve's colour; panels
    without data are dropped. x: the row field on the x-axis (default frames for RL, steps
    otherwise); switches of game or task are marked.

    Curves of several task families (`task_family`) get a row of panels per family, titled
    '<family>: <panel title>': one family's 15k steps beside another's 1M would be squeezed
    into the left edge of a shared panel, under the other's switch lines."""
    plt = pyplot()
    log_keys = set(log_keys)
    family_of = {label: task_family(run, variant) for run, variant, label in curves(runs)}
    families = list(dict.fromkeys(family_of.values()))
    drawn = []
    for family, (key, panel_title) in ((f, panel) for f in families for panel in panels):
        scale = y_scale(key)
        if key in log_keys or key.split("/")[0] in log_keys:
            scale = dataclasses.replace(scale, log=True)
        found = []
        for run, variant, label in curves(runs):
            axis = x or x_axis(run, event)
            s = series(run, key, event, variant, axis) if family_of[label] == family else None
            if s is not None:
                found.append((run, variant, label, axis, s))
        # A log axis shows positive values only: a panel of zeros (the update ratio before the
        # first update) would be an empty frame.
        if found and (not scale.log or any(np.any(s.mean > 0) for *_, s in found)):
            if len(families) > 1 and family is not None:
                panel_title = f"{family}: {panel_title}"
            drawn.append((key, panel_title, scale, found, family))
    if not drawn:
        return None
    columns, slots = family_rows([entry[-1] for entry in drawn])
    fig, cells = grid(plt, len(slots), max_columns=columns)
    for ax, slot in zip(cells, slots):
        ax.set_visible(slot is not None)
    axes = [ax for ax, slot in zip(cells, slots) if slot is not None]
    colors, styles = curve_colors(runs), curve_styles(runs)
    for ax, (key, panel_title, scale, found, _) in zip(axes, drawn):
        for _, _, label, _, s in found:
            draw(ax, positive_only(s) if scale.log else s, label, colors[label], styles[label])
        ax.set_title(panel_title, fontsize=10)
        axes_x = [axis for *_, axis, _ in found]
        shown = axes_x[0] if len(set(axes_x)) == 1 else " / ".join(dict.fromkeys(axes_x))
        style_axes(ax, key, [v for *_, s in found for v in (s.mean, s.low, s.high)], shown, scale)
        mark_switches(
            ax,
            [
                (label, switches(run, variant, axis), float(s.x[-1]), first_game(run, variant))
                for run, variant, label, axis, s in found
            ],
            colors,
            shown,
        )
        mark_interventions(
            ax,
            [
                (label, interventions(run, variant, axis), float(s.x[-1]))
                for run, variant, label, axis, s in found
            ],
            colors,
        )
    return finish(fig, axes, title)


def family_rows(
    families: Sequence[str | None], max_columns: int = 4
) -> tuple[int, list[int | None]]:
    """(columns, cells) of a grid of panels whose i-th belongs to ``families[i]`` (grouped):
    the panels' indices in order, each family's followed by empty cells (None) to the end of its
    row so that the next family starts a row of its own; all in one row where they fit."""
    if len(families) <= max_columns:
        return max(len(families), 1), list(range(len(families)))
    sizes = [len(list(group)) for _, group in itertools.groupby(families)]
    columns = min(max(sizes), max_columns)
    cells: list[int | None] = []
    for size in sizes:
        first = sum(cell is not None for cell in cells)
        cells += list(range(first, first + size)) + [None] * (-size % columns)
    return columns, cells


def plot_task_metrics(runs: Sequence[Run], keys: Sequence[str] = TASK_METRICS):
    """Per-task metrics (end-of-task and online accuracy, losses) against the step at the end
    of each task, on the same x-axis as the diagnostics."""
    present = [k for k in keys if k in metric_keys(runs, "task")]
    return _panel_figure(
        runs, [(k, k.replace("_", " ")) for k in present], "task", "Per-task performance"
    )


def plot_layer_metric(
    runs: Sequence[Run], metric: str, title: str | None = None, log: bool = False
):
    """'<metric>/<layer>' for every layer: one panel per layer, one line per curve (log scale
    when `log` or when the metric's `YScale` says so)."""
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


def figure_contents(fig) -> dict[str, dict[str, int]]:
    """{panel title: {what is drawn: number of finite points}} of a figure: curves (by legend
    label), heat maps (finite cells) and bar groups (finite bars); switch and intervention
    markers are not data.
    What tests and the report use to tell a figure with data from an empty one."""
    contents: dict[str, dict[str, int]] = {}
    for ax in fig.axes:
        if not ax.get_visible() or not ax.get_title():
            continue
        panel: dict[str, int] = {}
        for line in ax.get_lines():
            if line.get_gid() in (SWITCH_GID, INTERVENTION_GID) or line.get_label()[:1] == "_":
                continue  # switch and intervention markers, reference lines
            y = np.asarray(line.get_ydata(), np.float64)
            panel[line.get_label()] = int(np.isfinite(y).sum())
        for image in ax.get_images():
            panel["heat map"] = int(np.isfinite(np.ma.filled(image.get_array(), np.nan)).sum())
        for container in ax.containers:
            if not hasattr(container, "patches"):
                continue  # a one-point curve's error bar, counted with its line
            heights = [patch.get_height() for patch in container.patches]
            label = container.get_label() or "bars"
            panel[label] = int(np.isfinite(np.asarray(heights, np.float64)).sum())
        contents[ax.get_title()] = panel
    return contents


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
