"""Atari game sequences: exact switch frames, switch policies, the evaluation matrix, resume.

A tiny DQN run (the smoke network, 2 envs, 256 frames a game, episodes cut at 160 frames so that
evaluations finish): Pong, Breakout, Pong, Breakout with every switch policy on, the fresh
references and a preemption in the middle of the second game. The 'switch' rows record what the
learner and the replay look like right after each switch. The policies switched off (replay,
moments and schedule kept) run from the command line in tests/scripts/test_rl_launchers.py.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from agents import atari_loop, configs, sequence
from agents.evaluation_matrix import EVALUATION_MATRIX_FILE
from benchmarks import analysis as figures
from plasticity import analysis
from plasticity import workdir as workdir_lib

FRAMES = 256  # per game: 32 loop iterations of 2 envs x 4 frames
# Learning starts in the iteration whose add brings the replay to 32 items (a batch): the 16th,
# so 17 of a game's 32 iterations (136 frames) are learning frames when it starts empty.
LEARNING_FRAMES_FROM_EMPTY = FRAMES - 15 * 8
STOP_AT = FRAMES + 128  # the preemption: in the middle of the second game (3rd checkpoint)
WARMUP = 4
INIT_LR = 1e-8
GAMES = ("pong", "breakout")


def tiny(switch: bool, fresh_reference: bool = False) -> ml_collections.ConfigDict:
    config = configs.smoke_config("dqn")
    config.games, config.cycles = ("Pong", "Breakout"), 2
    config.frames_per_game = FRAMES
    config.env.max_episode_frames = 160
    config.replay.min_fill_fraction = 32 / 512
    config.evaluation.update(
        dict(every_frames=FRAMES, episodes=2, max_frames=400, fresh_reference=fresh_reference)
    )
    config.log_every_frames = 128
    config.checkpoint_every_frames = 128
    config.optimizer.schedule.update(dict(warmup_steps=WARMUP, init_value=INIT_LR))
    config.switch.update(dict(flush_replay=switch, reset_optimizer=switch, restart_schedule=switch))
    return config


@pytest.fixture(scope="module")
def switching(tmp_path_factory):
    """Every policy on, fresh references; stopped at STOP_AT frames and relaunched."""
    path = tmp_path_factory.mktemp("sequence")
    config = tiny(switch=True, fresh_reference=True)
    first = atari_loop.train(config, str(path), show_progress=False, stop_after_checkpoints=3)
    second = atari_loop.train(config, str(path), show_progress=False)
    return dict(
        path=path,
        config=config,
        blocks=atari_loop.make_blocks(config),
        first=first,
        second=second,
        rows=workdir_lib.read_metrics(path),
    )


def of(rows, event):
    return [row for row in rows if row["event"] == event]


def test_games_switch_at_exactly_the_configured_frame_counts(switching):
    rows, blocks = switching["rows"], switching["blocks"]
    assert [(b.game, b.visit, b.cycle) for b in blocks] == [
        ("pong", 1, 1),
        ("breakout", 1, 1),
        ("pong", 2, 2),
        ("breakout", 2, 2),
    ]
    switches = of(rows, "switch")
    assert [row["frames"] for row in switches] == [FRAMES, 2 * FRAMES, 3 * FRAMES]
    assert [(row["previous_game"], row["game"]) for row in switches] == [
        ("pong", "breakout"),
        ("breakout", "pong"),
        ("pong", "breakout"),
    ]
    for row in rows:
        for key in ("frames", "game", "visit", "cycle", "block", "agent_steps", "updates"):
            assert key in row, (key, row)
        if row["event"] == "train":  # written at the end of an iteration of its block
            block = blocks[(row["frames"] - 1) // FRAMES]
            assert (row["block"], row["game"], row["visit"]) == (
                block.index,
                block.game,
                block.visit,
            )
    assert [row["frames"] for row in of(rows, "train")] == list(range(128, 4 * FRAMES + 1, 128))
    assert switching["second"].completed
    saved = json.loads((switching["path"] / "config.json").read_text())
    assert [entry["game"] for entry in saved["schedule"]] == ["pong", "breakout"] * 2


def test_the_evaluation_matrix_is_written_with_visits_and_fresh_references(switching):
    path, rows = switching["path"], switching["rows"]
    matrix_rows = [row for row in of(rows, "eval") if row["end_of_block"]]
    assert [(r["block"], r["game"], r["trained_game"], r["visit"]) for r in matrix_rows] == [
        (0, "pong", "pong", 1),
        (1, "pong", "breakout", 1),
        (1, "breakout", "breakout", 1),
        (2, "pong", "pong", 2),
        (2, "breakout", "pong", 1),
        (3, "pong", "breakout", 2),
        (3, "breakout", "breakout", 2),
    ]
    assert all(r["frames"] == (r["block"] + 1) * FRAMES and r["episodes"] == 2 for r in matrix_rows)
    fresh = of(rows, "eval_fresh")
    assert [(r["game"], r["frames"], r["visit"]) for r in fresh] == [
        ("pong", FRAMES, 1),
        ("breakout", FRAMES, 1),
    ]
    saved = json.loads((path / EVALUATION_MATRIX_FILE).read_text())
    assert saved["games"] == list(GAMES) and len(saved["blocks"]) == 4
    grid = saved["return_mean"]
    assert np.shape(grid) == (4, 2) and grid[0][1] is None  # Breakout not seen after block 0
    for r in matrix_rows:
        assert grid[r["block"]][GAMES.index(r["game"])] == r["return_mean"]
    # Episodes cut at 160 frames are not on the reference table's scale: no normalized score.
    assert all(r["human_normalized"] is None for r in matrix_rows + fresh)
    assert all(cell is None for line in saved["human_normalized"] for cell in line)
    for game in GAMES:
        visits = saved["visit_scores"][game]
        assert set(visits) == {"visit_1", "visit_2", "fresh"}
        first_visit, revisit = [
            r["return_mean"] for r in matrix_rows if r["game"] == game == r["trained_game"]
        ]
        assert (visits["visit_1"], visits["visit_2"]) == (first_visit, revisit)
        assert visits["fresh"] == next(r["return_mean"] for r in fresh if r["game"] == game)
    # The first game's reference replays the sequence's first block: same network, seeds, data
    # and learning-rate segment, so the same score (a check that the reference is comparable).
    assert saved["visit_scores"]["pong"]["fresh"] == saved["visit_scores"]["pong"]["visit_1"]
    assert saved["fresh"]["pong"]["return_mean"] == saved["return_mean"][0][0]

    # What the report draws from the same work dir: raw returns, as no score is normalized.
    run = analysis.load_run(path)
    key = figures.matrix_key(run)
    assert key == "return_mean"
    games, blocks, heat = figures.evaluation_matrix(run, key=key)
    assert games == list(GAMES) and blocks == [0, 1, 2, 3]
    np.testing.assert_allclose(heat, np.array(saved[key], dtype=float))  # None -> nan
    assert figures.visit_scores(run, key="return_mean") == saved["visit_scores"]
    assert figures.save_figure([run], "evaluation_matrix", path / "figures") is not None


def test_switch_policies_flush_the_replay_reset_moments_and_restart_the_schedule(switching):
    config, blocks = switching["config"], switching["blocks"]
    # Learning waits for the flushed replay to refill in every game (one update per 16 frames).
    (segment, *_) = sequence.plan_segments(config, blocks)
    starts = list(segment.plan.block_start_updates)
    assert starts == [k * LEARNING_FRAMES_FROM_EMPTY // 16 for k in range(4)] == [0, 8, 17, 25]
    assert segment.plan.total_updates == 4 * LEARNING_FRAMES_FROM_EMPTY // 16
    final = switching["second"].outputs["state"]
    assert int(final.train_state.step) == segment.plan.total_updates
    # After each switch: an empty replay, zero moments, the schedule's warm-up value.
    switches = of(switching["rows"], "switch")
    assert [row["updates"] for row in switches] == starts[1:]
    assert all(row["learning_rate"] == pytest.approx(INIT_LR) for row in switches)
    assert all(row["flush_replay"] and row["reset_optimizer"] for row in switches)
    assert all(row["replay_items"] == 0 and row["optimizer_moments_norm"] == 0 for row in switches)
    schedule = segment.config.optimizer.schedule
    assert schedule.name == "cosine_restarts" and tuple(schedule.boundaries) == tuple(starts[1:])
    train_rates = [
        row["learning_rate"] for row in of(switching["rows"], "train") if "learning_rate" in row
    ]
    assert max(train_rates) <= config.optimizer.learning_rate * (1 + 1e-6)


def test_a_preempted_sequence_resumes_in_the_block_it_stopped_in(switching):
    first, rows = switching["first"], switching["rows"]
    assert first.done == STOP_AT and first.stopped and not first.completed
    # References come after the sequence, but for the first game's: its first block.
    early = of(rows[: rows.index(of(rows, "resume")[0])], "eval_fresh")
    assert [(r["game"], r["from_sequence_block"]) for r in early] == [("pong", 0)]
    (resume,) = of(rows, "resume")
    assert (resume["frames"], resume["block"], resume["game"]) == (STOP_AT, 1, "breakout")
    # The resumed block was not switched into again.
    assert len(of(rows, "switch")) == 3
    frames = [row["frames"] for row in of(rows, "train")]
    assert frames == sorted(set(frames))  # no row repeated after the resume
