"""NaP's intervention grid (`benchmarks/configs/nap_interventions.py`) and claim (g) that reads
it: the arms each config builds, the metric against NumPy, the verdicts, and a run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import continual_config
from benchmarks.claims import base, interventions_nap, stats
from benchmarks.configs import nap_interventions

ARMS = (
    "none",
    "none_nap",
    "l2",
    "l2_nap",
    "l2_init",
    "l2_init_nap",
    "redo",
    "redo_nap",
    "shrink_perturb",
    "shrink_perturb_nap",
    "noisy_updates",
    "noisy_updates_nap",
    "leaky_relu",
    "leaky_relu_nap",
)


def _resolved(arg: str | None) -> dict:
    config = nap_interventions.get_config(arg)
    base.check_config(config)
    return dict(continual_config.variant_configs(config))


def test_every_intervention_has_an_arm_alone_and_one_on_layernorm_with_nap():
    arms = _resolved(None)
    assert tuple(arms) == ARMS
    for name, config in arms.items():
        with_nap = name.endswith("_nap")
        assert config.optimizer.nap.enabled == with_nap, name
        assert config.network.norm == ("layernorm" if with_nap else "none"), name
        intervention = name.removesuffix("_nap")
        assert config.optimizer.l2 == (1e-4 if intervention == "l2" else 0.0), name
        assert config.optimizer.l2_init == (1e-4 if intervention == "l2_init" else 0.0), name
        activation = "leaky_relu" if intervention == "leaky_relu" else "relu"
        assert config.network.activation == activation, name
        expected = (
            intervention if intervention in {"redo", "shrink_perturb", "noisy_updates"} else "none"
        )
        assert config.intervention.name == expected, name
    redo, shrink, noisy = arms["redo_nap"], arms["shrink_perturb"], arms["noisy_updates_nap"]
    assert (redo.intervention.every, redo.intervention.options.tau) == (100, 0.1)
    assert shrink.intervention.at_task_boundaries and shrink.intervention.every == 0
    assert dict(shrink.intervention.options) == {"shrink": 0.6, "perturb": 0.01}
    assert (noisy.intervention.every, noisy.intervention.options.scale) == (1, 1e-4)
    # The arms differ only in what their names say: the task, data and training are shared.
    for config in arms.values():
        assert (config.task.num_tasks, config.task.steps_per_task) == (20, 400)
        assert config.data.max_train_examples == 1024 and config.optimizer.learning_rate == 1e-3


def test_ln_base_puts_layernorm_under_the_arms_without_nap_and_cnn_swaps_the_network():
    arms = _resolved("ln_base,redo,redo_nap")
    assert tuple(arms) == ("redo", "redo_nap")
    assert arms["redo"].network.norm == arms["redo_nap"].network.norm == "layernorm"
    assert not arms["redo"].optimizer.nap.enabled and arms["redo_nap"].optimizer.nap.enabled
    cnn = _resolved("cnn,l2")["l2"]
    assert cnn.network.name == "cnn" and cnn.optimizer.l2 == 1e-4
    assert (cnn.network.channels, cnn.network.dense_sizes) == ((32, 64), (128,))
    paper = _resolved("paper,cnn,none_nap")["none_nap"]
    assert paper.data.name == "cifar10" and paper.data.max_train_examples == 0
    assert (paper.task.num_tasks, paper.task.steps_per_task) == (50, 20_000)
    assert paper.optimizer.learning_rate == 1e-4 and paper.network.channels == (64, 128)
    assert _resolved("paper,l2")["l2"].network.hidden_sizes == (512, 512, 512)


def test_the_claim_runs_three_seeds_and_the_diagnostic_that_shows_nap_projecting():
    for scale in ("cpu", "paper"):
        config = interventions_nap.grid_config(scale, 3)
        assert config.num_seeds == 3
        assert "weight_norm" in config.diagnostics.names
    # Every scale's ReDo fires within its tasks (the smoke scale's are 10 and 20 steps long).
    for config in (
        interventions_nap.grid_config("smoke", 2),
        nap_interventions.get_config("smoke"),
    ):
        for name, arm in continual_config.variant_configs(config):
            if arm.intervention.name == "redo":
                assert 0 < arm.intervention.every < arm.task.steps_per_task, name


def _rows(values: dict[str, dict[int, list[float]]]) -> list[dict]:
    """Task rows whose online accuracy per (arm, seed) is the given list over tasks."""
    return [
        {"event": "task", "variant": arm, "seed": seed, "task": task, "online_accuracy": value}
        for arm, by_seed in values.items()
        for seed, per_task in by_seed.items()
        for task, value in enumerate(per_task)
    ]


def test_each_row_pairs_an_intervention_with_its_nap_arm_over_seeds():
    config = interventions_nap.grid_config("cpu", 3)
    config.variant_order = ("none", "none_nap", "redo", "redo_nap", "l2")  # l2 lacks its pair
    config.task.num_tasks = 4
    rng = np.random.default_rng(0)
    alone = {seed: list(rng.uniform(0.1, 0.5, size=4)) for seed in range(3)}
    lift = {0: 0.2, 1: 0.25, 2: 0.3}
    values = {
        "none": alone,
        "none_nap": {s: [v + lift[s] for v in alone[s]] for s in alone},
        "redo": alone,
        "redo_nap": {s: [v - lift[s] for v in alone[s]] for s in alone},
        "l2": alone,
    }
    rows = interventions_nap.evaluate(_rows(values), config)
    assert [row.label for row in rows] == ["none", "redo"]
    none, redo = rows
    assert list(none.arms) == ["none", "none+NaP"]
    means = [np.mean(alone[s]) for s in range(3)]
    assert none.arms["none"].mean == pytest.approx(np.mean(means), rel=1e-12)
    assert none.arms["none+NaP"].mean == pytest.approx(np.mean(means) + 0.25, rel=1e-12)
    expected = stats.t_interval(np.array([0.2, 0.25, 0.3]))
    (comparison,) = none.comparisons
    assert comparison.interval.mean == pytest.approx(expected.mean, rel=1e-9)
    assert comparison.interval.low == pytest.approx(expected.low, rel=1e-9)
    assert none.verdict == stats.PASS and redo.verdict == stats.OPPOSITE
    assert base.ClaimResult("interventions_nap", "cpu", 3, rows).verdict == "PARTIAL 1/2"


def test_a_seed_short_of_tasks_leaves_the_comparison_instead_of_pairing_its_early_tasks():
    """A run still training (or diverged) has fewer task rows, all early ones, which score far
    above the late ones: averaging what is there would bias the pair."""
    config = interventions_nap.grid_config("cpu", 3)
    config.variant_order = ("none", "none_nap")
    config.task.num_tasks = 4
    full = {seed: [0.6, 0.5, 0.2, 0.1] for seed in range(3)}
    with_nap = {0: [0.7, 0.6, 0.5, 0.5], 1: [0.7, 0.6, 0.5, 0.6], 2: [0.9, 0.9]}
    rows = _rows({"none": full, "none_nap": with_nap})
    accuracy = interventions_nap.online_accuracy(rows, "none_nap", 4)
    assert accuracy[0] == pytest.approx(0.575) and np.isnan(accuracy[2])
    (row,) = interventions_nap.evaluate(rows, config)
    assert row.arms["none+NaP"].n == 2 and row.comparisons[0].interval.n == 2
    assert row.comparisons[0].interval.mean == pytest.approx((0.575 + 0.6) / 2 - 0.35)
    # A null value (a diverged step written as null) counts as a missing task too.
    rows[-1]["online_accuracy"] = None
    assert np.isnan(interventions_nap.online_accuracy(rows, "none_nap", 4)[2])


def test_the_last_tasks_window_averages_only_them_and_still_needs_every_task():
    """``--last_tasks=N``: the mean of each seed's last N tasks (a long run's late tasks, where
    plasticity has been lost, say more than its average); a seed short of tasks, or with a null
    before the window, is still out (the same seeds as the whole run's reading)."""
    config = interventions_nap.grid_config("cpu", 3)
    config.variant_order = ("none", "none_nap")
    config.task.num_tasks = 5
    alone = {
        0: [0.9, 0.5, 0.2, 0.1, 0.3],
        1: [0.8, 0.6, 0.3, 0.2, 0.1],
        2: [0.9, 0.4, 0.3, 0.1, 0.2],
        3: [None, 0.4, 0.3, 0.1, 0.2],
    }
    with_nap = {
        0: [0.9, 0.8, 0.7, 0.6, 0.6],
        1: [0.9, 0.8, 0.8, 0.7, 0.5],
        2: [0.9, 0.9],
        3: [0.9, 0.8, 0.7, 0.6, 0.6],
    }
    rows = _rows({"none": alone, "none_nap": with_nap})
    last2 = interventions_nap.online_accuracy(rows, "none", 5, last_tasks=2)
    assert [last2[s] for s in (0, 1, 2)] == pytest.approx(
        [np.mean(alone[s][-2:]) for s in (0, 1, 2)]
    )
    assert np.isnan(last2[3])  # its first task is null
    assert np.isnan(interventions_nap.online_accuracy(rows, "none_nap", 5, last_tasks=2)[2])
    (row,) = interventions_nap.evaluate(rows, config, last_tasks=2)
    assert row.metric == "average online accuracy, last 2 tasks"
    differences = [np.mean(with_nap[s][-2:]) - np.mean(alone[s][-2:]) for s in (0, 1)]
    assert row.comparisons[0].interval.mean == pytest.approx(np.mean(differences))
    (whole,) = interventions_nap.evaluate(rows, config, last_tasks=5)
    (default,) = interventions_nap.evaluate(rows, config)
    assert whole.comparisons[0].interval == default.comparisons[0].interval
    assert interventions_nap.evaluate(rows, config, last_tasks=1)[0].metric.endswith("last task")
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"--last_tasks must be in \[1, 5\]"):
            interventions_nap.evaluate(rows, config, last_tasks=bad)


def test_the_figure_draws_each_interventions_two_arms_per_task():
    config = interventions_nap.grid_config("cpu", 2)
    config.variant_order = ("none", "none_nap", "redo", "redo_nap", "leaky_relu")
    config.task.num_tasks = 3
    values = {
        arm: {seed: [0.1 * (i + 1) + 0.01 * seed + 0.001 * t for t in range(3)] for seed in (0, 1)}
        for i, arm in enumerate(config.variant_order)
    }
    fig = interventions_nap.draw(_rows(values), config)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["none", "redo"]
    for ax, arms in zip(panels, (("none", "none_nap"), ("redo", "redo_nap"))):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == list(arms)
        for line, arm in zip(lines, arms):
            expected = np.mean([values[arm][seed] for seed in (0, 1)], axis=0)
            np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "without NaP (plain network)",
        "with NaP (LayerNorm + projection)",
    ]
    base.pyplot().close(fig)


def test_the_claim_runs_end_to_end_at_smoke_scale(tmp_path, capsys, monkeypatch):
    """ReDo's pair only (compiling is nearly all a smoke run's cost), beside a plain arm."""
    monkeypatch.setattr(interventions_nap, "SMOKE_INTERVENTIONS", ("redo",))
    result = interventions_nap.run(tmp_path, "smoke", 2, {"show_progress": False})
    assert [row.label for row in result.rows] == ["redo"]
    for row in result.rows:
        assert all(interval.n == 2 for interval in row.arms.values())
        assert all(0.0 <= interval.mean <= 1.0 for interval in row.arms.values())
    with open(result.figures[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = base.load_rows(tmp_path / "grid")
    for arm in ("redo", "redo_nap"):
        applied = base.select(rows, "intervention", variant=arm)
        assert {(row["seed"], row["name"]) for row in applied} == {(0, "redo"), (1, "redo")}
    recorded = json.loads((tmp_path / "grid" / "config.json").read_text())
    assert recorded["variants"]["redo_nap"]["optimizer"]["nap"]["enabled"] is True
    # The same rows from the work dir alone (how an `ln_base` or `cnn` run is read).
    again = interventions_nap.evaluate_workdir(tmp_path / "grid")
    assert [row.arms for row in again.rows] == [row.arms for row in result.rows]
    assert interventions_nap.main(["interventions_nap", str(tmp_path / "grid")]) == 0
    table = capsys.readouterr().out
    assert "| interventions_nap (redo) | redo, redo+NaP |" in table
    assert table.splitlines()[2].endswith("| — |")  # the work dir does not record the minutes
    # A work dir that is not a continual run (an RL run's config) and one of another grid.
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "config.json").write_text(json.dumps({"num_seeds": 1, "games": ["pong"]}))
    (tmp_path / "other").mkdir()
    other = {**recorded, "variant_order": ["redo"]}
    (tmp_path / "other" / "config.json").write_text(json.dumps(other))
    grid = str(tmp_path / "grid")
    assert interventions_nap.main(["interventions_nap", grid, "--last_tasks=1"]) == 0
    assert "average online accuracy, last task:" in capsys.readouterr().out
    usage = "usage: python -m benchmarks.claims.interventions_nap"
    for argv, message in (
        ([str(tmp_path / "nothing")], "interventions_nap: error: cannot read "),
        ([grid, "--last_tasks=x"], "interventions_nap: error: --last_tasks takes"),
        ([grid, "--last_tasks=99"], f"interventions_nap: error: {grid}: --last_tasks must"),
        ([grid, "--oops"], usage),
        ([grid, "--last_tasks=1", "--last_tasks=2"], usage),
        ([str(tmp_path / "rl")], "interventions_nap: error: cannot read "),
        ([str(tmp_path / "other")], f"interventions_nap: error: {tmp_path / 'other'}: its config"),
    ):
        assert interventions_nap.main(["interventions_nap", *argv]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(message), line


def test_arms_without_nap_on_layernorm_are_labelled_so():
    config = nap_interventions.get_config("ln_base,smoke,redo,redo_nap")
    assert interventions_nap.arm_labels(config, "redo") == ("LN+redo", "LN+redo+NaP")
    assert interventions_nap.arm_labels(interventions_nap.grid_config("cpu", 3), "redo") == (
        "redo",
        "redo+NaP",
    )
