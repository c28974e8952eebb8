"""Work-dir reading, seed aggregation and figures; the diagnostics notebook executed headless."""

import json
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from benchmarks import analysis as figures  # noqa: E402
from plasticity import analysis
from plasticity import figures as figures_lib, workdir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "plasticity_diagnostics.ipynb"
LAYERS = ("hidden_0", "hidden_1", "output")


def _diagnostics_row(variant, seed, step, task, curvature):
    """A diagnostics row whose values are simple functions of (seed, step) for exact checks."""
    row = {
        "event": "diagnostics",
        "step": step,
        "seed": seed,
        "variant": variant,
        "task": task,
        "param_norm": 10.0 + step / 100 + seed,
    }
    for i, layer in enumerate(LAYERS):
        row[f"weight_norm/{layer}"] = 1.0 + i + step / 100 + seed
        row[f"effective_lr/{layer}"] = 1e-3 / (1.0 + step / 100) ** 2
        row[f"update_ratio/{layer}"] = 1e-3
    for layer in LAYERS[:2]:
        row[f"dormant_0.025/{layer}"] = min(1.0, step / 400)
        row[f"srank/{layer}"] = 30.0 - step / 20
    row.update(
        {
            "dormant_0": step / 800,
            "dormant_0.025": step / 400,
            "dead": step / 1000,
            "linearized": 0.01,
            "dohare_inactive": step / 900,
        }
    )
    if curvature:
        row["hessian_top_eigenvalue"] = 5.0 + step / 10
    if step == 100:
        row["feature_condition_number"] = None  # non-finite values are written as null
    return row


def write_synthetic_workdir(
    path: Path, variants, curvature: bool, tasks: int = 4, steps_per_task: int = 50
) -> Path:
    """A tiny work dir in the trainer's format: task rows and diagnostics rows, 2 seeds."""
    wd = workdir.WorkDir(path, tensorboard=False, is_writer=True)
    wd.write_config({"task": {"name": "label_reset", "num_tasks": tasks}, "variants": variants})
    rows = []
    for variant in variants:
        for seed in (0, 1):
            rows.append(_diagnostics_row(variant, seed, 0, 0, curvature))
            for task in range(tasks):
                end = (task + 1) * steps_per_task
                rows.append(_diagnostics_row(variant, seed, end, task, curvature))
                accuracy = 1.0 - 0.1 * task * (variant == "none") - 0.01 * seed
                rows.append(
                    {
                        "event": "task",
                        "step": end,
                        "seed": seed,
                        "variant": variant,
                        "task": task,
                        "online_accuracy": accuracy - 0.2,
                        "end_accuracy": accuracy,
                        "online_loss": 1.0,
                        "end_loss": 0.5,
                        "param_norm": 10.0 + task,
                    }
                )
    wd.append_metrics(rows)
    with open(wd.metrics_path, "a", encoding="utf-8") as f:
        f.write('{"event": "diagnostics", "step": 9')  # a truncated last line
    return path


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return [
        write_synthetic_workdir(base / "baselines", ["none", "layernorm"], curvature=False),
        write_synthetic_workdir(base / "nap", ["layernorm_nap"], curvature=True),
    ]


def test_reading_is_robust_and_aggregates_over_seeds(workdirs):
    runs = analysis.load_runs(workdirs)
    baselines, nap = runs
    assert baselines.name == "baselines" and baselines.skipped_lines == 1
    assert analysis.variants(baselines) == ["none", "layernorm"]
    assert baselines.config["task"]["name"] == "label_reset"
    s = analysis.series(baselines, "weight_norm/hidden_1", variant="none")
    np.testing.assert_array_equal(s.x, [0, 50, 100, 150, 200])
    np.testing.assert_allclose(s.mean, 2.0 + s.x / 100 + 0.5)  # seeds 0 and 1
    np.testing.assert_allclose(s.high - s.low, 1.0)
    assert s.seeds == 2
    tasks = analysis.series(baselines, "end_accuracy", "task", "none", x="task")
    np.testing.assert_allclose(tasks.mean, 1.0 - 0.1 * np.arange(4) - 0.005)
    # null values and keys a run never logged are simply absent.
    condition = analysis.series(baselines, "feature_condition_number", variant="none")
    assert condition is None
    assert analysis.series(baselines, "hessian_top_eigenvalue", variant="none") is None
    assert analysis.series(nap, "hessian_top_eigenvalue", variant="layernorm_nap") is not None
    assert analysis.layers_of(runs, "weight_norm") == list(LAYERS)
    assert analysis.layers_of(runs, "srank") == ["hidden_0", "hidden_1"]
    assert figures_lib.unit_fraction_keys(runs) == [
        "dormant_0",
        "dormant_0.025",
        "dead",
        "linearized",
        "dohare_inactive",
    ]
    labels = [label for _, _, label in analysis.curves(runs)]
    assert labels == ["baselines: none", "baselines: layernorm", "nap: layernorm_nap"]
    table = analysis.summary(runs)
    assert table[0]["seed count"] == 2 and table[0]["tasks"] == 4
    assert table[0]["last step"] == max(r["step"] for r in runs[0].rows if r["variant"] == "none")
    assert math.isclose(table[0]["final end_accuracy"], 0.695)


def test_missing_work_dir_and_unknown_figure_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="No work dir"):
        analysis.load_run(tmp_path / "absent")
    with pytest.raises(ValueError, match="No work dirs"):
        analysis.load_runs([])
    run = analysis.load_run(tmp_path)  # an empty directory: no rows, no figures
    assert run.rows == [] and figures.make_figures([run], tmp_path / "figures") == {}
    with pytest.raises(ValueError, match="Unknown figure"):
        figures.save_figure([run], "loss_landscape", tmp_path)


def test_rl_evaluation_matrix(tmp_path):
    rows = [
        {
            "event": "eval",
            "frames": 1000 * (b + 1),
            "step": b,
            "seed": s,
            "game": g,
            "block": b,
            "visit": 1,
            "return_mean": 10.0 * b + i + s,
        }
        for s in (0, 1)
        for b in range(2)
        for i, g in enumerate(("Pong", "Breakout"))
        if not (b == 0 and g == "Breakout")
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = analysis.load_run(tmp_path)
    games, blocks, matrix = figures.evaluation_matrix(run)
    assert games == ["Pong", "Breakout"] and blocks == [0, 1]
    np.testing.assert_allclose(matrix, [[0.5, np.nan], [10.5, 11.5]])
    written = figures.make_figures([run], tmp_path / "figures")
    assert set(written) == {"eval_returns", "evaluation_matrix"}


def test_notebook_executes_headless_and_writes_its_figures(workdirs, tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    figures = tmp_path / "figures"
    figures.mkdir()
    for stale in ("eval_returns", "layers_preact_mean"):  # an earlier report's, of other runs
        (figures / f"{stale}.png").write_bytes(b"\x89PNG stale")
    parameters[
        0
    ].source = (
        f"workdirs = {[str(p) for p in workdirs]!r}\noutput_dir = {str(figures)!r}\nshow = False\n"
    )
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    expected = {
        "task_metrics",
        "weight_norm",
        "effective_lr",
        "update_ratio",
        "unit_fractions",
        "dormant_per_layer",
        "srank",
        "curvature",
    }
    assert {p.stem for p in figures.glob("*.png")} == expected
    for path in figures.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    outputs = "".join(
        o.get("text", "") + o.get("data", {}).get("text/html", "")
        for c in notebook.cells
        for o in c.get("outputs", [])
    )
    assert "baselines: none" in outputs and "(no data for effective_rank)" in outputs
    assert "evaluation_matrix" not in outputs  # continual runs never evaluate games
    page = (figures / "report.html").read_text(encoding="utf-8")
    for stem in expected:  # the notebook writes the report page of the figures it drew
        assert f'href="{stem}.png"' in page


def _write_rows(path: Path, rows, config=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def test_directories_of_variants_and_seeds_expand_in_launch_order(tmp_path):
    parent = tmp_path / "sweep"
    order = {"variant_order": ["nap", "baseline"]}
    for seed in (0, 1):  # Atari writes one work dir per seed: <variant>/seed_<s>
        rows = [
            {"event": "diagnostics", "frames": f, "seed": seed, "weight_norm/x": seed}
            for f in (1, 2)
        ]
        _write_rows(parent / "baseline" / f"seed_{seed}", rows, order)
    _write_rows(parent / "nap", [{"event": "diagnostics", "frames": 1, "seed": 0}], order)
    runs = analysis.load_runs(parent)  # a single path needs no list
    assert [run.name for run in runs] == ["nap", "baseline"]  # the sweep's order, not by name
    baseline = runs[1]
    assert baseline.path == parent / "baseline" and len(baseline.workdirs) == 2
    s = analysis.series(baseline, "weight_norm/x")
    assert s.seeds == 2 and list(s.x) == [1, 2]
    np.testing.assert_allclose(s.mean, 0.5)
    # Work dirs of the same name: labels name their parent too, then their position.
    other = _write_rows(tmp_path / "other" / "nap", [{"event": "diagnostics", "frames": 1}])
    assert [r.name for r in analysis.load_runs([parent / "nap", other])] == [
        "sweep/nap",
        "other/nap",
    ]
    twice = analysis.load_runs([parent / "nap", parent / "nap" / "metrics.jsonl"])
    assert [run.name for run in twice] == ["sweep/nap#0", "sweep/nap#1"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a work dir"):
        analysis.load_runs([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a work dir"):
        analysis.load_runs([tmp_path / "notes.txt"])


def test_y_limits_come_from_what_a_metric_means():
    # A held weight norm reads as a flat line at its value, not float noise filling the panel.
    low, high = figures_lib.y_limits(
        np.array([45.02, 45.02 + 1e-6]), figures_lib.y_scale("weight_norm/h")
    )
    assert high - low >= 0.1 * 45.02 and low < 45.02 < high
    assert abs((low + high) / 2 - 45.02) < 1e-3
    # Fractions start at 0 and span at least 0.1; accuracies show [0, 1].
    low, high = figures_lib.y_limits(np.zeros(5), figures_lib.y_scale("dormant_0.025/h"))
    assert low < 0 < 0.1 < high < 0.2
    low, high = figures_lib.y_limits(np.array([0.4, 0.5]), figures_lib.y_scale("dead"))
    assert low <= 0 and 0.5 < high <= 1.05
    low, high = figures_lib.y_limits(np.array([0.1, 0.13]), figures_lib.y_scale("end_accuracy"))
    assert low < 0 and high > 1
    # Log metrics show at least a decade; ranks start at 0.
    low, high = figures_lib.y_limits(
        np.array([1e-4, 1.01e-4]), figures_lib.y_scale("effective_lr/h")
    )
    assert high / low >= 10 and low < 1e-4 < high
    # A singular value growing 30-fold beside one that barely moves: both read on a log axis.
    assert figures_lib.y_scale("feature_top_singular_value/head").log
    assert figures_lib.y_limits(np.array([35.0, 38.0]), figures_lib.y_scale("srank/h"))[0] <= 0
    # Frame and step counts: one unit per axis, in every label.
    formatter = figures_lib.count_formatter()
    with warnings.catch_warnings():  # no deprecated Formatter attribute (gone in Matplotlib 3.13)
        warnings.simplefilter("error")
        assert formatter.format_ticks([0, 20_000, 40_000, 60_000]) == ["0", "20k", "40k", "60k"]
        assert formatter.format_ticks([0, 1.5e6, 3e6]) == ["0", "1.5M", "3M"]
        assert formatter.format_ticks([0, 2000, 4000, 8000])[-1] == "8,000"
    # A moving metric keeps its own range.
    low, high = figures_lib.y_limits(np.array([16.0, 40.0]), figures_lib.y_scale("weight_norm/h"))
    assert 14 < low < 16 and 40 < high < 42


def test_figures_read_right(tmp_path, workdirs):
    """Plain tick labels, frames / steps x-axes with switches marked, one colour per curve."""
    rows = []
    for frames in range(0, 2000, 250):
        rows.append(
            {
                "event": "diagnostics",
                "frames": frames,
                "step": frames // 4,
                "seed": 0,
                "game": "pong" if frames < 1000 else "breakout",
                "block": int(frames >= 1000),
                "weight_norm/head/hidden_0": 45.02 + 1e-6 * frames,
                "effective_lr/head/hidden_0": 1e-4,
            }
        )
    rows.append({"event": "switch", "frames": 1000, "step": 250, "seed": 0, "game": "breakout"})
    rl = analysis.load_run(_write_rows(tmp_path / "rl", rows))
    fig = figures_lib.plot_layer_metric([rl], "weight_norm")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.yaxis.get_offset_text().get_text() == ""  # no '+4.502e1' above the axis
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert any(label.startswith("45") for label in labels), labels
    assert ax.get_xlabel() == "frames" and ax.get_xlim()[0] == 0
    switch_lines = [line for line in ax.get_lines() if line.get_gid() == figures_lib.SWITCH_GID]
    assert [list(line.get_xdata()) for line in switch_lines] == [[1000, 1000]]
    texts = {t.get_text().strip() for t in ax.texts}
    assert texts == {"pong", "breakout"}  # the game each block plays
    assert figures_lib.figure_contents(fig) == {"head/hidden_0": {"rl": 8}}
    figures_lib.pyplot().close(fig)
    # Zeros on a log axis (the update ratio before any update) are no figure at all.
    zeros = [{"event": "diagnostics", "step": 0, "seed": 0, "update_ratio/hidden_0": 0.0}]
    assert (
        figures_lib.plot_layer_metric(
            [analysis.load_run(_write_rows(tmp_path / "z", zeros))], "update_ratio"
        )
        is None
    )
    # A zero among positive values on a log axis is a gap, not a line up from the axis's bottom;
    # and a one-panel figure is wide enough for its title and legend.
    zero_first = zeros + [{**zeros[0], "step": 10, "update_ratio/hidden_0": 3e-3}]
    fig = figures_lib.plot_layer_metric(
        [analysis.load_run(_write_rows(tmp_path / "z1", zero_first))], "update_ratio"
    )
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "z1"]
    assert np.isnan(line.get_ydata()[0]) and line.get_ydata()[1] == pytest.approx(3e-3)
    assert fig.get_figwidth() >= figures_lib.MIN_FIGURE_WIDTH
    figures_lib.pyplot().close(fig)
    # An RL run's summary counts frames and no tasks (it has none).
    assert analysis.summary([rl]) == [{"curve": "rl", "seed count": 1, "last frames": 1750}]
    train_only = [{"event": "train", "frames": 16 * u, "step": u, "seed": 0} for u in range(201)]
    train_only = analysis.load_run(_write_rows(tmp_path / "train_only", train_only))
    assert analysis.summary([train_only])[0]["last frames"] == 3200  # without diagnostics rows

    runs = analysis.load_runs(workdirs)  # continual: 3 curves, tasks end every 50 steps
    colors = figures_lib.curve_colors(runs)
    seen = {}
    for make in (
        lambda: figures_lib.plot_layer_metric(runs, "weight_norm"),
        lambda: figures_lib.plot_task_metrics(runs),
    ):
        fig = make()
        ax = fig.axes[0]
        assert ax.get_xlabel() == "optimizer steps"
        marks = sorted(
            line.get_xdata()[0]
            for line in ax.get_lines()
            if line.get_gid() == figures_lib.SWITCH_GID
        )
        assert marks == [50, 100, 150]  # task ends inside the drawn range
        for line in ax.get_lines():
            if line.get_gid() != figures_lib.SWITCH_GID:
                seen.setdefault(line.get_label(), set()).add(line.get_color())
        figures_lib.pyplot().close(fig)
    assert {label: c.pop() for label, c in seen.items() if len(c) == 1} == colors


def _eval_rows(scores, key="return_mean"):
    """'eval' rows of a 2-block sequence (pong, breakout) from {(block, game): score}."""
    return [
        {
            "event": "eval",
            "frames": 1000 * (b + 1),
            "seed": 0,
            "game": g,
            "block": b,
            "trained_game": ("pong", "breakout")[b],
            "visit": 1,
            "end_of_block": True,
            key: value,
        }
        for (b, g), value in scores.items()
    ]


def test_evaluation_matrix_colours_do_not_turn_noise_into_structure(tmp_path):
    # Human-normalized scores near random play: one scale for all runs, at least -1..1, so
    # -0.0085 and 0.0035 are both near white instead of the two ends of a colour map.
    near_random = {(0, "pong"): -0.0085, (1, "pong"): -0.0085, (1, "breakout"): 0.0035}
    runs = [
        analysis.load_run(_write_rows(tmp_path / name, _eval_rows(scores, "human_normalized")))
        for name, scores in (("a", near_random), ("b", {**near_random, (1, "breakout"): 2.5}))
    ]
    fig = figures.plot_evaluation_matrices(runs)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 2
    for image in images:
        assert (image.norm.vmin, image.norm.vmax) == (-2.5, 2.5)  # shared, from the data's max
    assert np.all(np.abs(images[0].norm(images[0].get_array().compressed()) - 0.5) < 0.01)
    figures_lib.pyplot().close(fig)
    # Raw returns: each game on its own range over every run, from min(0, lowest).
    raw = {(0, "pong"): -21.0, (1, "pong"): -10.5, (1, "breakout"): 4.0}
    run = analysis.load_run(_write_rows(tmp_path / "raw", _eval_rows(raw)))
    fig = figures.plot_evaluation_matrices([run])
    image = fig.axes[0].get_images()[0]
    np.testing.assert_allclose(image.get_array().filled(np.nan), [[0.0, np.nan], [0.5, 1.0]])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"-21", "-10.5", "4", "not played yet"} <= texts
    figures_lib.pyplot().close(fig)


def test_atari_and_minatar_games_of_one_name_are_not_pooled(tmp_path):
    """Atari's and MinAtar's breakout in one report: a panel and a colour range each."""
    atari_env = {"env": {"noop_max": 30, "frame_skip": 4}}
    minatar_env = {"env": {"frame_skip": 1}}
    scores = {(0, "breakout"): 0.25, (1, "breakout"): 0.25}
    runs = [
        analysis.load_run(_write_rows(tmp_path / "atari", _eval_rows(scores), atari_env)),
        analysis.load_run(
            _write_rows(
                tmp_path / "minatar", _eval_rows({**scores, (1, "breakout"): 1.5}), minatar_env
            )
        ),
    ]
    fig = figures.plot_eval_returns(runs)
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert titles == ["Atari breakout", "MinAtar breakout"]
    figures_lib.pyplot().close(fig)
    fig = figures.plot_evaluation_matrices(runs)
    atari_image = fig.axes[0].get_images()[0]  # 0.25 is Atari breakout's highest: the top colour
    assert atari_image.get_array().compressed().max() == pytest.approx(1.0)
    figures_lib.pyplot().close(fig)
    assert figures.with_distinct_games(runs[:1]) == runs[:1]  # one environment: names kept


def test_a_one_point_curve_over_seeds_shows_its_spread():
    """fill_between draws nothing at a single x: the seeds' min and max show as an error bar."""
    plt = figures_lib.pyplot()
    fig, ax = plt.subplots()
    one = analysis.Series(np.array([5.0]), np.array([0.25]), np.array([0.0]), np.array([0.5]), 2)
    figures_lib.draw(ax, one, "rainbow")
    (bar,) = [c for c in ax.containers if c.has_yerr]
    segments = bar.lines[2][0].get_segments()
    np.testing.assert_allclose(segments[0], [[5.0, 0.0], [5.0, 0.5]])
    plt.close(fig)


@pytest.mark.parametrize("curves, dpi", [(3, 90), (9, 90), (9, 60), (40, 100)])
def test_the_legend_of_long_labels_stays_inside_a_narrow_figure_and_below_its_panels(curves, dpi):
    """Labels of task families and variants are long: four to a row ran off both sides of a
    one-panel figure. The legend takes the columns that fit; more rows grow the figure
    downwards, a gap below the panels' tick labels and axis label at any resolution, with the
    panels' size and the title's distance from the top kept."""
    plt = figures_lib.pyplot()
    fig, axes = figures_lib.grid(plt, 1)
    fig.set_dpi(dpi)
    axes_height = axes[0].get_window_extent().height
    for i in range(curves):
        axes[0].plot([0, 1], [i, i], label=f"bit_flipping/layernorm+nap, l2=0.001, lr={i}e-3")
    axes[0].set_xlabel("optimizer steps")
    figures_lib.finish(fig, axes, "Norms")
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
    gap = (axes[0].get_tightbbox(renderer).y0 - box.y1) / dpi
    assert 0 <= box.y0 and gap >= 0.5 * figures_lib.LEGEND_GAP
    assert len(legend.get_texts()) == curves
    assert axes[0].get_window_extent().height == pytest.approx(axes_height)
    title_from_top = fig.get_figheight() * (1 - fig._suptitle.get_position()[1])
    assert title_from_top == pytest.approx(figures_lib.TITLE_FROM_TOP)
    plt.close(fig)


def test_a_label_wider_than_its_figure_is_wrapped_inside_it():
    """Even alone on its row, a 130-character label would run off both sides: it wraps."""
    plt = figures_lib.pyplot()
    fig, axes = figures_lib.grid(plt, 1)
    axes[0].plot([0, 1], [0, 1], label="run_" + "x" * 126)
    axes[0].plot([0, 1], [1, 0], label="a short one")
    figures_lib.finish(fig, axes, "Norms")
    (legend,) = fig.legends
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
    texts = [text.get_text() for text in legend.get_texts()]
    assert texts[0].replace("\n", "") == "run_" + "x" * 126 and "\n" in texts[0]
    assert texts[1] == "a short one"
    plt.close(fig)


def test_visit_bars_carry_their_values_so_a_zero_bar_shows():
    """A visit scoring exactly 0 draws a bar of no height: its label is what shows it is there."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots()
    visits = {"pong": {"visit_1": -2.0, "fresh": -2.0}, "breakout": {"visit_1": 0.0, "fresh": 1.5}}
    figures._draw_visit_bars(ax, visits, "run: after each visit vs fresh", "return_mean", "C0")
    labels = [text.get_text() for text in ax.texts]
    plt.close(fig)
    assert sorted(labels) == sorted(["-2", "0", "-2", "1.5"])


def test_each_grid_point_of_a_sweep_is_a_curve_of_its_own(tmp_path):
    """A continual sweep's grid (here L2 ∈ {0, 1e-4}) is compiled into one program: its points are
    different curves, labelled by their values, not seeds pooled into one band; a row of no grid
    point (a relaunch's 'resume' row) is no curve."""
    rows = []
    for l2, shift in ((0.0, 0.0), (1e-4, 10.0)):
        for seed in (0, 1):
            for task in (0, 1):
                rows.append(
                    {"event": "task", "variant": "layernorm", "seed": seed, "task": task,
                     "step": 10 * (task + 1), "l2": l2, "learning_rate": 1e-3,
                     "end_loss": shift + seed + task}
                )  # fmt: skip
    rows.append({"event": "resume", "variant": "layernorm", "step": 10, "checkpoint": 1})
    config = {"grid": {"l2": [0.0, 1e-4], "learning_rate": [], "weight_decay": [], "l2_init": []}}
    run = analysis.load_run(_write_rows(tmp_path / "sweep", rows, config))
    assert [label for _, _, label in analysis.curves([run])] == [
        "layernorm, l2=0",
        "layernorm, l2=0.0001",
    ]
    high = analysis.series(run, "end_loss", "task", "layernorm, l2=0.0001", x="task")
    np.testing.assert_allclose(high.mean, [10.5, 11.5])
    assert high.seeds == 2 and analysis.variant_of(run, "layernorm, l2=0.0001") == "layernorm"
    assert [entry["seed count"] for entry in analysis.summary([run])] == [2, 2]
    # Without a grid (an RL run logging its scheduled rate), a varying field splits nothing.
    plain = analysis.load_run(_write_rows(tmp_path / "rl", rows, {}))
    assert analysis.variants(plain) == ["layernorm"]


def test_interventions_are_marked_where_each_curve_intervened(tmp_path):
    """A triangle per application along the top edge, a bar over a summarized stretch (a
    continual row of `applications` every `every` steps), in the curve's colour; not data."""
    rl_rows = [
        {"event": "diagnostics", "frames": f, "step": f // 4, "seed": s, "weight_norm/h": f / 1e3}
        for f in range(0, 2000, 250)
        for s in (0, 1)
    ]
    rl_rows += [  # both seeds at 500 and 1500 (one mark each), one past the last point
        {"event": "intervention", "frames": f, "step": f // 4, "seed": s, "name": "redo"}
        for f in (500, 1500, 5000)
        for s in (0, 1)
    ]
    rl = analysis.load_run(_write_rows(tmp_path / "rl", rl_rows))
    fig = figures_lib.plot_layer_metric([rl], "weight_norm")
    (marker,) = [line for line in fig.axes[0].get_lines() if line.get_gid() == "intervention"]
    assert list(marker.get_xdata()) == [500, 1500] and marker.get_label() == "intervention"
    assert marker.get_color() == figures_lib.curve_colors([rl])["rl"]
    assert figures_lib.figure_contents(fig) == {"h": {"rl": 8}}
    figures_lib.pyplot().close(fig)
    # Two runs' rows of marks both sit above the curves' highest point.
    other = analysis.load_run(_write_rows(tmp_path / "rl2", rl_rows))
    fig = figures_lib.plot_layer_metric([rl, other], "weight_norm")
    low, high = fig.axes[0].get_ylim()
    marks = [line for line in fig.axes[0].get_lines() if line.get_gid() == "intervention"]
    assert len(marks) == 2
    assert all(y > (1.75 - low) / (high - low) + 0.02 for m in marks for y in m.get_ydata())
    figures_lib.pyplot().close(fig)
    # Thirty curves' rows share a quarter of the panel: the axis keeps its direction.
    many = [analysis.load_run(_write_rows(tmp_path / f"rl{i}", rl_rows)) for i in range(30)]
    fig = figures_lib.plot_layer_metric(many, "weight_norm")
    low, high = fig.axes[0].get_ylim()
    marks = [line for line in fig.axes[0].get_lines() if line.get_gid() == "intervention"]
    assert low < high and len(marks) == 30
    assert all(y > (1.75 - low) / (high - low) + 0.02 for m in marks for y in m.get_ydata())
    figures_lib.pyplot().close(fig)
    continual_rows = [
        {"event": "diagnostics", "step": t, "seed": 0, "weight_norm/h": 1.0}
        for t in range(0, 201, 50)
    ]
    continual_rows += [
        {"event": "intervention", "step": 100, "seed": 0, "name": "noisy_updates"},  # boundary
        {"event": "intervention", "step": 199, "seed": 0, "name": "noisy_updates",
         "applications": 100, "every": 1},
    ]  # fmt: skip
    continual = analysis.load_run(_write_rows(tmp_path / "c", continual_rows))
    fig = figures_lib.plot_layer_metric([continual], "weight_norm")
    marks = [line for line in fig.axes[0].get_lines() if line.get_gid() == "intervention"]
    assert sorted(list(line.get_xdata()) for line in marks) == [[100], [100, 199]]
    figures_lib.pyplot().close(fig)


def test_a_logged_per_layer_metric_no_figure_draws_gets_its_own_and_leaves_no_stale_png(tmp_path):
    from benchmarks import report  # noqa: PLC0415

    rows = [
        {"event": "diagnostics", "step": t, "seed": 0, "weight_norm/h": 1.0, "dead/h": 0.1,
         "mine/h": 2.0 + t, "mine": 3.0}
        for t in range(0, 30, 10)
    ]  # fmt: skip
    run = analysis.load_run(_write_rows(tmp_path / "run", rows))
    assert figures.other_layer_metrics([run]) == ["dead", "mine"]  # weight_norm has its figure
    out = tmp_path / "report"
    rendered = report.render_figures([run], out)
    assert {"layers_dead", "layers_mine", "weight_norm"} <= set(rendered)
    assert rendered["layers_dead"].title == "Dead units per layer"
    assert rendered["layers_mine"].contents == {"h": {"run": 3}}
    rows = [{k: v for k, v in row.items() if not k.startswith("mine")} for row in rows]
    run = analysis.load_run(_write_rows(tmp_path / "run", rows))
    assert "layers_mine" not in report.render_figures([run], out)
    assert not (out / "layers_mine.png").exists() and (out / "layers_dead.png").exists()


def test_a_run_whose_rows_do_not_all_carry_frames_is_read_against_steps():
    """The x-axis is frames only when every row has them (an RL run); otherwise steps, so that
    no row of the series is dropped for lacking the other axis."""
    rows = [
        {"event": "diagnostics", "step": 0, "frames": 0, "seed": 0, "param_norm": 1.0},
        {"event": "diagnostics", "step": 10, "seed": 0, "param_norm": 2.0},
    ]
    run = analysis.Run("mixed", Path("."), {}, rows)
    assert analysis.x_axis(run) == "step"
    series = analysis.series(run, "param_norm")
    np.testing.assert_array_equal(series.x, [0, 10])
    np.testing.assert_array_equal(series.mean, [1.0, 2.0])
    rl = analysis.Run("rl", Path("."), {}, [{**row, "frames": 4 * row["step"]} for row in rows])
    assert analysis.x_axis(rl) == "frames"
    np.testing.assert_array_equal(analysis.series(rl, "param_norm").x, [0, 40])


def test_game_switches_read_from_the_schedule_start_after_the_first_game():
    """A run without 'switch' rows (e.g. one read before its first switch was logged) takes its
    switches from the config's schedule: one at the start of every game but the first; frame 0
    is where the run starts, not a switch."""
    schedule = [{"game": "pong", "frames": 1000}, {"game": "breakout", "frames": 500}]
    run = analysis.Run("rl", Path("rl"), {"schedule": schedule}, [])
    assert figures_lib.switches(run, None, "frames") == [(1000.0, "breakout")]


def test_two_task_families_get_a_row_of_panels_each_and_many_switches_are_thinned(tmp_path):
    """One continual sweep of permuted digits (4 tasks of 50 steps, 3 layers) and bit flipping
    (60 flip periods of 1,000 steps, 2 layers): each family's panels have its own x-range and
    start a row, and the 59 flips are marked by every 3rd (at most `MAX_SWITCH_LINES`), said in
    the legend."""
    rows = []
    for family, variant, tasks, length in (
        ("input_permutation", "digits", 4, 50),
        ("bit_flipping", "bits", 60, 1000),
    ):
        for task in range(tasks):
            base = {"step": (task + 1) * length, "seed": 0, "variant": variant, "task": task}
            base["task_name"] = family
            rows.append({**base, "event": "task", "online_loss": 1.0 / (task + 1)})
            rows.append({**base, "event": "diagnostics", "weight_norm/hidden_0": 1.0 + task})
            rows.append({**base, "event": "diagnostics", "weight_norm/output": 2.0})
            if family == "input_permutation":  # 2 hidden layers against 1
                rows.append({**base, "event": "diagnostics", "weight_norm/hidden_1": 3.0})
    run = analysis.load_run(_write_rows(tmp_path / "dohare", rows))
    fig = figures_lib.plot_layer_metric([run], "weight_norm")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert figures_lib.figure_contents(fig) == {
        "input_permutation: hidden_0": {"digits": 4},
        "input_permutation: output": {"digits": 4},
        "input_permutation: hidden_1": {"digits": 4},
        "bit_flipping: hidden_0": {"bits": 60},
        "bit_flipping: output": {"bits": 60},
    }
    assert panels["input_permutation: hidden_0"].get_xlim()[1] < 300  # not squeezed by 60k
    below = panels["bit_flipping: hidden_0"].get_position()
    assert below.y1 < panels["input_permutation: hidden_0"].get_position().y0  # a row of its own
    flips = [
        line for line in panels["bit_flipping: output"].get_lines() if line.get_gid() == "switch"
    ]
    assert len(flips) == 19 <= figures_lib.MAX_SWITCH_LINES  # 3,000, 6,000, ..., 57,000
    assert flips[0].get_xdata()[0] == 3000 and flips[0].get_label() == "task switch (every 3rd)"
    figures_lib.pyplot().close(fig)
    assert set(figures_lib.figure_contents(figures_lib.plot_task_metrics([run]))) == {
        "input_permutation: online loss",
        "bit_flipping: online loss",
    }
    figures_lib.pyplot().close("all")
    assert analysis.task_family(run, "bits") == "bit_flipping"
    assert figures_lib.family_rows(["a", "a", "a", "b", "b"]) == (3, [0, 1, 2, 3, 4, None])
    assert figures_lib.family_rows(["a", "b"]) == (2, [0, 1])  # side by side where they fit
    ordinals = [figures_lib._ordinal(n) for n in (2, 3, 4, 11, 21)]
    assert ordinals == ["2nd", "3rd", "4th", "11th", "21st"]


def test_the_first_panels_y_label_stays_inside_a_two_panel_figure():
    """`grid`'s left margin holds five-character tick labels and the y label: at 7% of a
    two-panel figure's width the label beside '-1.25' fell off its left edge."""
    plt = figures_lib.pyplot()
    fig, axes = figures_lib.grid(plt, 2)
    values = np.array([-2.25, -1.25])
    axes[0].plot([0.0, 40_000.0], values)
    figures_lib.style_axes(axes[0], "return_mean", [values], "frames")
    fig.canvas.draw()
    assert axes[0].yaxis.label.get_window_extent().x0 >= 0
    plt.close(fig)
