"""Figures of work dirs: the plasticity diagnostics of every trainer and the RL evaluation views.

`plasticity.analysis` reads work dirs and draws what any trainer logs (task metrics, per-layer
diagnostics); this module adds what only game sequences have (evaluation returns per game, the
evaluation matrix with visit scores against the fresh-network references) and the registry of
standard figures that `scripts.report` and the diagnostics notebook draw (`FIGURES`,
`make_figures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from plasticity.analysis import (
    CURVATURE_METRICS,
    Run,
    curves,
    draw,
    events,
    finish,
    grid,
    metric_keys,
    number,
    plot_layer_metric,
    plot_metrics,
    plot_task_metrics,
    pyplot,
    series,
    unit_fraction_keys,
)


def plot_eval_returns(runs: Sequence[Run]):
    """RL: evaluation return (human-normalized when present) per game against frames."""
    plt = pyplot()
    games = []
    for run in runs:
        for row in events(run, "eval"):
            if row.get("game") is not None and row["game"] not in games:
                games.append(row["game"])
    if not games:
        return None
    fig, axes = grid(plt, len(games))
    for ax, game in zip(axes, games):
        for i, (run, variant, label) in enumerate(curves(runs)):
            subset = Run(
                run.name,
                run.path,
                run.config,
                [r for r in events(run, "eval") if r.get("game") == game],
            )
            key = (
                "human_normalized"
                if any(number(r.get("human_normalized")) is not None for r in subset.rows)
                else "return_mean"
            )
            s = series(subset, key, "eval", variant, x="frames")
            if s is not None:
                draw(ax, s, label, f"C{i}")
                ax.set_ylabel(key.replace("_", " "))
        ax.set_title(str(game), fontsize=10)
        ax.set_xlabel("frames")
        ax.grid(alpha=0.3)
    return finish(fig, axes, "Evaluation per game")


def _matrix_rows(run: Run, variant: str | None) -> list[dict[str, Any]]:
    """Evaluation-matrix rows: 'eval' rows taken after a block (progress evaluations inside a
    block carry ``end_of_block`` False and are left out)."""
    return [
        r
        for r in events(run, "eval")
        if r.get("variant") == variant and r.get("end_of_block", True) is not False
    ]


def matrix_key(run: Run) -> str:
    """'human_normalized' when every evaluation-matrix row has one (Atari games with reference
    scores: comparable across games), else 'return_mean'."""
    rows = [r for r in events(run, "eval") if r.get("end_of_block", True) is not False]
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
    for r in events(run, "eval_fresh"):
        value = number(r.get(key))
        if r.get("variant") == variant and value is not None and r.get("game") is not None:
            cells.setdefault(r["game"], {}).setdefault("fresh", []).append(value)

    def order(column: str) -> tuple[int, int]:
        return (1, 0) if column == "fresh" else (0, int(column.split("_")[1]))

    return {
        game: {c: float(np.mean(columns[c])) for c in sorted(columns, key=order)}
        for game, columns in cells.items()
    }


def plot_evaluation_matrices(runs: Sequence[Run]):
    """RL: per curve, the evaluation matrix (block × game) as a heat map, and for sequences the
    score after each visit of a game next to the fresh-network reference's."""
    plt = pyplot()
    found = []
    for run, variant, label in curves(runs):
        key = matrix_key(run)
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
    panels = sum(2 if visits else 1 for *_, visits, _ in found)
    fig, axes = grid(plt, panels, width=5.0, height=4.0, max_columns=2)
    fig.subplots_adjust(left=0.2, wspace=0.5)  # room for the "block: game" row labels
    axes = iter(axes)
    for label, key, (games, blocks, matrix), visits, trained in found:
        ax = next(axes)
        image = ax.imshow(matrix, aspect="auto", cmap="viridis")
        if matrix.size <= 200:
            for (b, g), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    color = "k" if image.norm(value) > 0.5 else "w"  # readable on viridis
                    ax.text(g, b, f"{value:.2g}", ha="center", va="center", fontsize=6, color=color)
        ax.set_xticks(range(len(games)), games, rotation=45, ha="right", fontsize=8)
        names = [f"{b}: {trained[b]}" if b in trained else str(b) for b in blocks]
        ax.set_yticks(range(len(blocks)), names, fontsize=8)
        ax.set_xlabel("game evaluated")
        ax.set_ylabel("after block: game trained")
        ax.set_title(f"{label}: {key.replace('_', ' ')}", fontsize=10)
        fig.colorbar(image, ax=ax)
        if visits:
            _draw_visit_bars(next(axes), visits, f"{label}: after each visit vs fresh", key)
    fig.suptitle("Evaluation matrix")
    return fig


def _draw_visit_bars(ax, visits: dict[str, dict[str, float]], title: str, key: str) -> None:
    """Grouped bars: one group per game, one bar per visit and one for the fresh network."""
    games = list(visits)
    columns = list(dict.fromkeys(c for game in games for c in visits[game]))
    columns.sort(key=lambda c: (1, 0) if c == "fresh" else (0, int(c.split("_")[1])))
    width = 0.8 / max(len(columns), 1)
    for i, column in enumerate(columns):
        values = [visits[game].get(column, np.nan) for game in games]
        positions = np.arange(len(games)) + (i - (len(columns) - 1) / 2) * width
        color = "0.4" if column == "fresh" else f"C{i}"
        ax.bar(positions, values, width, label=column.replace("_", " "), color=color)
    ax.set_xticks(range(len(games)), games, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3, axis="y")


def figure_specs(runs: Sequence[Run]) -> list[tuple[str, Any]]:
    """(file stem, thunk making the figure) for every standard figure, in notebook order."""
    return [
        ("task_metrics", lambda: plot_task_metrics(runs)),
        ("weight_norm", lambda: plot_layer_metric(runs, "weight_norm", "Weight norm per layer")),
        (
            "effective_lr",
            lambda: plot_layer_metric(
                runs, "effective_lr", "Effective learning rate per layer", log=True
            ),
        ),
        (
            "update_ratio",
            lambda: plot_layer_metric(
                runs, "update_ratio", "Relative update size per layer", log=True
            ),
        ),
        (
            "unit_fractions",
            lambda: plot_metrics(
                runs, unit_fraction_keys(runs), "Dormant, dead and linearized unit fractions"
            ),
        ),
        (
            "dormant_per_layer",
            lambda: plot_layer_metric(runs, _middle_dormant(runs), "Dormant units per layer"),
        ),
        ("srank", lambda: plot_layer_metric(runs, "srank", "Feature srank per layer")),
        (
            "effective_rank",
            lambda: plot_layer_metric(runs, "effective_rank", "Feature effective rank per layer"),
        ),
        (
            "curvature",
            lambda: plot_metrics(
                runs,
                CURVATURE_METRICS,
                "Curvature, feature spectrum and trainability",
                log_keys=(
                    "hessian_top_eigenvalue",
                    "feature_condition_number",
                    "ntk_top_eigenvalue",
                ),
            ),
        ),
        ("eval_returns", lambda: plot_eval_returns(runs)),
        ("evaluation_matrix", lambda: plot_evaluation_matrices(runs)),
    ]


def _middle_dormant(runs: Sequence[Run]) -> str:
    """The per-layer dormant metric to show: τ = 0.025 when logged, else the first τ logged."""
    taus = [k.split("/")[0] for k in metric_keys(runs) if k.startswith("dormant_") and "/" in k]
    taus = sorted(set(taus))
    return "dormant_0.025" if "dormant_0.025" in taus else (taus[0] if taus else "dormant_0.025")


FIGURES = (
    "task_metrics",
    "weight_norm",
    "effective_lr",
    "update_ratio",
    "unit_fractions",
    "dormant_per_layer",
    "srank",
    "effective_rank",
    "curvature",
    "eval_returns",
    "evaluation_matrix",
)


def save_figure(
    runs: Sequence[Run], stem: str, output_dir: str | Path, show: bool = False, dpi: int = 90
) -> Path | None:
    """Draws the standard figure `stem` (one of `FIGURES`) and saves ``<output_dir>/<stem>.png``.

    Returns the path, or None when the runs hold no data for it. With ``show`` the figure is
    also displayed (inline in a notebook) before being closed.
    """
    specs = dict(figure_specs(runs))
    if stem not in specs:
        raise ValueError(f"Unknown figure {stem!r}: expected one of {', '.join(FIGURES)}.")
    plt = pyplot()
    fig = specs[stem]()
    if fig is None:
        return None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{stem}.png"
    fig.savefig(path, dpi=dpi)
    if show:
        plt.show()
    plt.close(fig)
    return path


def make_figures(
    runs: Sequence[Run], output_dir: str | Path, show: bool = False, dpi: int = 90
) -> dict[str, Path]:
    """Saves every standard figure that has data as ``<output_dir>/<stem>.png``; {stem: path}."""
    written: dict[str, Path] = {}
    for stem in FIGURES:
        path = save_figure(runs, stem, output_dir, show, dpi)
        if path is not None:
            written[stem] = path
    return written
