"""What the RL progress bar shows of a chunk's rows, and what the driver says of a run."""

import math

import numpy as np
import pytest

from agents import configs, sequence
from agents.driver import (
    latest_return,
    shown_return,
    summary_lines,
    tensorboard_prefix,
    train_segments,
)
from plasticity.divergence import DivergenceError
from plasticity.run import Run


def row(seed: int, value: float, event: str = "train") -> dict:
    return {"event": event, "seed": seed, "return_mean": value}


def test_the_last_return_is_each_seeds_last_finite_return_averaged():
    """A chunk logs rows seed by seed, several a seed: seed 0's last return is 3.0, seed 1's
    0.0 (its later row ended no episode), seed 2 ended none; the mean is 1.5, not the mean of
    the chunk's last rows (1.0, nan)."""
    rows = [
        row(0, 1.0),
        row(0, 3.0),
        row(1, 0.0),
        row(1, math.nan),
        {"event": "diagnostics", "seed": 1, "return_mean": 9.0},
        row(2, math.nan),
        row(2, math.nan),
    ]
    assert latest_return(rows) == 1.5
    assert latest_return([row(0, math.nan)]) is None
    assert shown_return(latest_return([])) == "—"


def test_a_finished_runs_summary_reads_only_end_of_block_evaluations():
    """The lines a finished run prints: visit_k is the score after the game's k-th block, as in
    evaluation_matrix.json; an evaluation during the block (same game, same visit, no
    end_of_block) does not enter it."""
    rows = [
        {"event": "eval", "game": "pong", "trained_game": "pong", "visit": 1, "seed": 0,
         "return_mean": -21.0, "end_of_block": False},
        {"event": "eval", "game": "pong", "trained_game": "pong", "visit": 1, "seed": 0,
         "return_mean": -5.0, "end_of_block": True},
    ]  # fmt: skip
    assert summary_lines(rows, "return_mean") == ["pong: visit_1 -5.00 (return_mean, seed 0)"]


def test_a_summary_of_two_seeds_says_it_is_their_mean():
    """Rows of seeds 0 and 1 give each game one line of their means, marked as the mean over 2
    seeds (a single seed's line names the seed)."""
    cell = {"event": "eval", "game": "pong", "trained_game": "pong", "end_of_block": True}
    rows = [
        {**cell, "visit": 1, "seed": 0, "return_mean": -5.0},
        {**cell, "visit": 1, "seed": 1, "return_mean": -3.0},
        {**cell, "visit": 2, "seed": 0, "return_mean": 1.0},
        {**cell, "visit": 2, "seed": 1, "return_mean": 2.0},
        {"event": "eval_fresh", "game": "pong", "seed": 0, "return_mean": -1.0},
        {"event": "eval_fresh", "game": "pong", "seed": 1, "return_mean": 0.0},
    ]
    assert summary_lines(rows, "return_mean") == [
        "pong: visit_1 -4.00, visit_2 1.50, fresh -0.50 (return_mean, mean over 2 seeds)"
    ]


def test_evaluation_rows_are_tagged_by_their_game_in_tensorboard():
    """'eval' and 'eval_fresh' rows of several games share their frames, so their TensorBoard
    tags start with the game; other rows (one game at a time) have no prefix."""
    assert tensorboard_prefix({"event": "eval_fresh", "game": "pong"}) == "pong"
    assert tensorboard_prefix({"event": "eval", "game": "breakout"}) == "breakout"
    assert tensorboard_prefix({"event": "train", "game": "pong"}) == ""
    assert tensorboard_prefix({"event": "switch", "game": "pong"}) == ""


class _DivergingLoop:
    """A `driver.Loop` that plays nothing: its state is the iteration reached, and its
    parameters turn NaN once ``nan_from`` iterations are played."""

    matrix_keys = ("return_mean",)
    seeds = (0,)

    def __init__(self, nan_from: int):
        self.nan_from = nan_from

    def init(self, segment):
        return 0

    def start_block(self, run, state, segment, block, resumed):
        return state, []

    def run_chunk(self, run, state, segment, block, start, stop, log):
        return stop, stop

    def evaluate(self, run, state, segment, block):
        return []

    def params(self, state):
        return {"w": np.full((2,), np.nan if state >= self.nan_from else 0.0, np.float32)}

    def metadata(self):
        return {}

    def where(self, segment, block):
        return f"{segment.name}, seed 0, {segment.blocks[block].game}"

    def end_block(self):
        pass


def test_a_diverged_checkpoint_names_the_update_count_it_was_caught_at():
    """Chunks of 64 iterations (128 frames, 2 envs); learning starts at iteration 31 with one
    update an iteration, so when NaN parameters reach the save after iteration 192 the learner
    has made 192 - 31 = 161 updates: the error names step 161 (not the frames, 384, nor the
    next iteration's count) and where the run was."""
    config = configs.smoke_config("dqn", "minatar")
    config.updates_per_frame = 0.5
    (segment,) = sequence.plan_segments(config, sequence.make_schedule(["breakout"], 512))
    assert segment.plan.first_learning == (31,) and segment.frames_per_iteration == 2
    with Run("test", None, {}, total=512, unit="frame", x_key="frames", show_progress=False) as run:
        with pytest.raises(DivergenceError) as caught:
            train_segments(run, [segment], _DivergingLoop(nan_from=192), chunk_frames=128)
    assert caught.value.step == 161
    assert str(caught.value).startswith(
        "divergence at step 161: params/w is nan (sequence, seed 0, breakout)"
    )
