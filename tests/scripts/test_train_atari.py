"""The Atari launcher, run as a user runs it (a subprocess): errors, flags, a real-network run,
a game sequence; and the published sequence experiment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from benchmarks.configs import atari_sequence
from plasticity import workdir
from scripts.train_atari import build_config, split_experiment

REPO = Path(__file__).resolve().parents[2]
# Cuts XLA:CPU compile time of multi-axis random draws (conv kernel inits) roughly tenfold.
ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "0"}


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.train_atari", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("train_atari: error:")]


def test_an_unknown_game_fails_with_one_line_listing_close_matches(tmp_path):
    done = launch("--games=Pongg", f"--workdir={tmp_path / 'run'}")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = error_lines(done)
    assert "Pongg" in line and "close matches: pong" in line
    assert not (tmp_path / "run").exists()


def test_nap_without_a_norm_fails_with_one_line(tmp_path):
    done = launch("--games=Pong", "--nap", "--norm=none", f"--workdir={tmp_path / 'run'}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = error_lines(done)
    assert "NaP needs a normalization" in line


def test_named_flags_and_config_overrides_build_the_config():
    config = build_config(
        "dqn",
        {"learner.n_step": 3, "replay.capacity": 4096},
        frames_per_game=4096,
        seed=7,
        norm="layernorm",
        nap=True,
        weight_decay=1e-5,
        num_envs=4,
    )
    assert config.agent == "dqn" and config.learner.n_step == 3 and config.replay.capacity == 4096
    assert (config.frames_per_game, config.seed, config.env.num_envs) == (4096, 7, 4)
    assert config.network.norm == "layernorm" and config.optimizer.nap.enabled
    assert config.optimizer.weight_decay == 1e-5
    assert config.optimizer.name == "rmsprop" and config.optimizer.rmsprop_centered  # DQN's preset
    rainbow = build_config("rainbow", {})
    assert (
        rainbow.network.num_atoms == 51
        and rainbow.replay.prioritized
        and not rainbow.optimizer.nap.enabled
    )
    with pytest.raises(ValueError, match="--agent"):
        build_config("rainbow", {"agent": "dqn"})
    with pytest.raises(ValueError, match="multiple of env.num_envs"):
        build_config("dqn", {}, frames_per_game=1001)


def test_a_run_with_the_nature_network_writes_the_work_dir(tmp_path):
    """DQN with the real Nature network: 384 frames, learning from frame 256, so 8 updates."""
    path = tmp_path / "run"
    done = launch(
        "--games=Pong",
        "--agent=dqn",
        f"--workdir={path}",
        "--frames_per_game=384",
        "--num_envs=2",
        "--noprogress",
        "--config.replay.capacity=256",
        "--config.replay.min_fill_fraction=0.25",
        "--config.evaluation.episodes=1",
        "--config.evaluation.max_frames=160",
        "--config.log_every_frames=128",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: 384 frames, 8 updates" in done.stdout
    config = json.loads((path / workdir.CONFIG_FILE).read_text())
    assert config["network"]["torso"] == "nature" and config["agent"] == "dqn"
    rows = workdir.read_metrics(path)
    assert [row["frames"] for row in rows if row["event"] == "train"] == [128, 256, 384]
    last_train = [row for row in rows if row["event"] == "train"][-1]
    assert last_train["updates"] == 8 and last_train["loss"] > 0
    (evaluation,) = [row for row in rows if row["event"] == "eval"]
    assert evaluation["frames"] == 384 and evaluation["game"] == "pong"
    assert (path / "checkpoints" / "384").is_dir()


def test_switch_flags_and_sequence_defaults_build_the_config():
    default = build_config("rainbow", {})
    assert dict(default.switch) == {
        "flush_replay": False,
        "reset_optimizer": False,
        "restart_schedule": False,
    }
    assert default.evaluation.fresh_reference is False
    assert default.optimizer.schedule.name == "constant"  # restarted only when asked
    assert (
        default.optimizer.schedule.init_value,
        default.optimizer.schedule.warmup_steps,
        default.optimizer.schedule.end_value,
    ) == (1e-8, 1_000, 1e-6)
    config = build_config(
        "rainbow",
        {"optimizer.learning_rate": 6.25e-4},
        norm="layernorm",
        nap=True,
        flush_replay_at_switch=True,
        reset_optimizer_at_switch=False,
        restart_schedule_at_switch=True,
        fresh_reference=True,
    )
    assert dict(config.switch) == {
        "flush_replay": True,
        "reset_optimizer": False,
        "restart_schedule": True,
    }
    assert config.evaluation.fresh_reference and config.optimizer.learning_rate == 6.25e-4


@pytest.mark.parametrize("arm", atari_sequence.ARMS)
def test_the_atari_sequence_experiment_at_paper_scale(arm):
    """The published config: 10 games x 20M frames x 2 cycles, one arm per command."""
    from agents import atari_loop  # noqa: PLC0415 - imports JAX

    experiment = atari_sequence.get_config(f"paper,{arm}")
    base, games, cycles = split_experiment(experiment)
    assert (len(games), cycles, base.frames_per_game) == (10, 2, 20_000_000)
    assert "games" not in base and "cycles" not in base
    config = build_config(base.agent, {}, base=base)  # what the launcher does
    assert (
        config.agent == "rainbow" and config.network.num_atoms == 51 and config.replay.prioritized
    )
    assert config.network.norm == ("none" if arm == "rainbow" else "layernorm")
    assert config.optimizer.nap.enabled == (arm == "rainbow_ln_nap")
    assert config.evaluation.fresh_reference and config.env.full_action_space
    assert not config.switch.flush_replay and not config.switch.reset_optimizer
    blocks = atari_loop.make_game_blocks(games, config.frames_per_game, cycles)
    assert len(blocks) == 20 and [b.visit for b in blocks] == [1] * 10 + [2] * 10
    optimizer = atari_loop.learning_config(config, blocks).optimizer
    if arm != "rainbow_ln_nap":
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


def test_the_atari_sequence_experiment_at_smoke_scale_and_bad_arguments():
    base, games, cycles = split_experiment(atari_sequence.get_config())
    assert games == ["Pong", "Breakout", "Enduro"] and cycles == 2
    assert base.network.norm == "layernorm" and base.switch.restart_schedule  # NaP by default
    assert base.optimizer.schedule.warmup_steps == 8
    build_config(base.agent, {}, base=base)
    with pytest.raises(ValueError, match="expected a scale"):
        atari_sequence.get_config("paper,rainbow_nap")
    with pytest.raises(ValueError, match="no games"):
        split_experiment(ml_collections.ConfigDict({"agent": "dqn"}))


def test_a_sequence_from_flags_keeps_replay_moments_and_schedule_across_the_switch(tmp_path):
    """Pong then Breakout with every switch policy off, from the command line; the policies on
    are tested through the loop in tests/agents/test_atari_sequence.py."""
    path = tmp_path / "run"
    done = launch(
        "--games=Pong,Breakout",
        "--agent=dqn",
        f"--workdir={path}",
        "--frames_per_game=256",
        "--num_envs=2",
        "--noprogress",
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
    # Learning starts with the 16th of 32 iterations (32 items) and goes on through the switch:
    # (17 + 32) iterations x 8 frames / 16 frames per update.
    assert "done: 512 frames, 24 updates" in done.stdout
    assert "2 blocks, 0 fresh references" in done.stdout
    config = json.loads((path / workdir.CONFIG_FILE).read_text())
    assert config["switch"] == {
        "flush_replay": False,
        "reset_optimizer": False,
        "restart_schedule": False,
    }
    assert config["env"]["full_action_space"] is True
    rows = workdir.read_metrics(path)
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
