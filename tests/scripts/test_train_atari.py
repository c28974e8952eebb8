"""The Atari launcher, run as a user runs it (a subprocess): errors, flags, a real-network run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plasticity import workdir
from scripts.train_atari import build_config

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
