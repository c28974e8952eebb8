"""The report of one or more work dirs: the standard figures as PNG files and one HTML page.

`write_report(workdirs, out)` is what ``python -m scripts.report`` runs, and the diagnostics
notebook calls the same pieces (`load_runs`, `render_figures`, the ``*_html`` sections,
`write_page`). The page, ``<out>/report.html``, is self-contained: every figure is embedded as a
base64 PNG and links to its file next to the page (``<out>/<stem>.png``), so the out dir can be
moved or mailed as it is. It holds:

* the runs compared (one *curve* per work dir and variant, with its seeds and progress) and a
  summary table (`plasticity.analysis.summary`);
* every standard figure that has data (`benchmarks.analysis.FIGURES`), with a caption saying
  how to read it, and the list of figures the runs hold no data for (of those their kinds can
  have: RL runs never have task metrics, continual runs no game evaluations,
  `benchmarks.analysis.expected_figures`); then a figure
  for each per-layer diagnostic they logged that no standard figure draws (`layers_<metric>`:
  dead units, pre-activation statistics, a diagnostic of your own, ...);
* RL runs: the evaluation matrix as tables (``evaluation_matrix.json``, or the 'eval' rows of
  runs whose seeds are separate work dirs) and the visit scores against the fresh network;
* the config fields that differ between the curves (variants resolved), and every config;
* each work dir's ``run_info.json``: every launch's command and working directory, git commit,
  packages, devices, CPU.

``<out>/report.json`` lists the same for programs: every figure's file, title and panels with the
number of points each curve has there (`plasticity.figures.figure_contents`), and the figures
without data.

Work dirs are given as `plasticity.analysis.expand_workdirs` accepts them: work dirs, their
metrics.jsonl, or a directory of per-variant work dirs (an RL launch with variants).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from benchmarks import analysis as figures
from plasticity import analysis
from plasticity import figures as figures_lib

REPORT_FILE = "report.html"
MANIFEST_FILE = "report.json"
REPORT_DIR = "report"
EVALUATION_MATRIX_FILE = "evaluation_matrix.json"
RUN_INFO_FILE = "run_info.json"
MATRIX_KEYS = ("return_mean", "human_normalized")


@dataclasses.dataclass
class Report:
    """What `write_report` wrote: the page, the figures with data, and the stems without."""

    page: Path
    figures: dict[str, figures.RenderedFigure]
    missing: list[str]
    runs: list[analysis.Run]


def default_out(workdirs: str | Path | Sequence[str | Path]) -> Path:
    """``<first work dir>/report`` (the work dir of a metrics.jsonl file given instead)."""
    first = Path(workdirs if isinstance(workdirs, (str, Path)) else list(workdirs)[0])
    return (first.parent if first.is_file() else first) / REPORT_DIR


def load_runs(workdirs: str | Path | Iterable[str | Path]) -> list[analysis.Run]:
    """The runs under `workdirs` (`plasticity.analysis.load_runs`); a one-line ValueError when
    none is given or a path is not a work dir."""
    if workdirs is None or (not isinstance(workdirs, (str, Path)) and not list(workdirs)):
        raise ValueError(
            "No work dirs given: set `workdirs` to one or more work dirs "
            "(papermill: -p workdirs WORKDIR)."
        )
    return analysis.load_runs(workdirs)


def render_figures(
    runs: Sequence[analysis.Run],
    out: str | Path,
    show: bool = False,
    dpi: int = 90,
    stems: Sequence[str] | None = None,
) -> dict[str, figures.RenderedFigure]:
    """Saves every standard figure that has data as ``<out>/<stem>.png`` (by default
    `figures.figure_stems`: a figure per logged per-layer diagnostic no standard one draws too);
    {stem: figure}.

    PNGs of standard figures left in `out` by an earlier report and without data now are
    removed, so the out dir never shows a stale figure.
    """
    out = Path(out)
    rendered = {}
    for stem in figures.figure_stems(runs) if stems is None else stems:
        figure = figures.render_figure(runs, stem, out, show=show, dpi=dpi)
        if figure is not None:
            rendered[stem] = figure
    remove_stale_figures(out, rendered, stems)
    return rendered


def remove_stale_figures(
    out: str | Path, rendered: Mapping[str, Any], stems: Sequence[str] | None = None
) -> None:
    """Removes the PNGs in ``out`` of the figures of ``stems`` (by default every standard and
    per-layer figure) that ``rendered`` lacks: an earlier report's, of data these runs lack."""
    out = Path(out)
    candidates = set(figures.FIGURES if stems is None else stems)
    if stems is None:
        candidates |= {path.stem for path in out.glob(f"{figures.OTHER_PREFIX}*.png")}
    for stem in candidates - set(rendered):
        (out / f"{stem}.png").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# HTML sections. Each returns an HTML fragment; `page_html` puts them together.


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if not np.isfinite(value) else f"{value:.4g}"
    if value is None:
        return "—"
    return _e(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    attribute = f' class="{cls}"' if cls else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kind(run: analysis.Run) -> str:
    return "RL" if figures.is_rl(run) else "continual"


def _code(launch: Mapping[str, Any]) -> str | None:
    """'<commit> (edited)', '<commit>' or the version, for the launches table."""
    commit = launch.get("git_commit")
    if commit:
        return f"{commit} (edited)" if launch.get("git_dirty") else commit
    return f"version {launch['version']}" if launch.get("version") else None


def runs_html(runs: Sequence[analysis.Run]) -> str:
    """The curves compared: run, variant, work dirs, seeds, rows and how far each got."""
    colors = figures_lib.curve_colors(runs)
    rows = []
    for run, variant, label in analysis.curves(runs):
        own = analysis.curve_rows(run, variant)
        x = "frames" if _kind(run) == "RL" else "step"
        last = max((analysis.number(r.get(x)) or 0 for r in own), default=0)
        seeds = sorted({r.get("seed") for r in own if r.get("seed") is not None})
        swatch = f'<span class="swatch" style="background:{colors[label]}"></span>'
        rows.append(
            "<tr>"
            f"<td>{swatch}{_e(label)}</td><td>{_e(_kind(run))}</td>"
            f"<td>{'<br>'.join(_e(p) for p in run.workdirs)}</td>"
            f"<td>{_e(', '.join(map(str, seeds)) or '—')}</td><td>{len(own)}</td>"
            f"<td>{_e(f'{last:,.0f}')} {x}</td>"
            f"<td>{run.skipped_lines or ''}</td>"
            "</tr>"
        )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "curve",
            "kind",
            "work dir",
            "seed ids",
            "rows",
            "last logged",
            "unreadable lines",
        )
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def summary_html(runs: Sequence[analysis.Run]) -> str:
    """`plasticity.analysis.summary` as a table."""
    table = analysis.summary(runs)
    columns = list(dict.fromkeys(key for row in table for key in row))
    return _table(columns, ([row.get(c) for c in columns] for row in table))


def figures_html(
    rendered: Mapping[str, figures.RenderedFigure],
    out: str | Path,
    embed: bool = True,
    expected: Sequence[str] = figures.FIGURES,
) -> str:
    """One section per figure: title, caption and the image (embedded when `embed`), linking to
    the PNG next to the page; then the figures of ``expected`` (`figures.expected_figures`) the
    runs hold no data for."""
    out = Path(out)
    parts = [f"<p class='note'>{_e(figures.READING_NOTE)}</p>"] if rendered else []
    for stem, figure in rendered.items():
        name = figure.path.name
        if embed:
            data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
            source = f"data:image/png;base64,{data}"
        else:
            source = _e(name)
        note = figures.FIGURE_NOTES.get(stem, figures.OTHER_NOTE)
        parts.append(
            f'<section class="figure" id="figure-{_e(stem)}"><h3>{_e(figure.title)}</h3>'
            f"<p>{_e(note)}</p>"
            f'<a href="{_e(name)}"><img src="{source}" alt="{_e(figure.title)}"></a></section>'
        )
    missing = [stem for stem in expected if stem not in rendered]
    if missing:
        parts.append(
            "<p class='note'>No data in these runs for: "
            + ", ".join(f"<code>{_e(stem)}</code>" for stem in missing)
            + ".</p>"
        )
    return "\n".join(parts)


def _matrix_from_file(workdir: Path) -> dict[str, Any] | None:
    path = workdir / EVALUATION_MATRIX_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("games"), list):
        return None
    blocks = data.get("blocks") or []
    # A matrix of nulls (human-normalized scores where no episode fits the reference protocol)
    # would only be a table of dashes.
    kept = [k for k in MATRIX_KEYS if isinstance(data.get(k), list) and _has_a_score(data[k])]
    return {
        "source": f"{EVALUATION_MATRIX_FILE} of {workdir}",
        "games": data["games"],
        "blocks": [f"{i}: {b.get('game', '?')}" for i, b in enumerate(blocks)],
        "matrices": {key: data[key] for key in kept},
        "visits": {
            key: data.get("visit_scores" if key == MATRIX_KEYS[0] else f"visit_scores_{key}")
            for key in kept
        },
    }


def _has_a_score(matrix: list) -> bool:
    """Whether a (blocks, games) matrix from JSON holds at least one number."""
    return any(
        isinstance(cell, (int, float)) and not isinstance(cell, bool)
        for row in matrix
        for cell in (row if isinstance(row, list) else [row])
    )


def _matrix_from_rows(run: analysis.Run, variant: str | None) -> dict[str, Any] | None:
    found: dict[str, Any] = {"source": "eval rows (seed means)", "matrices": {}, "visits": {}}
    for key in MATRIX_KEYS:
        matrix = figures.evaluation_matrix(run, variant, key)
        if matrix is None:
            continue
        games, blocks, values = matrix
        trained = {
            int(r["block"]): r.get("trained_game")
            for r in analysis.curve_rows(run, variant, "eval")
            if "block" in r
        }
        found.update(games=games, blocks=[f"{b}: {trained.get(b, '?')}" for b in blocks])
        found["matrices"][key] = [
            [None if np.isnan(v) else float(v) for v in row] for row in values
        ]
        found["visits"][key] = figures.visit_scores(run, variant, key)
    return found if found["matrices"] else None


def evaluation_html(runs: Sequence[analysis.Run]) -> str:
    """RL: per curve, the evaluation matrix (rows: after block, columns: game evaluated) of
    every score it holds, and the visit scores next to the fresh network's. Empty when no run
    evaluated games."""
    parts = []
    for run, variant, label in analysis.curves(runs):
        if not analysis.events(run, "eval"):
            continue
        data = None
        if len(run.workdirs) == 1 and variant is None:
            data = _matrix_from_file(run.workdirs[0])
        data = data or _matrix_from_rows(run, variant)
        if data is None:
            continue
        parts.append(f"<h3>{_e(label)}</h3><p class='note'>From {_e(data['source'])}.</p>")
        for key, matrix in data["matrices"].items():
            rows = [[block, *values] for block, values in zip(data["blocks"], matrix)]
            parts.append(
                f"<h4>{_e(figures.MATRIX_KEY_LABELS.get(key, key))}</h4>"
                + _table(["after block: game trained", *data["games"]], rows, "matrix")
            )
            visits = data["visits"].get(key) or {}
            if visits:
                columns = list(dict.fromkeys(c for game in visits.values() for c in game))
                columns.sort(key=lambda c: (1, 0) if c == "fresh" else (0, int(c.split("_")[1])))
                rows = [
                    [game, *(scores.get(c) for c in columns)] for game, scores in visits.items()
                ]
                parts.append(
                    "<p>Score right after each visit, and of the fresh network:</p>"
                    + _table(["game", *(c.replace("_", " ") for c in columns)], rows, "matrix")
                )
    return "\n".join(parts)


def curve_configs(runs: Sequence[analysis.Run]) -> list[tuple[str, dict[str, Any]]]:
    """(curve label, config) of every curve; a sweep's variants are resolved (the variant's
    overrides applied to the base config, `plasticity.config_tools.resolve_variants`) and its
    grid point written into the optimizer fields it sets."""
    from plasticity import config_tools  # noqa: PLC0415

    out = []
    for run, curve, label in analysis.curves(runs):
        config, variant = run.config, analysis.variant_of(run, curve)
        if variant is not None and variant in (config.get("variants") or {}):
            try:
                resolved = dict(config_tools.resolve_variants(config))
                config = resolved[variant].to_dict()
            except (ValueError, KeyError, TypeError):
                pass
        point = analysis.grid_point(run, curve)
        if point and isinstance(config.get("optimizer"), dict):  # the grid sets these fields
            config = {**config, "optimizer": {**config["optimizer"], **point}}
        out.append((label, config))
    return out


def _lookup(config: Mapping[str, Any], name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "<absent>"
        value = value[part]
    return value


def config_diff_html(runs: Sequence[analysis.Run]) -> str:
    """The config fields that differ between the curves (one column per curve), then every
    curve's config, folded."""
    from plasticity.workdir import config_differences  # noqa: PLC0415

    configs = curve_configs(runs)
    ignored = ("variants", "variant_order")
    names: list[str] = []
    for _, config in configs[1:]:
        for name in config_differences(configs[0][1], config):
            if name not in names and name.split(".")[0] not in ignored:
                names.append(name)
    if len(configs) < 2:
        parts = ["<p>One curve: nothing to compare.</p>"]
    elif not names:
        parts = ["<p>The curves' configs are identical.</p>"]
    else:
        rows = [
            [name, *(json.dumps(_lookup(c, name), default=str) for _, c in configs)]
            for name in sorted(names)
        ]
        parts = [_table(["field", *(label for label, _ in configs)], rows, "diff")]
    for label, config in configs:
        text = json.dumps(config, indent=1, sort_keys=True, default=str)
        parts.append(
            f"<details><summary>config of {_e(label)}</summary><pre>{_e(text)}</pre></details>"
        )
    return "\n".join(parts)


def run_info_html(runs: Sequence[analysis.Run]) -> str:
    """Every launch of every work dir (``run_info.json``): when, command and working directory,
    git commit, Python and package versions, backend and devices, CPU and host."""
    parts = []
    for run in runs:
        for workdir in run.workdirs:
            path = workdir / RUN_INFO_FILE
            try:
                launches = json.loads(path.read_text(encoding="utf-8")).get("launches", [])
            except (OSError, json.JSONDecodeError, AttributeError):
                launches = []
            title = f"{run.name} ({workdir.name})" if len(run.workdirs) > 1 else run.name
            if not launches:
                parts.append(f"<h3>{_e(title)}</h3><p class='note'>No {RUN_INFO_FILE}.</p>")
                continue
            rows = []
            for i, launch in enumerate(launches):
                if not isinstance(launch, Mapping):
                    continue
                cpu = launch.get("cpu") or {}
                packages = launch.get("packages") or {}
                rows.append(
                    [
                        i + 1,
                        launch.get("started"),
                        " ".join(map(str, launch.get("command") or [])),
                        launch.get("cwd"),
                        _code(launch),
                        launch.get("python"),
                        ", ".join(f"{k} {v}" for k, v in packages.items()),
                        f"{launch.get('backend')}: {', '.join(launch.get('devices') or [])}",
                        f"{cpu.get('model', '?')} ({cpu.get('cores', '?')} cores)",
                        launch.get("host"),
                    ]
                )
            header = [
                "launch",
                "started (UTC)",
                "command",
                "working dir",
                "code (git commit)",
                "Python",
                "packages",
                "devices",
                "CPU",
                "host",
            ]
            parts.append(f"<h3>{_e(title)}</h3>" + _table(header, rows, "info"))
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } table.matrix td { text-align: right; }
.figure img { max-width: 100%; border: 1px solid #eee; }
.note { color: #666; font-size: 0.9em; } pre { font-size: 0.8em; background: #f7f7f7; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em;
  vertical-align: middle; }
nav a { margin-right: 1em; }
"""


def page_html(
    runs: Sequence[analysis.Run],
    rendered: Mapping[str, figures.RenderedFigure],
    out: str | Path,
    embed: bool = True,
) -> str:
    """The whole page (see the module docstring)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    names = ", ".join(run.name for run in runs)
    sections = [
        ("runs", "Runs", runs_html(runs) + summary_html(runs)),
        ("figures", "Figures", figures_html(rendered, out, embed, figures.expected_figures(runs))),
    ]
    evaluation = evaluation_html(runs)
    if evaluation:
        sections.append(("evaluation", "Evaluation matrix", evaluation))
    sections += [
        ("config", "Config differences", config_diff_html(runs)),
        ("run-info", "Launches (run_info.json)", run_info_html(runs)),
    ]
    nav = " ".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "\n".join(
        f'<h2 id="{key}">{_e(title)}</h2>\n{content}' for key, title, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Plasticity report: {_e(names)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Plasticity report</h1><p class='note'>{_e(names)}; written {now}.</p>"
        f"<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def write_page(
    runs: Sequence[analysis.Run],
    rendered: Mapping[str, figures.RenderedFigure],
    out: str | Path,
    embed: bool = True,
) -> Path:
    """Writes ``<out>/report.html`` (`page_html`) and ``<out>/report.json`` (the manifest) and
    returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / REPORT_FILE
    page.write_text(page_html(runs, rendered, out, embed), encoding="utf-8")
    manifest = {
        "page": REPORT_FILE,
        "runs": [{"name": run.name, "workdirs": [str(p) for p in run.workdirs]} for run in runs],
        "figures": {
            stem: {"file": figure.path.name, "title": figure.title, "panels": figure.contents}
            for stem, figure in rendered.items()
        },
        "missing": missing_figures(runs, rendered),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return page


# PNG resolutions a report can be drawn at: a 14-inch figure at 1,200 dpi is ~17,000 pixels wide.
MIN_DPI, MAX_DPI = 10, 1200


def write_report(
    workdirs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    embed: bool = True,
    dpi: int = 90,
) -> Report:
    """Reads the work dirs, saves the standard figures as PNG in `out` (default
    ``<first work dir>/report``) and writes ``<out>/report.html``."""
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ValueError(f"--dpi must be between {MIN_DPI} and {MAX_DPI}, got {dpi}")
    runs = load_runs(workdirs)
    out = Path(out) if out is not None else default_out(workdirs)
    rendered = render_figures(runs, out, dpi=dpi)
    page = write_page(runs, rendered, out, embed)
    return Report(page, rendered, missing_figures(runs, rendered), runs)


def missing_figures(runs: Sequence[analysis.Run], rendered: Mapping[str, Any]) -> list[str]:
    """The standard figures these runs' kinds can have (`figures.expected_figures`: no task
    metrics for RL runs alone) that ``rendered`` lacks: what a report says it has no data for."""
    return [stem for stem in figures.expected_figures(runs) if stem not in rendered]


if __name__ == "__main__":  # the library of `python -m scripts.report`, which it runs
    import sys

    from scripts import report as report_command

    sys.exit(report_command.main(sys.argv))
