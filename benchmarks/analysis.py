"""Figures of work dirs: the plasticity diagnostics of every trainer and the RL evaluation views.

`plasticity.analysis` reads work dirs and draws what any trainer logs (task metrics, per-layer
diagnostics); this module adds what only game sequences have (evaluation returns per game, the
evaluation matrix with visit scores against the fresh-network references) and the registry of
standard figures that `scripts.report` and the diagnostics notebook draw (`FIGURES`,
`make_figures`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from plasticity.analysis import (
    CURVATURE_METRICS,
    Run,
    curve_rows,
    curves,
    events,
    metric_keys,
    number,
    series,
    x_axis,
)
from plasticity.figures import (
    MAX_SWITCH_LINES,
    Y_LABELS,
    curve_colors,
    curve_styles,
    draw,
    figure_contents,
    finish,
    first_game,
    grid,
    interventions,
    mark_interventions,
    mark_switches,
    plain_ticks,
    plot_layer_metric,
    plot_metrics,
    plot_task_metrics,
    pyplot,
    style_axes,
    switches,
    unit_fraction_keys,
    y_limits,
    y_scale,
)


ENVIRONMENT_NAMES = {"atari": "Atari", "minatar": "MinAtar"}


def environment(run: Run) -> str:
    """'atari' or 'minatar' for an RL run (only Atari's env section has ``noop_max``), '' for a
    continual one or a run without its config."""
    env = run.config.get("env")
    if not isinstance(env, dict):
        return ""
    return "atari" if "noop_max" in env else "minatar"


def with_distinct_games(runs: Sequence[Run]) -> list[Run]:
    """`runs`, each game named after its environment ('MinAtar breakout') when they mix Atari
    and MinAtar runs, whose games share names (one panel or colour range would pool them);
    unchanged otherwise."""
    if len({environment(run) for run in runs} - {""}) < 2:
        return list(runs)

    def renamed(run: Run) -> Run:
        prefix = ENVIRONMENT_NAMES[environment(run)]
        named = lambda row: {
            key: f"{prefix} {row[key]}" for key in ("game", "trained_game") if row.get(key)
        }
        return dataclasses.replace(run, rows=[{**row, **named(row)} for row in run.rows])

    return [renamed(run) if environment(run) else run for run in runs]


def plot_eval_returns(runs: Sequence[Run]):
    """RL: evaluation return (human-normalized when every run has it) per game against frames,
    with the game switches marked."""
    plt = pyplot()
    runs = with_distinct_games(runs)
    games = []
    for run in runs:
        for row in events(run, "eval"):
            if row.get("game") is not None and row["game"] not in games:
                games.append(row["game"])
    if not games:
        return None
    key = matrix_key(runs)
    fig, axes = grid(plt, len(games))
    colors, styles = curve_colors(runs), curve_styles(runs)
    for ax, game in zip(axes, games):
        drawn, marks, intervened = [], [], []
        for run, variant, label in curves(runs):
            subset = dataclasses.replace(
                run, rows=[r for r in events(run, "eval") if r.get("game") == game]
            )
            s = series(subset, key, "eval", variant, x="frames")
            if s is not None:
                draw(ax, s, label, colors[label], styles[label])
                drawn += [s.mean, s.low, s.high]
                marks.append(
                    (
                        label,
                        switches(run, variant, "frames"),
                        float(s.x[-1]),
                        first_game(run, variant),
                    )
                )
                intervened.append((label, interventions(run, variant, "frames"), float(s.x[-1])))
        ax.set_title(str(game), fontsize=10)
        style_axes(ax, key, drawn, "frames")
        mark_switches(ax, marks, colors, "frames")
        mark_interventions(ax, intervened, colors)
    return finish(fig, axes, f"Evaluation per game: {MATRIX_KEY_LABELS[key]}")


MATRIX_KEY_LABELS = {key: Y_LABELS[key] for key in ("human_normalized", "return_mean")}


def _matrix_rows(run: Run, variant: str | None) -> list[dict[str, Any]]:
    """Evaluation-matrix rows: 'eval' rows taken after a block (progress evaluations inside a
    block carry ``end_of_block`` False and are left out)."""
    return [r for r in curve_rows(run, variant, "eval") if r.get("end_of_block", True) is not False]


def matrix_key(runs: Run | Sequence[Run]) -> str:
    """'human_normalized' when every evaluation row of every run has one (Atari games with
    reference scores: comparable across games and runs), else 'return_mean'."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    rows = [r for run in runs for r in events(run, "eval")]
    if rows and all(number(r.get("human_normalized")) is not None for r in rows):
        return "human_normalized"
    return "return_mean"


def evaluation_matrix(
    run: Run, variant: str | None = None, key: str = "return_mean"
) -> tuple[list[str], list[int], np.ndarray] | None:
    """RL: (games, blocks, matrix) with matrix[b, g] the mean `key` over seeds of game g
    evaluated after block b (rows carry 'block'; NaN where a game was not evaluated).

    Progress evaluations inside a block (``end_of_block`` False) are left out."""
    rows = _matrix_rows(run, variant)
    rows = [r for r in rows if r.get("game") is not None and number(r.get(key)) is not None]
    if not rows or not all("block" in r for r in rows):
        return None
    games = list(dict.fromkeys(r["game"] for r in rows))
    blocks = sorted({int(r["block"]) for r in rows})
    cells: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        cell = (blocks.index(int(r["block"])), games.index(r["game"]))
        cells.setdefault(cell, []).append(float(r[key]))
    matrix = np.full((len(blocks), len(games)), np.nan)
    for (b, g), values in cells.items():
        matrix[b, g] = np.mean(values)
    return games, blocks, matrix


def visit_scores(
    run: Run, variant: str | None = None, key: str = "return_mean"
) -> dict[str, dict[str, float]]:
    """RL sequences: {game: {'visit_1': ..., 'visit_2': ..., 'fresh': ...}}, seed means of `key`.

    ``visit_k`` is the score of a game right after its k-th block (matrix rows whose ``game`` is
    their ``trained_game``); ``fresh`` that of the fresh-network reference ('eval_fresh' rows), a
    new network trained on the game alone for one block. A revisit (or a later game's first
    visit) well below ``fresh`` is loss of plasticity; a score falling between visits is
    forgetting.
    """
    cells: dict[str, dict[str, list[float]]] = {}
    for r in _matrix_rows(run, variant):
        value = number(r.get(key))
        if (
            value is not None
            and r.get("game") is not None
            and r.get("game") == r.get("trained_game")
        ):
            column = f"visit_{int(r.get('visit', 1))}"
            cells.setdefault(r["game"], {}).setdefault(column, []).append(value)
    for r in curve_rows(run, variant, "eval_fresh"):
        value = number(r.get(key))
        if value is not None and r.get("game") is not None:
            cells.setdefault(r["game"], {}).setdefault("fresh", []).append(value)

    def order(column: str) -> tuple[int, int]:
        return (1, 0) if column == "fresh" else (0, int(column.split("_")[1]))

    return {
        game: {c: float(np.mean(columns[c])) for c in sorted(columns, key=order)}
        for game, columns in cells.items()
    }


def _matrix_colours(found, key: str):
    """(colour value of a cell, norm, colour map, colour-bar label) shared by every run's heat
    map, so that one colour means one score in all of them.

    Human-normalized scores (0: a random policy, 1: the human reference) share one diverging
    scale centred on 0, from −L to L with L = max(1, largest |score|): a run near random play
    reads as white whatever its float noise, not as a full-range pattern. Raw returns are not
    comparable across games, so each game's column is scaled to the game's own range over every
    run and the fresh references, from min(0, lowest) (0) to max(0, highest) (1), one sequential
    scale; every cell is annotated with its score.
    """
    from matplotlib import colors as mcolors  # noqa: PLC0415

    if key == "human_normalized":
        values = [m for *_, (_, _, m), _, _ in found]
        largest = max([1.0] + [float(np.nanmax(np.abs(m))) for m in values if np.isfinite(m).any()])
        norm = mcolors.Normalize(-largest, largest)
        label = "human-normalized score (0: random, 1: human)"
        return (lambda game, value: value), norm, "RdBu", label
    ranges: dict[str, list[float]] = {}
    for _, _, (games, _, matrix), visits, _ in found:
        for g, game in enumerate(games):
            column = [float(v) for v in matrix[:, g] if np.isfinite(v)]
            column += [v for v in visits.get(game, {}).values() if np.isfinite(v)]
            ranges.setdefault(game, [0.0, 0.0])
            ranges[game] = [min([ranges[game][0], *column]), max([ranges[game][1], *column])]

    def position(game: str, value: float) -> float:
        low, high = ranges[game]
        return (value - low) / (high - low) if high > low else 0.0

    norm = mcolors.Normalize(0.0, 1.0)
    label = "return within the game's range over all runs\n(0: min(0, lowest), 1: max(0, highest))"
    return position, norm, "viridis", label


def plot_evaluation_matrices(runs: Sequence[Run]):
    """RL: per curve, the evaluation matrix (block × game) as an annotated heat map on a colour
    scale shared by all runs (`_matrix_colours`), and for sequences the score after each visit
    of a game next to the fresh-network reference's, in the curve's colour."""
    plt = pyplot()
    runs = with_distinct_games(runs)
    key = matrix_key(runs)
    colors = curve_colors(runs)
    found = []
    for run, variant, label in curves(runs):
        matrix = evaluation_matrix(run, variant, key)
        if matrix is not None:
            trained = {
                int(r["block"]): r["trained_game"]
                for r in _matrix_rows(run, variant)
                if "block" in r and r.get("trained_game") is not None
            }
            found.append((label, key, matrix, visit_scores(run, variant, key), trained))
    if not found:
        return None
    position, norm, cmap_name, bar_label = _matrix_colours(found, key)
    cmap = plt.get_cmap(cmap_name).with_extremes(bad="0.93")
    panels = sum(2 if visits else 1 for *_, visits, _ in found)
    fig, axes = grid(plt, panels, width=5.2, height=4.0, max_columns=2)
    fig.subplots_adjust(left=0.2, wspace=0.55)  # room for the "block: game" row labels
    axes = iter(axes)
    image = None
    bar_values = [v for *_, visits, _ in found for game in visits.values() for v in game.values()]
    bar_limits = y_limits(np.asarray(bar_values, np.float64), y_scale(key))  # shared by all runs
    for label, key, (games, blocks, matrix), visits, trained in found:
        ax = next(axes)
        shown = np.full(matrix.shape, np.nan)
        for (b, g), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                shown[b, g] = position(games[g], float(value))
        image = ax.imshow(shown, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        if matrix.size <= 200:
            for (b, g), value in np.ndenumerate(matrix):
                if not np.isfinite(value):
                    text, color = "not played yet", "0.45"
                else:
                    red, green, blue, _ = cmap(norm(shown[b, g]))
                    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                    text, color = f"{value:.3g}", "w" if dark else "k"
                ax.text(g, b, text, ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(len(games)), games, rotation=45, ha="right", fontsize=8)
        names = [f"{b}: {trained[b]}" if b in trained else str(b) for b in blocks]
        ax.set_yticks(range(len(blocks)), names, fontsize=8)
        ax.set_xlabel("game evaluated")
        ax.set_ylabel("after block: game trained")
        ax.set_title(f"{label}: {MATRIX_KEY_LABELS[key]}", fontsize=10, color=colors[label])
        colorbar = fig.colorbar(image, ax=ax)
        colorbar.set_label(bar_label, fontsize=7)
        colorbar.ax.tick_params(labelsize=7)
        plain_ticks(colorbar.ax, "y")
        if visits:
            _draw_visit_bars(
                next(axes),
                visits,
                f"{label}: after each visit vs fresh",
                key,
                colors[label],
                bar_limits,
            )
    fig.suptitle("Evaluation matrix")
    return fig


def _draw_visit_bars(
    ax,
    visits: dict[str, dict[str, float]],
    title: str,
    key: str,
    color: str,
    limits: tuple[float, float] | None = None,
) -> None:
    """Grouped bars: one group per game, one bar per visit (the run's colour, lighter for later
    visits) and one for the fresh network (grey, hatched), each labelled with its value, within
    `limits` (shared by the runs compared) and always showing 0."""
    games = list(visits)
    columns = list(dict.fromkeys(c for game in games for c in visits[game]))
    columns.sort(key=lambda c: (1, 0) if c == "fresh" else (0, int(c.split("_")[1])))
    width = 0.8 / max(len(columns), 1)
    for i, column in enumerate(columns):
        values = [visits[game].get(column, np.nan) for game in games]
        positions = np.arange(len(games)) + (i - (len(columns) - 1) / 2) * width
        if column == "fresh":
            style = dict(color="0.6", hatch="//", edgecolor="0.3")
        else:
            style = dict(color=color, alpha=max(0.35, 1.0 - 0.3 * i), edgecolor=color)
        bars = ax.bar(positions, values, width, label=column.replace("_", " "), lw=0.5, **style)
        # Each bar's value above it: a bar of height 0 would otherwise read as missing data.
        labels = [f"{v:.3g}" if np.isfinite(v) else "" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=6, padding=1)
    ax.axhline(0.0, color="0.3", lw=0.6)
    ax.set_xticks(range(len(games)), games, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(MATRIX_KEY_LABELS[key])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    if limits is not None:
        ax.set_ylim(min(limits[0], 0.0), max(limits[1], 0.0))
    plain_ticks(ax, "y")
    ax.grid(alpha=0.3, axis="y")


def figure_specs(runs: Sequence[Run]) -> list[tuple[str, Any]]:
    """(file stem, thunk making the figure) for every standard figure, in notebook order."""
    return [
        ("task_metrics", lambda: plot_task_metrics(runs)),
        ("weight_norm", lambda: plot_layer_metric(runs, "weight_norm", "Weight norm per layer")),
        (
            "effective_lr",
            lambda: plot_layer_metric(runs, "effective_lr", "Effective learning rate per layer"),
        ),
        (
            "update_ratio",
            lambda: plot_layer_metric(runs, "update_ratio", "Relative update size per layer"),
        ),
        (
            "unit_fractions",
            lambda: plot_metrics(
                runs, unit_fraction_keys(runs), "Dormant, dead and linearized unit fractions"
            ),
        ),
        (
            "dormant_per_layer",
            lambda: plot_layer_metric(
                runs, _middle_dormant(runs), "Dormant units per layer (τ = 0.025)"
            ),
        ),
        ("srank", lambda: plot_layer_metric(runs, "srank", "Feature srank per layer")),
        (
            "effective_rank",
            lambda: plot_layer_metric(runs, "effective_rank", "Feature effective rank per layer"),
        ),
        (
            "curvature",
            lambda: plot_metrics(runs, CURVATURE_METRICS, curvature_title(runs)),
        ),
        ("eval_returns", lambda: plot_eval_returns(runs)),
        ("evaluation_matrix", lambda: plot_evaluation_matrices(runs)),
        *[
            (f"{OTHER_PREFIX}{m}", lambda m=m: plot_layer_metric(runs, m, _layer_title(m)))
            for m in other_layer_metrics(runs)
        ],
    ]


# The curvature figure's title names the groups of `CURVATURE_METRICS` it holds.
CURVATURE_GROUPS = (
    ("curvature", ("hessian_",)),
    ("feature spectrum", ("feature_",)),
    ("NTK", ("ntk_",)),
    ("Jacobian norm", ("jacobian_",)),
    ("trainability", ("probe_",)),
    ("norms", ("param_norm", "grad_norm")),
)


def curvature_title(runs: Sequence[Run]) -> str:
    """'Curvature, feature spectrum and norms', or 'Norms' when only the parameter and gradient
    norms were logged: the groups of the curvature figure's panels, in their order."""
    present = [key for key in CURVATURE_METRICS if key in set(metric_keys(runs))]
    groups = [
        name for name, prefixes in CURVATURE_GROUPS if any(k.startswith(prefixes) for k in present)
    ]
    text = ", ".join(groups[:-1]) + " and " + groups[-1] if len(groups) > 1 else "".join(groups)
    return text[:1].upper() + text[1:]


# Per-layer diagnostics ('<metric>/<layer>') the standard figures draw (besides one τ of the
# dormant fractions, `_middle_dormant`); every other one logged gets a figure 'layers_<metric>'.
DRAWN_LAYER_METRICS = ("weight_norm", "effective_lr", "update_ratio", "srank", "effective_rank")
OTHER_PREFIX = "layers_"


def other_layer_metrics(runs: Sequence[Run]) -> list[str]:
    """The per-layer diagnostics no standard figure draws (dead and linearized units, the
    pre-activation statistics, gradient norms, other dormant thresholds, a diagnostic of your
    own: `plasticity.diagnostics.register_diagnostic`), each drawn per layer as
    'layers_<metric>'."""
    logged = sorted({key.split("/", 1)[0] for key in metric_keys(runs) if "/" in key})
    drawn = {*DRAWN_LAYER_METRICS, _middle_dormant(runs)}
    return [metric for metric in logged if metric not in drawn]


LAYER_TITLES = {
    "dead": "Dead units per layer",
    "linearized": "Linearized units per layer",
    "dohare_inactive": "Dohare-inactive units per layer",
    "grad_norm": "Gradient norm per layer",
    "preact_mean": "Mean pre-activation per layer",
    "preact_std": "Pre-activation standard deviation per layer",
    "preact_mean_abs": "Mean |unit mean pre-activation| per layer",
}


def _layer_title(metric: str) -> str:
    """'Dead units per layer', 'Dormant units per layer (τ = 0.1)', or '<metric> per layer'."""
    if metric.startswith("dormant_"):
        return f"Dormant units per layer (τ = {metric.split('_', 1)[1]})"
    return LAYER_TITLES.get(metric, f"{metric} per layer")


def figure_stems(runs: Sequence[Run]) -> tuple[str, ...]:
    """`FIGURES` and the runs' 'layers_<metric>' figures (`other_layer_metrics`)."""
    return FIGURES + tuple(f"{OTHER_PREFIX}{metric}" for metric in other_layer_metrics(runs))


def _middle_dormant(runs: Sequence[Run]) -> str:
    """The per-layer dormant metric to show: τ = 0.025 when logged, else the first τ logged."""
    taus = [k.split("/")[0] for k in metric_keys(runs) if k.startswith("dormant_") and "/" in k]
    taus = sorted(set(taus))
    return "dormant_0.025" if "dormant_0.025" in taus else (taus[0] if taus else "dormant_0.025")


# Figures drawn from 'diagnostics' rows (`plasticity.diagnostics`), as opposed to task and
# evaluation scores.
DIAGNOSTICS_FIGURES = (
    "weight_norm",
    "effective_lr",
    "update_ratio",
    "unit_fractions",
    "dormant_per_layer",
    "srank",
    "effective_rank",
    "curvature",
)
FIGURES = ("task_metrics", *DIAGNOSTICS_FIGURES, "eval_returns", "evaluation_matrix")
# Figures of one kind of run only: RL runs never log per-task metrics, continual runs never
# evaluate games.
CONTINUAL_FIGURES = ("task_metrics",)
RL_FIGURES = ("eval_returns", "evaluation_matrix")


def is_rl(run: Run) -> bool:
    """An RL run: its rows count frames, or it evaluated games."""
    return x_axis(run) == "frames" or bool(events(run, "eval"))


def expected_figures(runs: Sequence[Run]) -> tuple[str, ...]:
    """The standard figures (`FIGURES`) whose absence a report of these runs says: all but
    `CONTINUAL_FIGURES` when every run is an RL run, and all but `RL_FIGURES` when none is (a
    newcomer would read "no data for task_metrics" on an RL report as something their run
    lacks)."""
    kinds = {is_rl(run) for run in runs}
    left_out = CONTINUAL_FIGURES if kinds == {True} else RL_FIGURES if kinds == {False} else ()
    return tuple(stem for stem in FIGURES if stem not in left_out)


# How to read every figure (the report's note above them).
READING_NOTE = (
    "Each curve is the mean over its seeds, the shaded band their minimum to maximum. Grey "
    "dashed lines mark task or game switches (dotted, in a run's colour, where runs switch at "
    "different points; every k-th where a panel would have more than "
    f"{MAX_SWITCH_LINES}); triangles along a panel's top mark interventions, bars a summarized "
    "stretch of them. Runs of several task families get a row of panels per family."
)

# What each figure shows and how to read it (the report's captions).
FIGURE_NOTES = {
    "task_metrics": "End-of-task (memorization) and online accuracy and loss, at the step each "
    "task ends: loss of plasticity shows as a decline over tasks. Accuracy axes span 0 to 1.",
    "weight_norm": "Frobenius norm of each layer's kernel. Norm growth silently decays the "
    "effective learning rate of layers followed by a norm; NaP holds hidden norms at their "
    "initial value, so their curves are flat.",
    "effective_lr": "η/‖W‖^p per layer (log scale, at least one decade shown).",
    "update_ratio": "‖ΔW‖/‖W‖ of the last update per layer (log scale): the measured step size, "
    "for any optimizer.",
    "unit_fractions": "ReDo τ-dormant fractions, dead (never active), linearized (always active) "
    "and Dohare-inactive fractions over all hidden units (0 to at least 0.1).",
    "dormant_per_layer": "τ-dormant fraction of each hidden layer.",
    "srank": "Kumar et al.'s srank of each hidden layer's features (axis from 0).",
    "effective_rank": "Exponential of the entropy of each layer's normalized singular values.",
    "curvature": "Top Hessian eigenvalue and its power-iteration convergence (relative change of "
    "the last iteration), the penultimate features' top singular value and condition number (the "
    "last hidden layer's features; a dueling head's value stream; the condition number is left "
    "out where it is infinite, as for ReLU features of rank below their width), NTK statistics "
    "and the "
    "Jacobian norm, the plasticity probe and the parameter and gradient norms, when logged.",
    "eval_returns": "Evaluation score of every game against training frames (progress and "
    "end-of-block evaluations).",
    "evaluation_matrix": "Score of each game (columns) after each block (rows), annotated; one "
    "colour scale for all runs (see the colour bar). Bars: the score right after each visit of a "
    "game next to a fresh network trained on that game alone for one block.",
}


OTHER_NOTE = (
    "A per-layer diagnostic the figures above do not show (see plasticity.diagnostics for its "
    "definition, or your own registered one), one panel per layer."
)


@dataclasses.dataclass
class RenderedFigure:
    """A standard figure saved as PNG: its stem, title, file and what its panels hold
    (`plasticity.figures.figure_contents`)."""

    stem: str
    title: str
    path: Path
    contents: dict[str, dict[str, int]]

    @property
    def has_data(self) -> bool:
        """Every panel holds at least one finite point."""
        return bool(self.contents) and all(
            any(n > 0 for n in panel.values()) for panel in self.contents.values()
        )


def render_figure(
    runs: Sequence[Run], stem: str, output_dir: str | Path, show: bool = False, dpi: int = 90
) -> RenderedFigure | None:
    """Draws the standard figure `stem` (one of `FIGURES`) and saves ``<output_dir>/<stem>.png``.

    Returns what was saved, or None when the runs hold no data for it. With ``show`` the figure
    is also displayed (inline in a notebook) before being closed.
    """
    specs = dict(figure_specs(runs))
    if stem not in specs:
        stems = ", ".join(figure_stems(runs))
        raise ValueError(f"Unknown figure {stem!r}: expected one of {stems}.")
    plt = pyplot()
    fig = specs[stem]()
    if fig is None:
        return None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{stem}.png"
    fig.savefig(path, dpi=dpi)
    title = fig.get_suptitle() or stem
    rendered = RenderedFigure(stem, title, path, figure_contents(fig))
    if show:
        plt.show()
    plt.close(fig)
    return rendered


def save_figure(
    runs: Sequence[Run], stem: str, output_dir: str | Path, show: bool = False, dpi: int = 90
) -> Path | None:
    """`render_figure`'s path: ``<output_dir>/<stem>.png``, or None without data."""
    rendered = render_figure(runs, stem, output_dir, show, dpi)
    return rendered.path if rendered is not None else None


def make_figures(
    runs: Sequence[Run], output_dir: str | Path, show: bool = False, dpi: int = 90
) -> dict[str, Path]:
    """Saves every standard figure that has data as ``<output_dir>/<stem>.png``; {stem: path}."""
    written: dict[str, Path] = {}
    for stem in figure_stems(runs):
        path = save_figure(runs, stem, output_dir, show, dpi)
        if path is not None:
            written[stem] = path
    return written
