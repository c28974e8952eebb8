"""The two RL launchers: one flag vocabulary, the published experiments, runs from the command line.

The flag-to-config mapping and the experiment files are library code (`agents.configs`,
`agents.launcher`, `benchmarks/configs`) and are tested as such; the runs go through the
launchers as a user runs them (the MinAtar one in this process, through `plasticity.launch.main`,
so that it shares its compiled programs with `tests/agents/test_minatar_loop.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from agents import configs, driver, launcher
from benchmarks import analysis as figures
from benchmarks.configs import atari_sequence, minatar_sequence
from plasticity import analysis, config_tools, launch
from plasticity import workdir as workdir_lib
from scripts import train_minatar

REPO = Path(__file__).resolve().parents[2]
# Cuts XLA:CPU compile time of multi-axis random draws (conv kernel inits) roughly tenfold.
ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "0"}
FAMILIES = ("atari", "minatar")


def named(**values):
    """The named flags of a launch, unset (None) unless given."""
    return {name: values.get(name) for name in configs.NAMED_FLAGS}


def launch_atari(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.train_atari", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


# Flags and configs ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_named_flags_and_config_overrides_build_the_config(family):
    overrides = {
        "learner.n_step": "3",
        "replay.capacity": "4096",
        "network.hidden_sizes": "(64,)",
        # An options section takes fields it does not list yet, as Python literals.
        "intervention.options.tau": "0.025",
        "intervention.options.norm_recycling": "keep",
        "diagnostics.options.dormant_thresholds": "(0.0, 0.1)",
        "diagnostics.names": "weight_norm,dormant",  # bare words: strings, as in absl lists
    }
    config = configs.build_config(
        family,
        "dqn",
        None,
        overrides,
        named(
            games=["breakout"],
            cycles=2,
            frames_per_game=4096,
            seed=7,
            num_seeds=3,
            norm="layernorm",
            nap=True,
            weight_decay=1e-5,
            num_envs=4,
            restart_schedule_at_switch=True,
        ),
    )
    assert config.agent == "dqn" and config.learner.n_step == 3 and config.replay.capacity == 4096
    assert config.network.hidden_sizes == (64,) and config.games == ("breakout",)
    assert config.intervention.options.to_dict() == {"tau": 0.025, "norm_recycling": "keep"}
    assert config.diagnostics.options.dormant_thresholds == (0.0, 0.1)
    assert config.diagnostics.names == ("weight_norm", "dormant")
    assert (config.frames_per_game, config.cycles, config.seed, config.num_seeds) == (
        4096,
        2,
        7,
        3,
    )
    assert config.network.norm == "layernorm" and config.optimizer.nap.enabled
    assert config.optimizer.weight_decay == 1e-5 and config.env.num_envs == 4
    assert config.switch.restart_schedule and not config.switch.flush_replay
    assert config.optimizer.name == "rmsprop" and config.optimizer.rmsprop_centered  # DQN's preset
    assert config.evaluation.fresh_reference  # the same default in both launchers
    assert config.env.frame_skip == (4 if family == "atari" else 1)
    with pytest.raises(ValueError, match="--agent"):
        configs.build_config(family, None, None, {"agent": "dqn"}, named())
    with pytest.raises(ValueError, match=r"unknown config field 'replay.capasity' \(did you mean"):
        configs.build_config(family, None, None, {"replay.capasity": "1"}, named())
    with pytest.raises(ValueError, match="multiple of env.num_envs"):
        config.frames_per_game = 4097
        configs.expand_runs(config, family, "w")


def test_the_switch_defaults_and_the_sequence_schedule_values():
    config = configs.get_config("rainbow")
    assert dict(config.switch) == dict.fromkeys(
        ("flush_replay", "reset_optimizer", "restart_schedule"), False
    )
    schedule = config.optimizer.schedule
    assert schedule.name == "constant"  # restarted only when asked
    assert (schedule.init_value, schedule.warmup_steps, schedule.end_value) == (1e-8, 1_000, 1e-6)
    assert configs.get_config("rainbow", "minatar").optimizer.schedule.warmup_steps == 500


def test_a_schedule_left_open_is_fitted_to_the_sequences_updates():
    """total_steps 0 spans the sequence's updates, cosine_restarts without boundaries restarts at
    every game, and the fresh references share the sequence's schedule (its first block's part)."""
    from agents import minatar_loop  # noqa: PLC0415

    config = minatar_sequence.get_config("smoke,rainbow")
    ((_, config),) = configs.expand_runs(config, "minatar", "w")
    config.games = ("breakout", "asterix")
    for name in ("warmup_cosine", "cosine_restarts"):
        config.optimizer.schedule.name = name
        main, *references = minatar_loop.plan_run(config)
        fitted = main.config.optimizer.schedule
        assert fitted.total_steps == main.plan.total_updates > 0
        starts = tuple(u for u in main.plan.block_start_updates if u > 0)
        assert tuple(fitted.boundaries) == (starts if name == "cosine_restarts" else ())
        assert references and all(
            r.config.optimizer.schedule.to_dict() == fitted.to_dict() for r in references
        )
    assert config.optimizer.schedule.total_steps == 0  # the run's config is left open


def test_variants_run_in_sub_work_dirs_and_atari_seeds_each_in_its_own():
    config = atari_sequence.get_config("smoke," + ",".join(atari_sequence.VARIANTS))
    config.num_seeds = 2
    runs = configs.expand_runs(config, "atari", "w")
    assert [path for path, _ in runs] == [
        f"w/{variant}/seed_{seed}" for variant in atari_sequence.VARIANTS for seed in (0, 1)
    ]
    assert all(one.num_seeds == 1 for _, one in runs)
    minatar = minatar_sequence.get_config("smoke,rainbow_ln")
    minatar.num_seeds = 2
    ((path, one),) = configs.expand_runs(minatar, "minatar", "w")
    assert path == "w/rainbow_ln" and one.num_seeds == 2 and one.network.norm == "layernorm"
    config.variants.rainbow_ln_nap.network.norm = "none"  # NaP without a norm: named and refused
    with pytest.raises(ValueError, match="variant 'rainbow_ln_nap': NaP needs a normalization"):
        configs.expand_runs(config, "atari", "w")


def test_an_atari_variants_seeds_are_summarized_each_and_together(tmp_path):
    """Each seed's run says which seed its scores are; the launch adds a line per variant with
    the mean over its seeds (each seed a run of its own, in seed_<s>)."""
    config = atari_sequence.get_config("smoke,rainbow,rainbow_ln_nap")
    config.num_seeds = 2
    config.seed = 3
    scores = {("rainbow", 3): -21.0, ("rainbow", 4): -19.0, ("rainbow_ln_nap", 3): -20.0}
    for (variant, seed), score in scores.items():
        row = dict(event="eval", end_of_block=True, game="Pong", trained_game="Pong", visit=1)
        path = tmp_path / variant / f"seed_{seed}" / workdir_lib.METRICS_FILE
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**row, "seed": seed, "return_mean": score}) + "\n")
    rows = workdir_lib.read_metrics(tmp_path / "rainbow" / "seed_4")
    assert driver.summary_lines(rows, "return_mean") == [
        "Pong: visit_1 -19.00 (return_mean, seed 4)"
    ]
    assert launcher.across_seeds_lines(str(tmp_path), config) == [
        "rainbow: Pong: visit_1 -20.00 (return_mean, mean over 2 seeds)",
        "rainbow_ln_nap: Pong: visit_1 -20.00 (return_mean, seed 3)",  # its seed 4 had no score
    ]


@pytest.mark.parametrize("variant", atari_sequence.VARIANTS)
def test_the_atari_sequence_experiment_at_paper_scale(variant):
    """The published config: 10 games x 20M frames x 2 cycles; NaP's schedule planned ahead."""
    from agents import atari_loop, sequence  # noqa: PLC0415 - imports JAX and ALE

    ((_, config),) = configs.expand_runs(
        atari_sequence.get_config(f"paper,{variant}"), "atari", "w"
    )
    assert (len(config.games), config.cycles, config.frames_per_game) == (10, 2, 20_000_000)
    assert config.network.num_atoms == 51 and config.replay.prioritized
    assert config.network.norm == ("none" if variant == "rainbow" else "layernorm")
    assert config.optimizer.nap.enabled == (variant == "rainbow_ln_nap")
    assert config.evaluation.fresh_reference and config.env.full_action_space
    assert not config.switch.flush_replay and not config.switch.reset_optimizer
    blocks = atari_loop.make_blocks(config)
    assert len(blocks) == 20 and [b.visit for b in blocks] == [1] * 10 + [2] * 10
    sequence_segment, *references = sequence.plan_segments(config, blocks)
    # The first game's reference is the sequence's own first block: not trained twice.
    assert sequence_segment.first_block_is_reference
    assert [r.name for r in references] == [f"fresh_{b.game}" for b in blocks[1:10]]
    optimizer = sequence_segment.config.optimizer
    if variant != "rainbow_ln_nap":
        assert optimizer.schedule.name == "constant" and optimizer.learning_rate == 6.25e-5
        return
    # NaP's schedule: restarted at each of the 19 switches, planned without per-step arrays.
    assert optimizer.learning_rate == 6.25e-4 and config.switch.restart_schedule
    schedule = optimizer.schedule
    assert (schedule.init_value, schedule.warmup_steps, schedule.end_value) == (1e-8, 1000, 1e-6)
    assert schedule.name == "cosine_restarts" and len(schedule.boundaries) == 19
    # Learning starts in the loop iteration (8 envs, 32 frames) whose add brings the replay to 20k
    # transitions (2% of 1M), the 2,500th, and never stops: one update per 16 frames after it.
    waiting_frames = (20_000 // 8 - 1) * 32
    assert schedule.boundaries[0] == (20_000_000 - waiting_frames) // 16 == 1_245_002
    assert schedule.total_steps == (20 * 20_000_000 - waiting_frames) // 16


def test_the_command_line_wins_over_the_variants_and_says_which_it_changed(tmp_path, capsys):
    """``--norm`` applies to every variant; the variants whose own value it replaces (their names
    may no longer describe them) are named before training, and fields every variant shares
    (the smoke scale's sizes) or that the command line leaves as they are name none."""
    experiment = "benchmarks/configs/minatar_sequence.py:smoke,rainbow,rainbow_ln,rainbow_ln_nap"
    define = lambda values: launcher.define_flags(values, "minatar")  # noqa: E731
    argv = ["train_minatar", f"--experiment={experiment}", "--norm=layernorm"]
    argv += ["--config.replay.capacity=2048", f"--workdir={tmp_path}"]
    values, overrides = launch.parse(argv, define)
    context = launch.Launch("train_minatar", values, overrides, *[lambda: None] * 3)
    trained = {}

    def train(config, workdir, **_):
        trained[Path(workdir).name] = config
        return types.SimpleNamespace(completed=True)

    launcher.run(context, "minatar", train)
    assert {name: c.network.norm for name, c in trained.items()} == dict.fromkeys(
        ("rainbow", "rainbow_ln", "rainbow_ln_nap"), "layernorm"
    )
    assert {c.replay.capacity for c in trained.values()} == {2048}
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == [
        "train_minatar: note: variant 'rainbow' runs with network.norm='none' but the command line "
        "makes it 'layernorm'; its work dir keeps the variant's name"
    ]
    replaced = []
    configs.build_config("minatar", None, experiment, {}, named(norm="none"), replaced)
    assert [line.split(" runs with")[0] for line in replaced] == [
        "variant 'rainbow_ln'",
        "variant 'rainbow_ln_nap'",
    ]
    # A misspelt variant beside a named flag: the order's one-line error, not a KeyError.
    misspelt = {"variant_order": "rainbow,rainbw"}
    config = configs.build_config("minatar", None, experiment, misspelt, named(norm="rmsnorm"))
    with pytest.raises(ValueError, match="must list distinct variants among"):
        configs.expand_runs(config, "minatar", "w")
    replaced = []  # one variant alone: its own value replaced is said too
    smoke = "benchmarks/configs/minatar_sequence.py:smoke"
    configs.build_config("minatar", None, smoke, {}, named(norm="rmsnorm"), replaced)
    assert replaced == [
        "variant 'rainbow_ln_nap' runs with network.norm='layernorm' but the command line makes it "
        "'rmsnorm'; its work dir keeps the variant's name"
    ]


@pytest.mark.parametrize("module", [atari_sequence, minatar_sequence])
def test_experiment_files_take_a_scale_and_variants_and_refuse_anything_else(module):
    smoke = module.get_config("smoke")
    assert smoke.variant_order == ("rainbow_ln_nap",) and smoke.frames_per_game <= 1024
    assert module.get_config(None).variant_order == module.VARIANTS
    assert module.get_config("paper,rainbow_ln").variant_order == ("rainbow_ln",)
    with pytest.raises(ValueError, match="unknown config argument 'rainbow_nap'; accepted: smoke"):
        module.get_config("paper,rainbow_nap")
    with pytest.raises(ValueError, match="two scales"):
        module.get_config("paper,smoke")
    spec = f"benchmarks/configs/{module.__name__.rsplit('.', 1)[1]}.py:smoke"
    assert config_tools.load_config_file(spec).to_dict() == smoke.to_dict()


def test_another_launchers_name_for_a_field_suggests_this_ones():
    """The RL launchers keep ``keep_checkpoints``, the continual one ``run.checkpoints_to_keep``:
    each names the other's field when given it."""
    from benchmarks import continual_config  # noqa: PLC0415

    rl = list(config_tools.flatten(configs.get_config("dqn", "minatar")))
    continual = list(config_tools.flatten(continual_config.default_config()))
    assert config_tools.closest_field("run.checkpoints_to_keep", rl) == (
        " (did you mean keep_checkpoints?)"
    )
    assert config_tools.closest_field("keep_checkpoints", continual) == (
        " (did you mean run.checkpoints_to_keep?)"
    )
    # Among fields of the same words, the one of the same section.
    assert config_tools.closest_field("optimizer.rate_learning", continual) == (
        " (did you mean optimizer.learning_rate?)"
    )


def test_published_configs_are_found_from_any_working_directory(tmp_path, monkeypatch):
    """``--experiment=benchmarks/configs/...`` names a published file from outside the checkout
    (or a non-editable install) too; a file found nowhere says where it was looked for."""
    monkeypatch.chdir(tmp_path)
    config = config_tools.load_config_file("benchmarks/configs/minatar_sequence.py:smoke")
    assert tuple(config.games) == ("breakout", "space_invaders")
    with pytest.raises(ValueError, match=r"no Python config file benchmarks/configs/no\.py \("):
        config_tools.load_config_file("benchmarks/configs/no.py")
    (tmp_path / "benchmarks" / "configs").mkdir(parents=True)  # the working directory wins
    (tmp_path / "benchmarks" / "configs" / "minatar_sequence.py").write_text(
        "def get_config(arg):\n    return {'games': ('mine',)}\n"
    )
    own = config_tools.load_config_file("benchmarks/configs/minatar_sequence.py")
    assert tuple(own.games) == ("mine",)


# Runs from the command line ------------------------------------------------------------------

TINY_MINATAR = [
    "--games=breakout,space_invaders",
    "--frames_per_game=512",
    "--cycles=2",
    "--agent=dqn",
    "--num_seeds=2",
    "--num_envs=2",
    "--noprogress",
    "--config.network.conv_layers=((4, 3, 2),)",
    "--config.network.hidden_sizes=(16,)",
    "--config.replay.capacity=1024",
    "--config.replay.min_fill_fraction=0.0625",
    "--config.learner.target_update_period_frames=128",
    "--config.exploration.decay_frames=256",
    "--config.evaluation.episodes=2",
    "--config.evaluation.max_frames=1000",
    "--config.optimizer.schedule.warmup_steps=8",
    "--config.log_every_frames=128",
    "--config.checkpoint_every_frames=256",
    "--config.diagnostics.every_frames=256",
    "--config.diagnostics.names=('weight_norm', 'update_ratio')",
    "--config.diagnostics.batch_size=16",
    "--config.run.runs_per_batch=0",
]


def test_the_minatar_flags_give_the_loop_tests_config():
    """The command line above is the config of tests/agents/test_minatar_loop.py (so a session
    compiles its programs once)."""
    from tests.agents.test_minatar_loop import tiny  # noqa: PLC0415

    define = lambda values: launcher.define_flags(values, "minatar")  # noqa: E731
    values, overrides = launch.parse(["train_minatar", *TINY_MINATAR, "--workdir=w"], define)
    config = launcher.config_of(values, overrides, "minatar")
    assert config.to_dict() == tiny().to_dict()


def run_minatar(argv: list[str]) -> int:
    return train_minatar.main(["train_minatar", *argv])


def test_a_tiny_minatar_run_writes_the_work_dir_and_a_relaunch_trains_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert run_minatar([*TINY_MINATAR, f"--workdir={workdir}"]) == 0
    # 4 blocks of 512 frames and space_invaders' reference (breakout's is the first block).
    assert "complete (frame 2,560 of 2,560)" in capsys.readouterr().err
    saved = json.loads((workdir / "config.json").read_text())
    assert [b["game"] for b in saved["schedule"]] == ["breakout", "space_invaders"] * 2
    assert saved["network"]["conv_layers"] == [[4, 3, 2]] and saved["num_seeds"] == 2
    rows = workdir_lib.read_metrics(workdir)
    assert {r["event"] for r in rows} == {"train", "diagnostics", "switch", "eval", "eval_fresh"}
    games, blocks, matrix = figures.evaluation_matrix(analysis.load_run(workdir))
    assert games == ["breakout", "space_invaders"] and blocks == [0, 1, 2, 3]
    assert np.isnan(matrix[0, 1]) and np.isfinite(matrix[1:]).all()
    assert list(workdir.glob("events.out.tfevents.*"))
    assert (workdir / "evaluation_matrix.json").exists()
    assert run_minatar([*TINY_MINATAR, f"--workdir={workdir}"]) == 0
    relaunched = capsys.readouterr()
    assert "already complete" in relaunched.err
    assert workdir_lib.read_metrics(workdir) == rows
    # The run's summary again: every game's visits next to its fresh network's score.
    assert [line.split(":")[0] for line in relaunched.out.splitlines()] == [
        "breakout",
        "space_invaders",
    ]


def test_an_atari_run_with_the_nature_network_writes_the_work_dir(tmp_path):
    """DQN with the real Nature network: 384 frames, learning from frame 256, so 8 updates."""
    path = tmp_path / "run"
    done = launch_atari(
        "--games=Pong",
        "--agent=dqn",
        f"--workdir={path}",
        "--frames_per_game=384",
        "--num_envs=2",
        "--noprogress",
        "--nofresh_reference",
        "--config.replay.capacity=256",
        "--config.replay.min_fill_fraction=0.25",
        "--config.evaluation.episodes=1",
        "--config.evaluation.max_frames=160",
        "--config.log_every_frames=128",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train_atari: complete (frame 384 of 384)" in done.stderr
    config = json.loads((path / workdir_lib.CONFIG_FILE).read_text())
    assert config["network"]["torso"] == "nature" and config["agent"] == "dqn"
    rows = workdir_lib.read_metrics(path)
    assert [row["frames"] for row in rows if row["event"] == "train"] == [128, 256, 384]
    last_train = [row for row in rows if row["event"] == "train"][-1]
    assert last_train["updates"] == 8 and last_train["loss"] > 0
    (evaluation,) = [row for row in rows if row["event"] == "eval"]
    assert evaluation["frames"] == 384 and evaluation["game"] == "pong"
    assert (path / "checkpoints" / "384").is_dir()


def test_an_atari_sequence_from_flags_keeps_replay_moments_and_schedule_across_the_switch(
    tmp_path,
):
    """Pong then Breakout with every switch policy off, from the command line; the policies on
    are tested through the loop in tests/agents/test_atari_sequence.py."""
    path = tmp_path / "run"
    done = launch_atari(
        "--games=Pong,Breakout",
        "--agent=dqn",
        f"--workdir={path}",
        "--frames_per_game=256",
        "--num_envs=2",
        "--noprogress",
        "--nofresh_reference",
        "--noflush_replay_at_switch",
        "--noreset_optimizer_at_switch",
        "--norestart_schedule_at_switch",
        "--config.network.torso=conv",
        "--config.network.conv_layers=((8, 8, 4), (8, 4, 2))",
        "--config.network.hidden_sizes=(32,)",
        "--config.replay.capacity=512",
        "--config.replay.min_fill_fraction=0.0625",
        "--config.env.max_episode_frames=160",
        "--config.evaluation.episodes=2",
        "--config.evaluation.max_frames=400",
        "--config.log_every_frames=128",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((path / workdir_lib.CONFIG_FILE).read_text())
    assert config["switch"] == dict.fromkeys(
        ("flush_replay", "reset_optimizer", "restart_schedule"), False
    )
    rows = workdir_lib.read_metrics(path)
    # Learning starts with the 16th of 32 iterations (32 items) and goes on through the switch:
    # (17 + 32) iterations x 8 frames / 16 frames per update.
    assert [r["updates"] for r in rows if r["event"] == "train"][-1] == 24
    (switch,) = [row for row in rows if row["event"] == "switch"]
    assert (switch["frames"], switch["game"], switch["previous_game"]) == (256, "breakout", "pong")
    assert switch["replay_items"] == 64 and switch["optimizer_moments_norm"] > 0
    assert switch["updates"] == 8 and switch["learning_rate"] == pytest.approx(2.5e-4)  # constant
    for row in rows:
        assert {"frames", "game", "visit", "cycle"} <= set(row), row
    matrix = json.loads((path / "evaluation_matrix.json").read_text())
    assert matrix["games"] == ["pong", "breakout"] and len(matrix["return_mean"]) == 2
    assert matrix["return_mean"][0][1] is None and matrix["fresh"] == {}
    assert set(matrix["visit_scores"]["pong"]) == {"visit_1"}


def test_a_stop_request_as_a_run_completes_starts_no_further_run(tmp_path, capsys):
    """A Ctrl-C during a run's last chunk or final evaluation lets that run complete; the launch
    then stops before its next run (a relaunch starts it) and says so in one line, rather than
    spending minutes compiling the next variant."""
    experiment = "benchmarks/configs/minatar_sequence.py:smoke,rainbow,rainbow_ln,rainbow_ln_nap"
    define = lambda values: launcher.define_flags(values, "minatar")  # noqa: E731
    argv = ["train_minatar", f"--experiment={experiment}", f"--workdir={tmp_path}"]
    values, overrides = launch.parse(argv, define)
    requested = []
    context = launch.Launch(
        "train_minatar", values, overrides, lambda: bool(requested), lambda: "SIGINT", bool
    )
    trained = []

    def train(config, workdir, **_):
        trained.append(Path(workdir).name)
        requested.append(True)  # arrives during the first run's final evaluation
        return types.SimpleNamespace(completed=True)

    results = launcher.run(context, "minatar", train)
    assert trained == ["rainbow"] and len(results) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"train_minatar: SIGINT arrived as the run in {tmp_path / 'rainbow'} completed: the next "
        "run does not start (relaunch to go on)"
    )
    requested.clear()  # without a stop request every variant runs
    trained.clear()
    launcher.run(
        launch.Launch("train_minatar", values, overrides, *[lambda: False] * 3),
        "minatar",
        lambda config, workdir, **_: (
            trained.append(Path(workdir).name) or types.SimpleNamespace(completed=True)
        ),
    )
    assert trained == ["rainbow", "rainbow_ln", "rainbow_ln_nap"]
