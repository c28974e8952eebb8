"""The MinAtar launcher: one-line errors, flags and overrides, a tiny run writing the work dir.

The tiny run uses the config of `tests/agents/test_minatar_loop.py`, so in one pytest session the
two share their compiled programs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from agents import minatar_loop
from plasticity import analysis
from plasticity import workdir as workdir_lib
from scripts import train_minatar

REPO = Path(__file__).resolve().parents[2]


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def overrides_towards(target) -> list[str]:
    """``--config.*`` flags turning the DQN preset into ``target``."""
    preset = flat(minatar_loop.minatar_config("dqn").to_dict())
    wanted = flat(target.to_dict())
    skip = {"agent", "frames_per_game", "num_seeds", "seed"}
    return [
        f"--config.{key}={value}"
        for key, value in wanted.items()
        if key not in skip and preset.get(key) != value
    ]


def tiny_config():
    """The two-seed config of the loop tests."""
    config = minatar_loop.smoke_minatar_config("dqn")
    config.num_seeds = 2
    config.frames_per_game = 512
    config.diagnostics.every_frames = 256
    config.evaluation.fresh_reference = True
    return config


def tiny_flags() -> list[str]:
    """The launcher flags of the two-seed tiny run (breakout, space_invaders, twice)."""
    return [
        "--games=breakout,space_invaders",
        "--steps_per_game=512",
        "--cycles=2",
        "--agent=dqn",
        "--num_seeds=2",
        "--fresh_reference",
        "--noprogress",
        *overrides_towards(tiny_config()),
    ]


def test_an_unknown_game_fails_with_one_line_listing_close_matches(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.train_minatar",
            "--games=breakout,spaceinvader",
            f"--workdir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("train_minatar:")]
    assert "spaceinvader" in line and "close matches: space_invaders" in line
    assert not (tmp_path / "run").exists()


def test_nap_without_a_norm_fails_with_one_line(tmp_path, capsys):
    status = train_minatar.main(
        ["train_minatar", "--nap", "--norm=none", f"--workdir={tmp_path / 'run'}"]
    )
    assert status == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("train_minatar: error: NaP needs a normalization")


def test_named_flags_and_overrides_build_the_config():
    config = train_minatar.build_config(
        "rainbow",
        {"replay.capacity": 4096, "network.hidden_sizes": (64,)},
        steps_per_game=2048,
        num_seeds=3,
        norm="layernorm",
        nap=True,
        restart_schedule_at_switch=True,
        flush_replay_at_switch=False,
        num_envs=4,
    )
    assert config.frames_per_game == 2048 and config.num_seeds == 3
    assert config.network.norm == "layernorm" and config.optimizer.nap.enabled
    assert config.switch.restart_schedule and not config.switch.flush_replay
    assert config.replay.capacity == 4096 and config.network.hidden_sizes == (64,)
    assert config.env.num_envs == 4 and not config.switch.reset_optimizer
    with pytest.raises(ValueError, match="--agent"):
        train_minatar.build_config("dqn", {"agent": "rainbow"})


def test_a_tiny_run_writes_the_work_dir_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["train_minatar", *tiny_flags(), f"--workdir={workdir}"]
    with jax.threefry_partitionable(False):
        assert train_minatar.main(argv) == 0
    printed = capsys.readouterr().out
    assert "breakout: fresh" in printed and "visit_2" in printed
    saved = json.loads((workdir / "config.json").read_text())
    assert [b["game"] for b in saved["schedule"]] == ["breakout", "space_invaders"] * 2
    assert saved["network"]["conv_layers"] == [[4, 3, 2]] and saved["num_seeds"] == 2
    rows = workdir_lib.read_metrics(workdir)
    assert {r["event"] for r in rows} == {"train", "diagnostics", "switch", "eval", "eval_fresh"}
    games, blocks, matrix = analysis.evaluation_matrix(analysis.load_run(workdir))
    assert games == ["breakout", "space_invaders"] and blocks == [0, 1, 2, 3]
    assert np.isnan(matrix[0, 1]) and np.isfinite(matrix[1:]).all()
    assert list(workdir.glob("events.out.tfevents.*"))
    assert (workdir / "evaluation_matrix.json").exists()
    # Relaunching a finished run resumes at its end: nothing is trained or written again.
    with jax.threefry_partitionable(False):
        assert train_minatar.main(argv) == 0
    assert workdir_lib.read_metrics(workdir) == rows
