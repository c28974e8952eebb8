"""The headline journey at smoke scale: the Atari sequence job and a continual sweep with
diagnostics on, then ``python -m scripts.report`` on their work dirs: every diagnostics figure
has data, the HTML page embeds and links every figure (and still does once moved), and the
diagnostics reach TensorBoard per layer under stable tags."""

import json
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from benchmarks import report  # noqa: E402
from plasticity import analysis, workdir  # noqa: E402
from scripts import report as report_script  # noqa: E402
from scripts import train_atari, train_continual  # noqa: E402

DIAGNOSTICS = ("weight_norm", "effective_lr", "update_ratio", "dormant", "srank")
# The figures those diagnostics feed (param_norm, logged with weight_norm, is in 'curvature').
DIAGNOSTICS_FIGURES = {
    "weight_norm",
    "effective_lr",
    "update_ratio",
    "unit_fractions",
    "dormant_per_layer",
    "srank",
    "curvature",
}


@pytest.fixture(scope="module")
def atari_run(tmp_path_factory):
    """The README's main job at smoke scale: the same experiment file and flags, its LayerNorm +
    NaP variant, 512 frames a game, two evaluation episodes, the quickstart's diagnostics every
    128 frames (no fresh references)."""
    path = tmp_path_factory.mktemp("quickstart") / "atari"
    status = train_atari.main(
        [
            "train_atari",
            "--experiment=benchmarks/configs/atari_sequence.py:smoke,rainbow_ln_nap",
            "--games=Pong,Breakout",
            "--cycles=1",
            "--frames_per_game=512",
            "--nofresh_reference",
            "--noprogress",
            "--config.replay.min_fill_fraction=0.0625",
            "--config.evaluation.episodes=2",
            "--config.diagnostics.every_frames=128",
            f"--config.diagnostics.names={DIAGNOSTICS!r}",
            f"--workdir={path}",
        ]
    )
    assert status == 0
    return path / "rainbow_ln_nap"


@pytest.fixture(scope="module")
def continual_run(tmp_path_factory):
    """NaP's label-reset sweep at smoke scale, two of its variants, the quickstart's
    diagnostics."""
    path = tmp_path_factory.mktemp("quickstart") / "continual"
    status = train_continual.main(
        [
            "train_continual",
            "--experiment=benchmarks/configs/nap_label_reset.py:smoke",
            "--config.variant_order=('no_norm', 'layernorm_nap')",
            f"--config.diagnostics.names={DIAGNOSTICS!r}",
            "--noprogress",
            f"--workdir={path}",
        ]
    )
    assert status == 0
    return path


def _links(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', page)


def _check_page(out: Path, manifest: dict) -> None:
    """Every figure is embedded and linked by a relative path that resolves next to the page."""
    page = (out / "report.html").read_text(encoding="utf-8")
    for stem, figure in manifest["figures"].items():
        assert f'href="{figure["file"]}"' in page, stem
        assert (out / figure["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'id="figure-{stem}"' in page
    assert page.count('src="data:image/png;base64,') == len(manifest["figures"])
    for link in _links(page):
        if not link.startswith(("data:", "#")):
            assert not Path(link).is_absolute() and (out / link).is_file(), link


def test_quickstart_report(atari_run, tmp_path, capsys):
    assert report_script.main(["report", str(atari_run)]) == 0
    out = atari_run / "report"  # the default: <first work dir>/report
    printed = capsys.readouterr().out
    assert f"open {out / 'report.html'}" in printed
    manifest = json.loads((out / "report.json").read_text())
    assert DIAGNOSTICS_FIGURES <= set(manifest["figures"])
    assert {"eval_returns", "evaluation_matrix"} <= set(manifest["figures"])
    rows = analysis.events(analysis.load_run(atari_run), "diagnostics")
    for stem in DIAGNOSTICS_FIGURES:
        panels = manifest["figures"][stem]["panels"]
        assert panels, stem
        for panel, curves in panels.items():  # every panel has the run's curve, every point
            assert curves == {"rainbow_ln_nap": len(rows)}, (stem, panel)
    hidden = {"torso/conv_0", "torso/conv_1", "head/value_hidden_0", "head/advantage_hidden_0"}
    layers = hidden | {"head/output_value", "head/output_advantage"}
    assert set(manifest["figures"]["weight_norm"]["panels"]) == layers
    assert set(manifest["figures"]["srank"]["panels"]) == hidden
    _check_page(out, manifest)
    page = (out / "report.html").read_text(encoding="utf-8")
    for section in ("Evaluation matrix", "Config differences", "Launches (run_info.json)"):
        assert section in page
    assert "<th>after block: game trained</th><th>pong</th><th>breakout</th>" in page
    launch = json.loads((atari_run / "run_info.json").read_text())["launches"][0]
    assert launch["started"] in page and launch["cpu"]["model"] in page

    # The out dir moved elsewhere still shows and links every figure.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    _check_page(moved, manifest)

    # TensorBoard: every diagnostics key of metrics.jsonl under diagnostics/<metric>/<layer>,
    # against frames; evaluation scores per game.
    scalars = workdir.read_scalars(atari_run)
    keys = {k for row in rows for k, v in row.items() if "/" in k and isinstance(v, float)}
    assert {f"weight_norm/{layer}" for layer in layers} <= keys
    for key in keys:
        logged = scalars[f"diagnostics/{key}"]
        assert [x for x, _ in logged] == [row["frames"] for row in rows]
        np.testing.assert_allclose([v for _, v in logged], [row[key] for row in rows], rtol=1e-6)
    assert {"pong/eval/return_mean", "breakout/eval/return_mean"} <= set(scalars)
    assert "eval/return_mean" not in scalars  # games are never averaged together


def test_continual_report_and_tensorboard(continual_run, tmp_path):
    written = report.write_report([continual_run], tmp_path / "report")
    # The dormant fractions at the thresholds 'dormant_per_layer' does not show: a figure each.
    others = {"layers_dormant_0", "layers_dormant_0.1"}
    assert set(written.figures) == {"task_metrics", *DIAGNOSTICS_FIGURES, *others}
    for stem, figure in written.figures.items():
        assert figure.has_data, stem
        for panel, curves in figure.contents.items():
            assert set(curves) == {"no_norm", "layernorm_nap"}, (stem, panel)
    manifest = json.loads((tmp_path / "report" / "report.json").read_text())
    _check_page(tmp_path / "report", manifest)
    page = written.page.read_text(encoding="utf-8")
    assert "<td>optimizer.nap.enabled</td><td>false</td><td>true</td>" in page  # the config diff
    assert "<td>network.norm</td>" in page
    assert "the shaded band their minimum to maximum" in page  # how to read every figure

    scalars = workdir.read_scalars(continual_run)
    for variant in ("no_norm", "layernorm_nap"):
        for layer in ("hidden_0", "hidden_1", "output"):
            steps = [x for x, _ in scalars[f"{variant}/diagnostics/weight_norm/{layer}"]]
            assert steps == sorted(set(steps)) and steps[0] == 0


def test_home_directory_paths_are_expanded(continual_run, tmp_path, monkeypatch):
    """``--out=~/x`` and a quoted ``~/run`` (left as they are by the shell) are the home
    directory's, not folders named '~' in the current directory."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(continual_run, home / "run")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert report_script.main(["report", "~/run", "--out=~/figures"]) == 0
    assert (home / "figures" / "report.html").is_file() and not (tmp_path / "~").exists()


def test_bad_work_dirs_are_one_line_errors(tmp_path, capsys):
    assert report_script.main(["report", str(tmp_path / "absent")]) == 1
    (tmp_path / "empty").mkdir()
    assert report_script.main(["report", str(tmp_path / "empty")]) == 1
    assert report_script.main(["report"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("report: error: ") for line in errors)
    assert "absent" in errors[0] and "not a work dir" in errors[1] and "WORKDIR" in errors[2]
    # An output place that cannot be written, a resolution that cannot be drawn: one line each.
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"event": "diagnostics", "step": 1, "weight_norm/h": 1.0}\n'
    )
    (tmp_path / "a_file").write_text("")
    for args in (["--out", str(tmp_path / "a_file")], ["--out", "/dev/null/x"], ["--dpi=100000"]):
        assert report_script.main(["report", str(run), *args]) == 1, args
    errors = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[2] for line in errors] == [
        "cannot write the report",
        "cannot write the report",
        "--dpi must be between 10 and 1200, got 100000",
    ]


def test_a_matrix_without_a_single_score_is_left_out(tmp_path):
    """Human-normalized scores are null where no episode fits the reference protocol (the
    quickstart's short episodes): the page shows no table of dashes for them."""
    (tmp_path / "evaluation_matrix.json").write_text(
        json.dumps(
            {
                "games": ["pong", "breakout"],
                "blocks": [{"game": "pong"}, {"game": "breakout"}],
                "return_mean": [[-2.0, None], [-1.0, 0.5]],
                "human_normalized": [[None, None], [None, None]],
                "visit_scores": {"pong": [-2.0]},
                "visit_scores_human_normalized": {"pong": [None]},
            }
        )
    )
    matrix = report._matrix_from_file(tmp_path)
    assert list(matrix["matrices"]) == ["return_mean"]
    assert matrix["visits"] == {"return_mean": {"pong": [-2.0]}}


def test_the_library_module_run_as_a_program_writes_the_report(continual_run, tmp_path):
    """``python -m benchmarks.report WORKDIR`` (the library's name) runs `scripts.report`
    rather than doing nothing with exit status 0."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    out = tmp_path / "figures"
    command = [sys.executable, "-m", "benchmarks.report", str(continual_run), f"--out={out}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.html").is_file() and (out / "weight_norm.png").is_file()


def test_every_panel_says_what_its_y_axis_measures_and_titles_name_what_they_hold(atari_run):
    """Each panel's y-axis is labelled with what it measures (the panel's title names the layer
    or metric); the curvature figure of a run that logged only the norms is titled so."""
    from benchmarks import analysis as figures_of

    specs = dict(figures_of.figure_specs([analysis.load_run(atari_run)]))
    expected = {
        "weight_norm": {"‖W‖ (Frobenius)"},
        "effective_lr": {"η / ‖W‖^p"},
        "dormant_per_layer": {"fraction of units"},
        "srank": {"srank"},
        "eval_returns": {"mean return"},
        "curvature": {"‖θ‖"},
    }
    for stem, labels in expected.items():
        fig = specs[stem]()
        assert {ax.get_ylabel() for ax in fig.axes if ax.get_visible()} == labels, stem
        if stem == "curvature":
            assert fig.get_suptitle() == "Norms"
        figures_of.pyplot().close(fig)


def test_an_srank_axis_ticks_whole_numbers():
    """srank counts singular values: a curve from 1 to 2 is ticked 0, 1, 2, not at quarters."""
    from plasticity import figures

    fig, ax = figures.pyplot().subplots()
    values = np.array([1.0, 2.0])
    ax.plot([0, 100], values)
    figures.style_axes(ax, "srank/torso/conv_0", [values], "frames")
    fig.canvas.draw()
    ticks = ax.get_yticks()
    assert len(ticks) >= 3 and np.array_equal(ticks, np.round(ticks)), ticks
    figures.pyplot().close(fig)


def test_game_names_of_short_blocks_are_shortened_not_written_over_each_other(tmp_path):
    """Twelve blocks of long prefixed names (an Atari and a MinAtar game in one report): each name
    fits before the next block's, its family prefix dropped first, then shortened with an
    ellipsis where it must."""
    from plasticity import figures

    games = ["minatar/space_invaders", "atari/breakout"] * 6
    rows = []
    for frames in range(0, 12000, 250):
        block = frames // 1000
        rows.append(
            {
                "event": "diagnostics",
                "frames": frames,
                "step": frames,
                "seed": 0,
                "block": block,
                "game": games[block],
                "weight_norm/hidden_0": 1.0 + frames * 1e-4,
            }
        )
    rows += [
        {"event": "switch", "frames": 1000 * b, "step": 1000 * b, "seed": 0, "game": games[b]}
        for b in range(1, 12)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    fig = figures.plot_layer_metric([analysis.load_run(tmp_path)], "weight_norm")
    fig.canvas.draw()
    ax = fig.axes[0]
    names = sorted(
        (t for t in ax.texts if t.get_gid() == figures.SWITCH_GID),
        key=lambda t: t.get_window_extent().x0,
    )
    assert len(names) == 12
    assert any(t.get_text().endswith("…") for t in names)
    assert all(t.get_text().strip()[:3] in ("spa", "bre") for t in names)  # games, not prefixes
    boxes = [t.get_window_extent() for t in names]
    for box, following in zip(boxes, boxes[1:]):
        assert box.x1 <= following.x0 + 1, (box, following)
    assert boxes[-1].x1 <= ax.get_window_extent().x1 + 1
    figures.pyplot().close(fig)


def test_an_rl_report_does_not_miss_task_metrics(tmp_path, capsys):
    """RL runs never log task metrics: their report leaves that figure out silently, and a
    continual run's report still says it has none."""
    rl = tmp_path / "rl"
    rl.mkdir()
    rows = [
        {"event": "diagnostics", "frames": 4 * s, "step": s, "weight_norm/h": 1.0} for s in (0, 8)
    ]
    (rl / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert report_script.main(["report", str(rl)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "no data" in line]
    assert "task_metrics" not in line and "eval_returns" in line  # an RL run may miss those
    page = (rl / "report" / "report.html").read_text(encoding="utf-8")
    assert "<code>task_metrics</code>" not in page and "<code>eval_returns</code>" in page
    assert "task_metrics" not in json.loads((rl / "report" / "report.json").read_text())["missing"]
    continual = tmp_path / "continual"
    continual.mkdir()
    rows = [{key: value for key, value in row.items() if key != "frames"} for row in rows]
    (continual / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    missing = report.write_report([continual]).missing
    assert missing[0] == "task_metrics" and "eval_returns" not in missing
