"""`python -m benchmarks.reproduce`: every claim at smoke scale (plumbing: work dirs, tables,
figures, verdict fields), the paper-scale configs, and the claims' pure metric functions."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import claims, reproduce
from benchmarks.claims import (
    base,
    dormant_grid,
    effective_lr,
    label_reset,
    large_offset,
    nonstationarity,
    sequential_games,
    stats,
)


def _reproduce(root: Path, *args: str) -> tuple[int, str]:
    """`python -m benchmarks.reproduce ARGS --scale=smoke --seeds=2` as a user runs it.

    Its own process, compiled as a user's is: XLA's backend at optimization level 0 would
    compile these smoke runs faster, but on jaxlib 0.10.2 it turns the forward-mode derivative
    that `nap.scale_invariant_norms` takes of a small CNN with LayerNorm to NaN (finite at the
    default level), so NaP variants would project other groups than they do for a user.
    """
    command = [sys.executable, "-m", "benchmarks.reproduce", *args, "--scale=smoke"]
    command += ["--seeds=2", f"--workdir={root}", "--noprogress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    return done.returncode, done.stdout + done.stderr


def _check_result(root: Path, name: str) -> dict:
    """The fields every claim's result.json must have, its figures and work dirs."""
    result = json.loads((root / name / base.RESULT_FILE).read_text())
    assert result["claim"] == name and result["scale"] == "smoke" and result["seeds"] == 2
    assert result["verdict"]
    assert result["seconds"] > 0
    assert result["rows"], name
    for row in result["rows"]:
        assert row["metric"] and row["verdict"] and row["comparisons"]
        assert row["arms"]
        for arm in row["arms"].values():
            assert set(arm) == {"mean", "low", "high", "n"}
            assert arm["n"] == 2 or arm["mean"] is None  # no finite value: a null mean
        for comparison in row["comparisons"]:
            assert comparison["direction"] in (1, -1)
            assert comparison["verdict"] in (
                stats.PASS,
                stats.OPPOSITE,
                stats.INCONCLUSIVE,
                stats.TOO_FEW_SEEDS,
            )
    assert result["figures"]
    for figure in result["figures"]:
        with open(figure, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for workdir in result["workdirs"]:
        assert json.loads((Path(workdir) / "config.json").read_text())
    assert (root / name / base.TABLE_FILE).read_text().startswith("| claim |")
    return result


@pytest.mark.slow
def test_all_runs_every_claim_at_smoke_scale(tmp_path):
    """Every claim through the command (~35 compiled programs: 3-5 minutes on 2 loaded cores)."""
    status, output = _reproduce(tmp_path, "all")
    assert status == 0, output[-2000:]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.splitlines()[0] in output  # the table is printed
    for name in claims.NAMES:
        assert f"| {name} " in summary
        _check_result(tmp_path, name)


def test_replay_claim_trains_claim_a_first_then_a_reevaluates(tmp_path, capsys):
    """(c) trains (a)'s sweep, then one replay per seed; (a) afterwards only re-evaluates, and a
    relaunch of a finished claim keeps the minutes of the run that trained it. Stopped after its
    first checkpoint, the claim says where and writes no result; the relaunch resumes it."""
    status, output = _reproduce(tmp_path, "effective_lr", "--stop_after_checkpoints=1")
    sweep = tmp_path / "label_reset" / "sweep"
    assert status == 0, output[-2000:]
    assert (
        f"stopped after a checkpoint at step 40 of 120 (relaunch to resume); work dir {sweep}"
        in (output)
    )
    assert not (tmp_path / "effective_lr" / base.RESULT_FILE).exists()
    assert not (tmp_path / "effective_lr" / "replay_seed_0").exists()
    assert base.claim_settings(tmp_path / "label_reset") == ("smoke", 2)  # (c) trains (a)'s sweep
    assert not (tmp_path / "effective_lr").exists()  # nothing of (c)'s own trained yet
    status, output = _reproduce(tmp_path, "effective_lr")
    assert status == 0, output[-2000:]
    assert "| effective_lr |" in output
    result = _check_result(tmp_path, "effective_lr")
    assert len(result["workdirs"]) == 3  # (a)'s sweep and two replays
    assert base.claim_settings(tmp_path / "effective_lr") == ("smoke", 2)
    assert result["rows"][1]["arms"].keys() == {"LN", "LN+NaP", "LN+NaP+replay"}
    argv = ["reproduce", "label_reset", "--scale=smoke", "--seeds=2", f"--workdir={tmp_path}"]
    assert reproduce.main(argv) == 0
    first = _check_result(tmp_path, "label_reset")
    assert "| label_reset |" in capsys.readouterr().out
    assert reproduce.main(argv) == 0
    again = json.loads((tmp_path / "label_reset" / base.RESULT_FILE).read_text())
    assert again["seconds"] == first["seconds"] and again["rows"] == first["rows"]


def test_a_stop_request_ends_the_claim_after_a_checkpoint(tmp_path):
    """A stop request (Ctrl-C, SIGTERM: the launch's ``should_stop``) reaches the claim's runs:
    the first run stops after its first checkpoint and no later run or claim starts."""
    with pytest.raises(base.ClaimStopped) as stopped:
        claims.run_claims(
            "all",
            tmp_path,
            scale="smoke",
            seeds=2,
            run_options={"should_stop": lambda: True, "show_progress": False},
        )
    result = stopped.value.result
    assert result.preempted and not result.completed and 0 < result.done < result.total
    assert result.workdir == tmp_path / "label_reset" / "sweep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label_reset"]
    assert not (tmp_path / "label_reset" / base.RESULT_FILE).exists()


def test_a_stop_request_in_a_claims_last_run_writes_its_table_then_stops(
    tmp_path, monkeypatch, capsys
):
    """A stop request that arrives during a claim's last run (its training then complete) lets
    the claim write its table; the next claim does not start, and the command says so in one
    line. Arriving during an earlier run of a claim, it stops the claim before its next run."""
    import types  # noqa: PLC0415

    trained = []

    def claim_module(name: str, runs: int):
        def run(workdir, scale, seeds, run_options, data_dir):
            for index in range(runs):
                trained.append(f"{name}/{index}")
                run_options["requested"].append(True)  # arrives as the run finishes
                done = types.SimpleNamespace(
                    completed=True, already_complete=False, status_line=lambda: "complete"
                )
                base.check_finished(done, base.Timer(), run_options, last=index == runs - 1)
            interval = stats.Interval(1.0, 0.5, 1.5, seeds)
            row = base.Row("final", "accuracy", {"A": interval}, [], verdict="CONFIRMED")
            return base.ClaimResult(name, scale, seeds, [row])

        return types.SimpleNamespace(run=run)

    modules = {"label_reset": claim_module("label_reset", 1)}
    monkeypatch.setattr(claims, "module", lambda name: modules.get(name, claim_module(name, 2)))
    requested = []
    options = {"should_stop": lambda: bool(requested), "requested": requested}
    with pytest.raises(base.ClaimStopped) as stopped:
        claims.run_claims("all", tmp_path, scale="smoke", seeds=2, run_options=options)
    assert stopped.value.result is None and stopped.value.after == "label_reset"
    assert trained == ["label_reset/0"]
    assert (tmp_path / "label_reset" / base.TABLE_FILE).read_text().startswith("| claim |")
    assert capsys.readouterr().out.startswith("| label_reset (final) | A |")
    requested.clear()
    with pytest.raises(base.ClaimStopped) as stopped:  # two runs: stopped after the first
        claims.run_claims("dormant_grid", tmp_path, scale="smoke", seeds=2, run_options=options)
    assert stopped.value.result.completed and trained[-1] == "dormant_grid/0"
    assert not (tmp_path / "dormant_grid" / base.RESULT_FILE).exists()


def test_a_claim_held_at_other_settings_is_refused_before_any_claim_trains(tmp_path):
    """`all` checks every claim directory before the first claim trains: one holding a claim at
    another seed count (its claim.json, or the result.json of a finished claim) is one line,
    and nothing is written; (c) checks the sweep of (a) it trains first."""
    base.mark_claim_dir(tmp_path / "dormant_grid", "smoke", 2)
    with pytest.raises(ValueError) as refused:
        claims.run_claims("all", tmp_path, scale="smoke", seeds=3)
    assert str(refused.value) == (
        f"{tmp_path / 'dormant_grid'} holds the claim at --scale=smoke --seeds=2, not "
        "--scale=smoke --seeds=3; relaunch with those flags to resume it, or use another --workdir"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dormant_grid"]
    (tmp_path / "label_reset").mkdir()
    (tmp_path / "label_reset" / base.RESULT_FILE).write_text('{"scale": "cpu", "seeds": 3}')
    with pytest.raises(ValueError, match=r"label_reset holds the claim at --scale=cpu --seeds=3"):
        claims.run_claims("effective_lr", tmp_path, scale="smoke", seeds=3)
    assert not (tmp_path / "effective_lr").exists()


def test_paper_scale_configs_are_written_and_checked(tmp_path, capsys):
    status = reproduce.main(
        ["reproduce", "all", "--scale=paper", "--dry_run", f"--workdir={tmp_path}"]
    )
    assert status == 0
    for name in claims.NAMES:
        written = sorted((tmp_path / name).glob("*.config.json"))
        assert written, name
        for path in written:
            assert json.loads(path.read_text())
    dormant = json.loads((tmp_path / "dormant_grid" / "grid.config.json").read_text())
    assert dormant["data"]["name"] == "mnist" and dormant["num_seeds"] == 3


def test_dormant_grid_resets_labels_every_1000_steps_as_the_paper():
    """Claim (f) at cpu scale keeps the paper's task length and width (over 10 tasks of 500
    steps on a 128-wide network the unnormalized networks had not yet lost plasticity), its 9
    arms, and logs the dormant fraction twice a task."""
    config = dormant_grid.grid_config("cpu", 3)
    assert config.task.steps_per_task == 1000 and config.task.num_tasks == 15
    assert tuple(config.network.hidden_sizes) == (256, 256, 256)
    assert config.diagnostics.every == 500 and "dormant" in config.diagnostics.names
    assert len(config.variant_order) == 9 and config.num_seeds == 3
    paper = dormant_grid.grid_config("paper", 3)
    assert (paper.task.steps_per_task, paper.task.num_tasks, paper.data.name) == (
        1000,
        100,
        "mnist",
    )


def test_dormant_grids_figure_draws_dormancy_over_steps_above_accuracy_at_task_ends():
    """Claim (f)'s figure: per optimizer, the seed mean of the hidden layers' dormant fraction at
    each logged step (top) and of the end-of-task accuracy at each task's last step (bottom)."""
    config = dormant_grid.grid_config("cpu", 2)
    config.variant_order = ("adam/none", "adam/layernorm")
    config.task.num_tasks, config.task.steps_per_task = 3, 10
    rng = np.random.default_rng(0)
    dormancy = {arm: rng.uniform(size=(2, 4)) for arm in config.variant_order}  # seeds × steps
    accuracy = {arm: 5 + rng.uniform(size=(2, 3)) for arm in config.variant_order}  # seeds × tasks
    rows = []
    for arm in config.variant_order:
        for seed in (0, 1):
            for i, step in enumerate((0, 5, 10, 30)):
                layers = {
                    "dormant_0.025/hidden_0": dormancy[arm][seed, i],
                    "dormant_0.025/output": 9,
                }
                rows.append(
                    {"event": "diagnostics", "variant": arm, "seed": seed, "step": step, **layers}
                )
            for task in range(3):
                row = {"event": "task", "variant": arm, "seed": seed, "task": task}
                rows.append({**row, "end_accuracy": accuracy[arm][seed, task]})
    fig = dormant_grid.draw(rows, config)
    top, bottom = fig.axes
    assert top.get_title() == "Adam" and "every 10 steps" in fig.texts[0].get_text()
    for i, arm in enumerate(config.variant_order):
        np.testing.assert_array_equal(top.lines[i].get_xdata(), [0, 5, 10, 30])
        np.testing.assert_allclose(top.lines[i].get_ydata(), dormancy[arm].mean(axis=0))
        np.testing.assert_array_equal(bottom.lines[i].get_xdata(), [10, 20, 30])
        np.testing.assert_allclose(bottom.lines[i].get_ydata(), accuracy[arm].mean(axis=0))
    assert [line.get_label() for line in bottom.lines] == ["none", "LN"]
    styles = [line.get_linestyle() for line in bottom.lines]
    assert styles == [line.get_linestyle() for line in top.lines] and len(set(styles)) == 2
    assert bottom.get_ylabel() == "end-of-task accuracy"
    assert top.get_ylim()[1] < 2 and bottom.get_ylim()[0] > 4  # each row its own y range


@pytest.mark.parametrize("scale", base.SCALES)
def test_nonstationarity_arms_exist_at_every_scale(scale):
    """Claim (b)'s L2 arms read a λ the grid trains (the paper's 1e-5 at paper scale, where the
    grid is the paper's sweep) and its large-offset arm has later tasks after the offset phase
    (at paper scale all 20 tasks had been offset ones: nothing left to compare)."""
    config = nonstationarity.sweep_config(scale, 3)
    for arm in nonstationarity.ARMS:
        assert nonstationarity.arm_l2(config, arm) in config.grid.l2
    assert nonstationarity.arm_l2(config, "LN+L2") == (1e-5 if scale == "paper" else 1e-4)
    variants = dict(base.resolved_variants(config))
    for norm in nonstationarity.NORM_VARIANTS:
        task = variants[nonstationarity.variant("large_offset_regression", norm)].task
        assert 1 <= task.offset_tasks and task.offset_tasks + 2 <= task.num_tasks


def test_nonstationarity_reads_the_papers_l2_arms_at_paper_scale(monkeypatch, tmp_path):
    """At paper scale every arm of every type has its 3 seeds, and the L2 arms' values, in the
    verdict's rows and the figure's curves, are those of the rows at λ = 1e-5, not 1e-6 (the
    sweep's other point)."""
    config = nonstationarity.sweep_config("paper", 3)
    variants = dict(base.resolved_variants(config))
    value = {0.0: 0.5, 1e-6: 0.1, 1e-5: 0.9}  # every task's end accuracy (or loss) per λ
    rows = [
        {
            "event": "task",
            "variant": name,
            "seed": seed,
            "task": task,
            "l2": l2,
            "end_accuracy": value[l2],
            "end_loss": value[l2],
        }
        for name, variant in variants.items()
        for seed in range(3)
        for task in range(int(variant.task.num_tasks))
        for l2 in config.grid.l2
    ]
    out = nonstationarity.evaluate(rows, config)
    assert [row.label for row in out] == list(nonstationarity.TYPES)
    for row in out:
        assert all(interval.n == 3 for interval in row.arms.values()), row.label
        expected = 0.9 if row.label != "large_offset_regression" else np.log10(0.9)
        assert row.arms["LN+L2"].mean == pytest.approx(expected), row.label
    drawn = []
    monkeypatch.setattr(base, "save_figure", lambda fig, path: drawn.append(fig) or str(path))
    nonstationarity.figure(rows, config, tmp_path / "b.png")
    for ax in drawn[0].axes:
        curves = {line.get_label(): line.get_ydata() for line in ax.lines}
        np.testing.assert_allclose(curves["LN+L2"], 0.9)
        np.testing.assert_allclose(curves["none"], 0.5)


FILE_CLAIMS = [name for name in claims.NAMES if name != "sequential_games"]


@pytest.mark.parametrize("claim", FILE_CLAIMS)
def test_every_paper_scale_claim_reads_the_data_dir_given(claim, tmp_path, capsys):
    """``--data_dir`` reaches the loader of every claim that trains on dataset files: a directory
    without them is the loader's one-line error naming it, before anything is written."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    workdir = tmp_path / "paper"
    argv = ["reproduce", claim, "--scale=paper", f"--data_dir={data_dir}", "--noprogress"]
    assert reproduce.main([*argv, f"--workdir={workdir}"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert " not found: " in line and str(data_dir) in line and "set --data_dir" in line
    assert not workdir.exists()


def test_effective_lr_gives_the_data_dir_to_its_sweep_and_every_replay(tmp_path, monkeypatch):
    trained = []

    def record(config, workdir, timer, progress, data_dir=None, **kwargs):
        trained.append((workdir.name, data_dir))
        return []

    monkeypatch.setattr(base, "run_continual", record)
    monkeypatch.setattr(effective_lr, "replay_schedule", lambda *args: None)
    monkeypatch.setattr(effective_lr, "evaluate", lambda *args: [])
    monkeypatch.setattr(effective_lr, "figure", lambda *args: "figure.png")
    effective_lr.run(tmp_path / "effective_lr", "paper", 2, {}, "D")
    assert trained == [("sweep", "D"), ("replay_seed_0", "D"), ("replay_seed_1", "D")]


def test_paper_scale_configs_record_the_data_dir_and_unread_ones_are_noted(tmp_path, capsys):
    """The dry run's configs carry ``--data_dir`` wherever they read a dataset; a data dir that
    no chosen claim reads is a note; an empty one names none; one that is no directory is a
    one-line error."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    argv = ["reproduce", "all", "--scale=paper", "--dry_run", f"--data_dir={data_dir}"]
    assert reproduce.main([*argv, f"--workdir={tmp_path / 'dry'}"]) == 0
    for name in claims.NAMES:
        for path in (tmp_path / "dry" / name).glob("*.config.json"):
            config = json.loads(path.read_text())
            if "data" in config:
                assert config["data"]["data_dir"] == str(data_dir), path
    assert "note" not in capsys.readouterr().err

    for scale, claim, which in (
        ("cpu", "dormant_grid", "dormant_grid reads no"),
        ("cpu", "all", "no claim reads"),
        ("paper", "sequential_games", "sequential_games reads no"),
    ):
        argv = ["reproduce", claim, f"--scale={scale}", "--dry_run", f"--data_dir={data_dir}"]
        assert reproduce.main([*argv, f"--workdir={tmp_path / scale}"]) == 0
        err = capsys.readouterr().err
        assert f"note: data dir {data_dir} is unused: {which} dataset files" in err

    argv = ["reproduce", "dormant_grid", "--dry_run", "--data_dir=", f"--workdir={tmp_path / 'e'}"]
    assert reproduce.main(argv) == 0 and "note" not in capsys.readouterr().err
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for scale, missing in (("paper", not_a_dir), ("cpu", tmp_path / "missing")):
        argv = ["reproduce", "all", f"--scale={scale}", "--dry_run", f"--data_dir={missing}"]
        assert reproduce.main([*argv, f"--workdir={tmp_path / 'f'}"]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()  # no note before it
        assert line == f"reproduce: error: --data_dir {missing} is not a directory"
        assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "nope"], "unknown claim 'nope'"),
        (["reproduce"], "name a claim"),
        (["reproduce", "a", "b"], "give one claim"),
        (["reproduce", "label_reset", "--scale=huge"], "scale"),
        (["reproduce", "label_reset", "--seeds=0"], "--seeds must be >= 1"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    status = reproduce.main([*argv, f"--workdir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert message in err and len(err.splitlines()) == 1


def _interval(mean):
    return stats.Interval(mean, mean - 0.1, mean + 0.1, 3)


def test_a_claims_timer_keeps_stored_minutes_and_ignores_unreadable_ones(tmp_path):
    """A claim whose runs were all complete keeps the seconds its result.json stored; a stored
    null or a damaged file gives the time measured now instead of a crash."""
    timer = base.Timer()
    (tmp_path / base.RESULT_FILE).write_text(json.dumps({"seconds": 123.0}))
    assert timer.seconds(tmp_path) == 123.0
    for stored in ('{"seconds": null}', "{not json"):
        (tmp_path / base.RESULT_FILE).write_text(stored)
        assert 0.0 <= timer.seconds(tmp_path) < 60.0
    timer.mark_trained(object())  # a run trained now: its own time, whatever was stored
    (tmp_path / base.RESULT_FILE).write_text(json.dumps({"seconds": 123.0}))
    assert timer.seconds(tmp_path) < 60.0


def test_a_claims_k_of_m_counts_comparisons_as_a_rows_does():
    """Two rows that each pass 1 of 2 comparisons make a claim that passes 2 of 4 (not a row's
    'PARTIAL 1/2' copied up); a passing row of 2 and a row passing 1 of 3 make 3 of 5."""
    verdicts = lambda *means: [
        base.Comparison(f"c{i}", 1, _interval(m)) for i, m in enumerate(means)
    ]  # noqa: E731

    def claim(*rows):
        return base.ClaimResult("demo", "cpu", 3, [base.Row("", "m", {}, c) for c in rows])

    assert claim(verdicts(0.5, 0.0), verdicts(0.0, 0.5)).verdict == "PARTIAL 2/4"
    assert claim(verdicts(0.5, 0.5), verdicts(0.5, 0.0, -0.5)).verdict == "PARTIAL 3/5"
    assert claim(verdicts(0.0), verdicts(-0.5, -0.5)).verdict == "NOT SHOWN"
    assert claim(verdicts(-0.5), verdicts(-0.5)).verdict == stats.OPPOSITE


def test_result_json_round_trip_and_table():
    result = base.ClaimResult(
        "demo",
        "cpu",
        3,
        [
            base.Row(
                "",
                "accuracy",
                {"none": _interval(0.2), "LN": _interval(0.7)},
                [base.Comparison("LN − none", 1, _interval(0.5))],
            ),
            base.Row(
                "norm",
                "growth",
                {"none": _interval(0.4)},
                [base.Comparison("growth", 1, stats.Interval(0.1, -0.2, 0.4, 3))],
            ),
        ],
        seconds=90.0,
    )
    assert result.rows[0].verdict == stats.PASS
    assert result.rows[1].verdict == stats.INCONCLUSIVE
    assert result.verdict == "PARTIAL 1/2"
    again = base.result_from_json(result.to_json())
    assert again == result
    lines = base.table_lines([result])
    assert lines[2] == (
        "| demo | none, LN | accuracy: none 0.2 ± 0.1; LN 0.7 ± 0.1 | PASS (claim: PARTIAL 1/2) "
        "| 1.5 |"
    )
    assert lines[3].startswith("| (norm) | none | growth: none 0.4 ± 0.1 | INCONCLUSIVE |")


def test_result_json_is_strict_json_with_one_seed_and_unknown_minutes(tmp_path):
    """One seed's interval has no bounds and a work dir's table has unknown minutes (NaN): the
    written result.json holds null there, which strict readers accept, and reads back as NaN."""
    one_seed, no_value = stats.t_interval([0.25]), stats.t_interval([math.nan, math.nan])
    arms = {"none": one_seed, "diverged": no_value}
    row = base.Row("", "accuracy", arms, [base.Comparison("x", 1, one_seed)])
    result = base.ClaimResult("demo", "cpu", 1, [row], seconds=math.nan)
    base.write_result(result, tmp_path)
    text = (tmp_path / base.RESULT_FILE).read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in result.json"))
    row = data["rows"][0]
    assert data["seconds"] is None and row["arms"]["none"]["low"] is None
    assert (
        row["arms"]["diverged"]["mean"] is None
        and row["comparisons"][0]["interval"]["high"] is None
    )
    again = base.result_from_json(data)
    arm, diverged = again.rows[0].arms["none"], again.rows[0].arms["diverged"]
    assert (arm.mean, arm.n) == (0.25, 1) and math.isnan(arm.low) and math.isnan(arm.high)
    assert math.isnan(diverged.mean) and diverged.n == 0
    compared = again.rows[0].comparisons[0].interval
    assert compared.mean == 0.25 and math.isnan(compared.low) and math.isnan(compared.high)
    assert math.isnan(again.seconds)
    assert base.table_lines([again]) == base.table_lines([result])


def test_per_seed_and_paired_comparisons():
    rows = [
        {"event": "task", "seed": s, "task": t, "variant": v, "acc": a}
        for s, v, t, a in [
            (0, "x", 0, 0.1),
            (0, "x", 1, 0.3),
            (1, "x", 0, 0.2),
            (1, "x", 1, None),
            (0, "y", 0, 0.5),
            (0, "y", 1, 0.7),
            (1, "y", 0, 0.6),
            (1, "y", 1, 0.9),
        ]
    ]
    x = base.over_tasks(base.task_rows(rows, "x"), "acc", [0, 1])
    y = base.over_tasks(base.task_rows(rows, "y"), "acc", [0, 1])
    assert x == {0: pytest.approx(0.2), 1: pytest.approx(0.2)}
    comparison = base.paired("y − x", 1, y, x)
    diffs = np.array([0.6 - 0.2, 0.75 - 0.2])
    assert comparison.interval.mean == pytest.approx(diffs.mean())
    assert comparison.interval.n == 2
    matrix, seeds = base.per_task_matrix(base.task_rows(rows, "x"), "acc", 2)
    assert seeds == [0, 1] and math.isnan(matrix[1, 1]) and matrix[0, 1] == 0.3


def test_per_seed_means_and_intervals_by_hand():
    """A seed's value is the mean of its rows (not the median), a seed without a finite value
    stays as NaN, the layer mean is a mean and skips a zero under `log`, an arm's interval is
    Student's t (t(0.975, 2) = 4.302652730) and an infinite bound is written as null."""
    rows = [{"seed": 0, "v": 0.0}, {"seed": 0, "v": 0.0}, {"seed": 0, "v": 0.9}]
    assert base.per_seed(rows, "v") == {0: pytest.approx(0.3)}
    kept = base.per_seed([{"seed": 0, "v": None}, {"seed": 1, "v": 1.0}], "v")
    assert list(kept) == [0, 1] and math.isnan(kept[0]) and kept[1] == 1.0
    layers = {"m/hidden_0": 0.0, "m/hidden_1": 0.0, "m/hidden_2": 0.9}
    assert base.layer_mean(layers, "m") == pytest.approx(0.3)
    assert base.layer_mean({"m/hidden_0": 0.0, "m/hidden_1": math.e}, "m", log=True) == 1.0
    interval = base.interval_of({0: 1.0, 1: 2.0, 2: 4.0})
    half = 4.302652730 * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert (interval.low, interval.high) == (
        pytest.approx(7 / 3 - half),
        pytest.approx(7 / 3 + half),
    )
    below = base.Comparison("x", -1, stats.Interval(1.0, 0.5, 1.5, 3))
    assert below.format().startswith("x < 0: ")
    arms = {"a": stats.Interval(0.0, -math.inf, math.inf, 3)}
    row = base.Row("", "m", arms, [base.Comparison("c", 1, stats.Interval(1.0, 0.5, 1.5, 3))])
    result = base.ClaimResult("d", "cpu", 3, [row], seconds=90.0)
    json.dumps(result.to_json(), allow_nan=False)
    assert base.table_lines([result])[2].endswith("| PASS | 1.5 |")  # one row: no "(claim: ...)"
    two_rows = base.ClaimResult("d", "cpu", 3, [row, row], seconds=math.nan)
    first, second = base.table_lines([two_rows])[2:]
    assert first.endswith("| PASS (claim: PASS) | — |") and second.endswith("| PASS |  |")


def test_layer_mean_skips_the_output_layer():
    row = {"effective_lr/hidden_0": 1.0, "effective_lr/hidden_1": 100.0, "effective_lr/output": 7.0}
    assert base.layer_mean(row, "effective_lr") == pytest.approx(50.5)
    assert base.layer_mean(row, "effective_lr", log=True) == pytest.approx(math.log(10.0))
    assert base.layer_mean({}, "effective_lr") is None


def test_lr_decay_is_the_log_ratio_of_geometric_means():
    rows = [
        {
            "event": "diagnostics",
            "variant": "v",
            "seed": 0,
            "step": 0,
            "effective_lr/hidden_0": 1e-3,
            "effective_lr/hidden_1": 4e-3,
        },
        {
            "event": "diagnostics",
            "variant": "v",
            "seed": 0,
            "step": 10,
            "effective_lr/hidden_0": 5e-4,
            "effective_lr/hidden_1": 1e-3,
        },
    ]
    expected = 0.5 * (math.log(5e-4 / 1e-3) + math.log(1e-3 / 4e-3))
    assert effective_lr.lr_decay(rows, "v") == {0: pytest.approx(expected)}


def _visit_row(event, seed, game, value, visit=None, trained_game=None, end_of_block=True):
    """An evaluation row of a game sequence: a visit's (trained on `trained_game`, by default the
    game itself) or, without `visit`, the fresh network's."""
    row = {"event": event, "seed": seed, "game": game, "return_mean": value}
    if visit is not None:
        row.update(visit=visit, trained_game=trained_game or game, end_of_block=end_of_block)
    return row


def test_visit_gaps_compare_the_second_visit_with_the_fresh_network():
    rows = [
        _visit_row("eval", 0, "a", 1.0, 1),
        _visit_row("eval", 0, "a", 3.0, 2),
        _visit_row("eval", 0, "a", 9.0, 2, "b"),  # evaluated while training b: not a visit of a
        _visit_row("eval", 0, "b", 2.0, 2),
        _visit_row("eval_fresh", 0, "a", 4.0),
        _visit_row("eval_fresh", 0, "b", 1.0),
        _visit_row("eval", 1, "a", 2.0, 2),  # no fresh score for seed 1: no gap
        _visit_row("eval_fresh", 2, "a", 0.0),
        _visit_row("eval", 2, "a", 0.5, 2),
    ]
    gaps = sequential_games.visit_gaps(rows)
    assert gaps[0] == pytest.approx(((3.0 - 4.0) + (2.0 - 1.0)) / 2)
    assert math.isnan(gaps[1])
    assert gaps[2] == pytest.approx(0.5)


def test_sequential_games_gaps_and_verdicts_from_rows_by_hand():
    """A visit's score is the one at the end of its block (a mid-block row after it is not), a
    game without a finite score leaves the seed's mean, gaps are averaged over games; a baseline
    below fresh and LN + NaP above it pass both comparisons."""
    rows = [
        _visit_row("eval_fresh", 0, "a", 1.0),
        _visit_row("eval", 0, "a", 3.0, 2),
        _visit_row("eval", 0, "a", 100.0, 2, end_of_block=False),
        _visit_row("eval", 0, "b", math.nan, 2),
        _visit_row("eval_fresh", 0, "b", 0.0),
        _visit_row("eval_fresh", 0, "c", 0.0),
        _visit_row("eval", 0, "c", 4.0, 2),
    ]
    assert sequential_games.visit_gaps(rows) == {0: pytest.approx(3.0)}  # (2 + 4) / 2

    def arm(gaps):
        return [
            row
            for seed, gap in enumerate(gaps)
            for row in (
                _visit_row("eval_fresh", seed, "a", 0.0),
                _visit_row("eval", seed, "a", gap, 2),
            )
        ]

    (row,) = sequential_games.evaluate(
        {"baseline": arm([-3.0, -2.0, -4.0]), "LN+NaP": arm([1.0, 0.5, 0.8])}
    )
    assert [c.verdict for c in row.comparisons] == [stats.PASS, stats.PASS]


@pytest.mark.parametrize("num_steps, late_from", [(20, 16), (4, 3), (10, 8)])
def test_dormant_grid_reads_the_last_fifth_of_its_diagnostics(num_steps, late_from):
    """The late dormant fraction is the mean over the last fifth of the diagnostics steps (at
    least one); none above LayerNorm there passes "none − LN > 0"."""
    key = f"dormant_{dormant_grid.TAU}/hidden_0"

    def rows(variant, late_value, jitter):
        return [
            {
                "event": "diagnostics",
                "variant": variant,
                "seed": seed,
                "step": step,
                key: (late_value + jitter * seed) if step >= late_from else 0.0,
            }
            for seed in range(3)
            for step in range(num_steps)
        ]

    none, layernorm = rows("adam/none", 0.9, 0.01), rows("adam/layernorm", 0.1, 0.0)
    late = dormant_grid.late_dormant(none, "adam/none")
    assert late == {0: pytest.approx(0.9), 1: pytest.approx(0.91), 2: pytest.approx(0.92)}
    (row,) = dormant_grid.evaluate(none + layernorm, dormant_grid.grid_config("smoke", 3))
    assert [(c.name, c.verdict) for c in row.comparisons] == [("Adam: none − LN", stats.PASS)]


SEEDS = range(3)


def _task_rows(variant, num_tasks, **values):
    """One variant's 'task' rows: each key of `values` a function of (task, seed)."""
    return [
        {"event": "task", "variant": variant, "seed": seed, "task": task}
        | {key: value(task, seed) for key, value in values.items()}
        for seed in SEEDS
        for task in range(num_tasks)
    ]


def _means(row):
    """({arm: mean}, [(comparison, direction, mean)]) of a claim's table row."""
    arms = {arm: interval.mean for arm, interval in row.arms.items()}
    return arms, [(c.name, c.direction, c.interval.mean) for c in row.comparisons]


def test_label_reset_reads_its_windows_and_norm_growth_from_rows_by_hand():
    """Accuracy over the last five of 40 tasks and the first five, each arm's own; the norm's
    growth is log(norm after the last task / norm at step 0). Values change with the task, so a
    window one task off, or the norm read a task early, changes the means."""
    config = label_reset.sweep_config("cpu", 3)
    levels = {"no_norm": 0.0, "layernorm": 0.3, "layernorm_nap": 0.5}
    rows = []
    for variant, level in levels.items():
        rows += _task_rows(
            variant,
            40,
            end_accuracy=lambda t, s, level=level: level + 0.4 * (1 - t / 40) + 0.01 * s,
            param_norm=lambda t, s, level=level: math.exp((1 + level) * t / 39),
        )
        rows += [
            {"event": "diagnostics", "variant": variant, "seed": s, "step": 0, "param_norm": 1.0}
            for s in SEEDS
        ]
    accuracy, norm = label_reset.evaluate(rows, config)
    late = {
        v: level + 0.4 * (1 - np.mean(range(35, 40)) / 40) + 0.01 for v, level in levels.items()
    }
    early = 0.4 * (1 - np.mean(range(5)) / 40) + 0.01
    arms, comparisons = _means(accuracy)
    assert arms == pytest.approx(
        {"none": late["no_norm"], "LN": late["layernorm"], "LN+NaP": late["layernorm_nap"]}
    )
    assert comparisons == [
        ("LN − none", 1, pytest.approx(0.3)),
        ("LN+NaP − LN", 1, pytest.approx(0.2)),
        ("none: first 5 − last 5 tasks", 1, pytest.approx(early - late["no_norm"])),
    ]
    arms, comparisons = _means(norm)
    assert arms == pytest.approx({"none": 1.0, "LN": 1.3, "LN+NaP": 1.5})
    assert comparisons == [("none: log norm growth", 1, pytest.approx(1.0))]


def test_large_offset_compares_the_damaging_offsets_and_the_largest_ones_features():
    """log10 of the mean squared error over the last five later tasks, against c = 0, for the
    offsets said to damage (c ≥ 100) only; σ₁ read at the end of the offset phase (step 1,000),
    not a task earlier, compared for the largest offset."""
    config = large_offset.sweep_config("cpu", 3)
    offset_end = 5 * 200
    rows = []
    for norm in ("none", "LN"):
        for c in (0.0, 10.0, 100.0, 1000.0):
            variant = large_offset.variant(norm, c)
            rows += _task_rows(variant, 15, end_loss=lambda t, s, c=c: (1 + c) * (1 + t / 14))
            rows += [
                {
                    "event": "diagnostics",
                    "variant": variant,
                    "seed": s,
                    "step": step,
                    "feature_top_singular_value": (1 + c) * (10.0 if step == offset_end else 1.0),
                }
                for s in SEEDS
                for step in (offset_end - 200, offset_end)
            ]
    error, sigma, *_ = large_offset.evaluate(rows, config)
    mean_factor = np.mean([1 + t / 14 for t in range(10, 15)])
    arms, comparisons = _means(error)
    assert arms == pytest.approx(
        {f"c={c:g}": math.log10((1 + c) * mean_factor) for c in (0, 10, 100, 1000)}
    )
    assert comparisons == [
        ("none: c=100 − c=0", 1, pytest.approx(math.log10(101))),
        ("none: c=1000 − c=0", 1, pytest.approx(math.log10(1001))),
    ]
    arms, comparisons = _means(sigma)
    assert arms["c=0"] == pytest.approx(1.0) and arms["c=1000"] == pytest.approx(math.log10(10010))
    assert comparisons == [("none: σ₁ c=1000 − c=0", 1, pytest.approx(math.log10(1001)))]


def test_effective_lr_reads_the_decay_and_the_replay_from_rows_by_hand():
    """The effective learning rate's decay is log(η at the last diagnostics / η at step 0), its
    geometric mean over the hidden layers; "replay nearer LN than NaP" is |replay − NaP| −
    |replay − LN| over the last five tasks: positive when the replay lands nearer LN."""
    config = effective_lr.configs("cpu", 3)["label_reset_sweep"]
    decays = {"layernorm": -1.0, "layernorm_nap": 0.0}
    sweep_rows, replay_rows = [], []
    for variant, decay in decays.items():
        sweep_rows += [
            {"event": "diagnostics", "variant": variant, "seed": s, "step": step}
            | {f"effective_lr/hidden_{i}": 1e-3 * math.exp(decay * step / 100 + i) for i in (0, 1)}
            for s in SEEDS
            for step in (0, 50, 100)
        ]
    accuracies = {"layernorm": 0.4, "layernorm_nap": 0.9, effective_lr.REPLAY: 0.5}
    for variant, accuracy in accuracies.items():
        rows = _task_rows(
            variant, 40, end_accuracy=lambda t, s, a=accuracy: a + (0.1 if t >= 35 else 0.0)
        )
        (replay_rows if variant == effective_lr.REPLAY else sweep_rows).extend(rows)
    rates, replay = effective_lr.evaluate(sweep_rows, replay_rows, config)
    arms, comparisons = _means(rates)
    assert arms == pytest.approx({"LN": -1.0, "LN+NaP": 0.0})
    assert comparisons == [
        ("LN: log decay", -1, pytest.approx(-1.0)),
        ("NaP − LN", 1, pytest.approx(1.0)),
    ]
    arms, comparisons = _means(replay)
    assert arms == pytest.approx({"LN": 0.5, "LN+NaP": 1.0, "LN+NaP+replay": 0.6})
    assert comparisons == [
        ("LN+NaP − LN", 1, pytest.approx(0.5)),
        ("LN+NaP − replay", 1, pytest.approx(0.4)),
        ("replay nearer LN than NaP", 1, pytest.approx(0.4 - 0.1)),
    ]


def test_nonstationarity_scores_each_type_over_its_own_windows_by_hand():
    """Accuracy types: the last five tasks against the first five, and LN + L2 above none;
    large-offset regression: log10 error over the tasks after the offset phase (from task 20),
    the last five against the first five of those, and LN + L2 below none (sign −1). Each arm's
    rows are those of its L2 grid point."""
    config = nonstationarity.sweep_config("cpu", 3)
    regression = "large_offset_regression"
    levels = {"none": 1.0, "L2": 2.0, "LN": 3.0, "LN+L2": 4.0}
    rows = []
    for kind in nonstationarity.kinds(config):
        task = dict(base.resolved_variants(config))[nonstationarity.variant(kind, "none")].task
        key = "end_loss" if kind == regression else "end_accuracy"
        for arm, (norm, _) in nonstationarity.ARMS.items():
            level = levels[arm]
            for row in _task_rows(
                nonstationarity.variant(kind, norm),
                int(task.num_tasks),
                **{key: lambda t, s, level=level: 10.0 ** (level * (1 + t / 1000))},
            ):
                rows.append(row | {"l2": nonstationarity.arm_l2(config, arm)})
    by_kind = {row.label: row for row in nonstationarity.evaluate(rows, config)}
    for kind, row in by_kind.items():
        num_tasks = 25 if kind == "label_reset" else 300
        start = 20 if kind == regression else 0
        last, first = np.arange(num_tasks - 5, num_tasks), np.arange(start, start + 5)

        def score(level, tasks):
            values = np.mean(10.0 ** (level * (1 + tasks / 1000)))
            return math.log10(values) if kind == regression else values

        arms, comparisons = _means(row)
        assert arms == pytest.approx({arm: score(level, last) for arm, level in levels.items()})
        names = [(name, direction) for name, direction, _ in comparisons]
        sign = -1 if kind == regression else 1
        assert names[1] == (f"{kind}: LN+L2 − none", sign)
        loses = (
            score(1.0, last) - score(1.0, first)
            if kind == regression
            else score(1.0, first) - score(1.0, last)
        )
        assert comparisons[0][2] == pytest.approx(loses)
        assert comparisons[1][2] == pytest.approx(score(4.0, last) - score(1.0, last))
    assert set(by_kind) == {"label_reset", "class_permutation", "input_permutation", regression}
