"""What the RL progress bar shows of a chunk's rows."""

import math

from agents.driver import latest_return, shown_return, summary_lines


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
