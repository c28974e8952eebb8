"""The Atari loop's safety: a diverged state is never saved, `should_stop` ends a run after a
checkpoint and a relaunch finishes it; the launcher's exit statuses for divergence (3) and SIGTERM
(0). Jobs of several processes: tests/scripts/test_rl_multiprocess.py.

The in-process runs use the smoke config of `test_atari_loop`, so in one pytest session they share
its compiled functions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from agents import atari_loop
from agents.evaluation_matrix import EVALUATION_MATRIX_FILE
from plasticity import divergence
from plasticity import workdir as workdir_lib
from plasticity import checkpointing
from tests.agents.test_atari_loop import smoke

REPO = Path(__file__).resolve().parents[2]
# Cuts XLA:CPU compile time of multi-axis random draws (conv kernel inits) roughly tenfold.
ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "0"}
TINY_DQN = (  # the launcher's DQN preset shrunk: learning starts at 128 frames
    "--games=Pong",
    "--agent=dqn",
    "--num_envs=2",
    "--noprogress",
    "--config.network.torso=conv",
    "--config.network.conv_layers=((8, 8, 4), (8, 4, 2))",
    "--config.network.hidden_sizes=(32,)",
    "--config.replay.capacity=512",
    "--config.replay.min_fill_fraction=0.0625",
    "--config.evaluation.episodes=1",
    "--config.evaluation.max_frames=160",
    "--config.log_every_frames=128",
    "--nofresh_reference",
)


def checkpoint_steps(path: Path) -> list[int]:
    return sorted(int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture
def nan_params_from_block(monkeypatch):
    """Makes every parameter NaN when block ``index`` starts (set ``holder['index']``)."""
    holder = {"index": None}
    start_block = atari_loop.AtariLoop.start_block

    def planting(self, run, state, segment, block, resumed):
        state, rows = start_block(self, run, state, segment, block, resumed)
        if block == holder["index"]:
            params = jax.tree.map(lambda x: x * jnp.nan, state.train_state.params)
            state = state.replace(train_state=state.train_state.replace(params=params))
        return state, rows

    monkeypatch.setattr(atari_loop.AtariLoop, "start_block", planting)
    return holder


def divergence_of_two_pong_blocks(config, path: Path, holder) -> divergence.DivergenceError:
    """The error of two 384-frame Pong blocks whose parameters turn NaN when block 2 starts."""
    config.games, config.frames_per_game, config.cycles = ("Pong",), 384, 2
    holder["index"] = 1
    with pytest.raises(divergence.DivergenceError) as caught:
        atari_loop.train(config, str(path), show_progress=False)
    return caught.value


def test_a_nan_loss_stops_the_run_at_its_update_before_the_row_and_the_checkpoint(
    tmp_path, nan_params_from_block
):
    """Block 1 (384 frames) makes 8 updates and is saved; NaN parameters planted when block 2
    starts make the loss of update 9 NaN, caught at the 512-frame row."""
    error = divergence_of_two_pong_blocks(smoke(frames=384), tmp_path, nan_params_from_block)
    assert (error.step, error.metric) == (9, "loss") and error.value != error.value  # NaN
    message = str(error)
    assert "\n" not in message
    assert message.startswith("divergence at step 9: loss is nan (game pong, seed 0, frame 512)")
    kept = f"last good checkpoint kept: {tmp_path.absolute()}/checkpoints/384 (frame 384)"
    assert message.endswith(kept)
    assert checkpoint_steps(tmp_path) == [384]
    rows = workdir_lib.read_metrics(tmp_path)
    assert [row["frames"] for row in rows if row["event"] == "train"] == [256, 384]


def test_nan_parameters_are_never_checkpointed(tmp_path, nan_params_from_block):
    """The replay flushed at the switch: no update (so no loss) between the NaN parameters
    planted at block 2 and the 512-frame checkpoint, which the parameter check refuses."""
    config = smoke(frames=384)
    config.switch.flush_replay = True
    config.checkpoint_every_frames = 128
    error = divergence_of_two_pong_blocks(config, tmp_path, nan_params_from_block)
    assert error.step == 8 and error.metric.startswith("params/")  # 8 updates, all in block 1
    assert "(sequence, seed 0, game pong)" in str(error)
    assert str(error).endswith("/checkpoints/384 (frame 384)")
    assert checkpoint_steps(tmp_path) == [256, 384]


def stop_on_call(number: int):
    """A ``should_stop`` that says True from its ``number``-th call on; counts its calls."""
    calls = []

    def should_stop() -> bool:
        calls.append(None)
        return len(calls) >= number

    return should_stop, calls


def test_should_stop_ends_a_run_after_a_checkpoint_and_relaunches_finish_it(tmp_path):
    """Asked after every iteration (8 frames) but a chunk's last, and after every checkpoint.
    Pong then Breakout, 256 frames each, then Breakout's fresh reference (Pong's is the first
    block)."""
    config = smoke(frames=256)
    config.games = ("Pong", "Breakout")
    config.evaluation.fresh_reference = True

    # 31 questions in Pong's block, one after its checkpoint, then the 8th iteration of Breakout's.
    should_stop, calls = stop_on_call(40)
    first = atari_loop.train(config, str(tmp_path), show_progress=False, should_stop=should_stop)
    assert first.preempted and not first.completed and len(calls) == 40
    assert first.done == 320 and checkpoint_steps(tmp_path) == [256, 320]
    with checkpointing.for_directory(tmp_path / "checkpoints") as checkpointer:
        saved = checkpointer.restore_metadata(320)
    assert (saved["done"], saved["block"], saved["iteration"]) == (320, 1, 8)
    assert saved["segment_name"] == "sequence"

    # The rest of Breakout's block (23 iterations are asked about), its checkpoint at 512
    # frames, then the question after it: stop before the reference.
    should_stop, calls = stop_on_call(24)
    second = atari_loop.train(config, str(tmp_path), show_progress=False, should_stop=should_stop)
    assert second.preempted and not second.completed and len(calls) == 24
    assert second.done == 512 and checkpoint_steps(tmp_path)[-2:] == [320, 512]

    third = atari_loop.train(config, str(tmp_path), show_progress=False, should_stop=lambda: False)
    assert third.completed and not third.preempted
    rows = workdir_lib.read_metrics(tmp_path)
    # Resumed in Breakout's block, then at the start of its reference (frames of that segment;
    # the whole run's in run_frames).
    resumes = [(row["frames"], row["run_frames"]) for row in rows if row["event"] == "resume"]
    assert resumes == [(320, 320), (0, 512)]
    # A stop writes the 'train' row of the updates since the last one (checked for NaN/Inf).
    assert [row["frames"] for row in rows if row["event"] == "train"] == [256, 320, 512]
    assert [row["game"] for row in rows if row["event"] == "eval_fresh"] == ["pong", "breakout"]
    matrix = json.loads((tmp_path / EVALUATION_MATRIX_FILE).read_text())
    assert set(matrix["fresh"]) == {"pong", "breakout"}


# The launcher, run as a user runs it -------------------------------------------------------


def launch(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.train_atari", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_the_launcher_exits_3_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    """A learning rate of 1e12 overflows the loss within the first updates (from 128 frames);
    the checkpoint taken at 128 frames, before learning, stays the newest."""
    path = tmp_path / "run"
    process = launch(
        *TINY_DQN,
        f"--workdir={path}",
        "--frames_per_game=512",
        "--config.checkpoint_every_frames=128",
        "--config.optimizer.learning_rate=1e12",
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == divergence.DIVERGENCE_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr and "complete" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("train_atari:")]
    match = re.fullmatch(
        r"train_atari: error: divergence at step (\d+): loss is (nan|inf|-inf) "
        r"\(game pong, seed 0, frame (\d+)\); last good checkpoint kept: (.+)/(\d+) \(.+\)",
        line,
    )
    assert match, line
    step, frame, kept = int(match[1]), int(match[3]), int(match[5])
    assert 1 <= step <= 8 and frame == 256  # updates made by the 256-frame row: 8
    assert kept == 128 and checkpoint_steps(path) == [128]
    rows = workdir_lib.read_metrics(path)
    assert [row["frames"] for row in rows if row["event"] == "train"] == [128]


def test_sigterm_stops_the_launcher_after_a_checkpoint_with_status_0(tmp_path):
    path = tmp_path / "run"
    process = launch(*TINY_DQN, f"--workdir={path}", "--frames_per_game=80000")
    deadline = time.monotonic() + 120
    while not (path / workdir_lib.CONFIG_FILE).exists():  # the run has started, guard installed
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    acknowledged, line = [line for line in stderr.splitlines() if line.startswith("train_atari:")]
    assert acknowledged.startswith("train_atari: SIGTERM received: stopping after the next")
    assert line.startswith("train_atari: stopped by SIGTERM after a checkpoint at frame ")
    (step,) = checkpoint_steps(path)
    assert 0 < step < 80_000 and step % 8 == 0
    with checkpointing.for_directory(path / "checkpoints") as checkpointer:
        assert checkpointer.restore_metadata(step)["done"] == step
