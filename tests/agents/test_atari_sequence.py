"""Atari game sequences: exact switch frames, switch policies, the evaluation matrix, resume.

A tiny DQN run (the smoke network, 2 envs, 256 frames a game, episodes cut at 160 frames so that
evaluations finish): Pong, Breakout, Pong, Breakout with every switch policy on, the fresh
references and a preemption in the middle of the second game. A ``block_start`` hook records what
the learner and the replay look like right after each switch. The policies switched off (replay,
moments and schedule kept) are run from the command line in tests/scripts/test_train_atari.py.
"""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest

from agents import atari_loop, configs, sequence
from agents.replay import replay_num_valid
from plasticity import analysis
from plasticity import workdir as workdir_lib
from plasticity.train_state import map_optimizer_moments
from scripts.train_atari import with_sequence_fields

FRAMES = 256  # per game: 32 loop iterations of 2 envs x 4 frames
# Learning starts in the iteration whose add brings the replay to 32 items (a batch): the 16th,
# so 17 of a game's 32 iterations (136 frames) are learning frames when it starts empty.
LEARNING_FRAMES_FROM_EMPTY = FRAMES - 15 * 8
STOP_AT = FRAMES + 128  # the preemption: in the middle of the second game
WARMUP = 4
INIT_LR = 1e-8
GAMES = ("pong", "breakout")


def tiny(switch: bool, fresh_reference: bool = False) -> ml_collections.ConfigDict:
    config = with_sequence_fields(configs.smoke_config("dqn"))
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


def moments_norm(train_state) -> float:
    norms = []
    map_optimizer_moments(
        train_state.opt_state,
        train_state.params,
        lambda tree: norms.append(
            float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(tree)))
        ),
    )
    assert norms, "the optimizer state holds no moments"
    return sum(norms)


class Recorder:
    """A ``block_start`` hook: what the state looks like when each block starts."""

    def __init__(self):
        self.seen: list[dict] = []

    def __call__(self, state, block, counters):
        self.seen.append(
            dict(
                block=block.index,
                game=block.game,
                frames=counters.frames,
                replay_size=int(state.replay.size),
                replay_valid=int(replay_num_valid(state.replay)),
                replay_items=counters.replay_items,
                moments=moments_norm(state.train_state),
                step=int(state.train_state.step),
            )
        )
        return state


@pytest.fixture(scope="module")
def switching(tmp_path_factory):
    """Every policy on, fresh references; stopped at STOP_AT frames and relaunched."""
    path = tmp_path_factory.mktemp("sequence")
    config = tiny(switch=True, fresh_reference=True)
    blocks = atari_loop.make_game_blocks(["Pong", "Breakout"], FRAMES, cycles=2)
    before, after = Recorder(), Recorder()
    first = atari_loop.train_sequence(
        config, blocks, str(path), show_progress=False, stop_at_frames=STOP_AT, block_start=before
    )
    second = atari_loop.train_sequence(
        config, blocks, str(path), show_progress=False, block_start=after
    )
    return dict(
        path=path,
        config=config,
        blocks=blocks,
        first=first,
        second=second,
        seen=before.seen + after.seen,
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
    assert [seen["frames"] for seen in switching["seen"]] == [0, FRAMES, 2 * FRAMES, 3 * FRAMES]
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
    assert switching["second"].run.counters.frames == 4 * FRAMES
    saved = json.loads((switching["path"] / "config.json").read_text())
    assert saved["env"]["full_action_space"] is True  # one 18-action head for every game
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
    returned = switching["second"].fresh
    assert {game: row["return_mean"] for game, row in returned.items()} == {
        row["game"]: row["return_mean"] for row in fresh
    }
    for game in GAMES:  # resumable runs of their own
        assert (path / "fresh" / game / "checkpoints" / str(FRAMES)).is_dir()

    saved = json.loads((path / atari_loop.EVALUATION_MATRIX_FILE).read_text())
    assert saved == switching["second"].matrix
    assert saved["games"] == list(GAMES) and len(saved["blocks"]) == 4
    grid = saved["return_mean"]
    assert np.shape(grid) == (4, 2) and grid[0][1] is None  # Breakout not seen after block 0
    for r in matrix_rows:
        assert grid[r["block"]][GAMES.index(r["game"])] == r["return_mean"]
        assert saved["human_normalized"][r["block"]][GAMES.index(r["game"])] == pytest.approx(
            r["human_normalized"]
        )
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
    assert saved["fresh"]["pong"]["human_normalized"] == saved["human_normalized"][0][0]
    reference_rows = of(workdir_lib.read_metrics(path / "fresh" / "pong"), "train")
    first_block = [row for row in of(rows, "train") if row["frames"] <= FRAMES]
    assert [(r["frames"], r["updates"]) for r in reference_rows] == [(128, 0), (FRAMES, 8)]
    assert [r.get("loss") for r in reference_rows] == [r.get("loss") for r in first_block]

    # What the diagnostics notebook draws from the same work dir.
    run = analysis.load_run(path)
    key = analysis.matrix_key(run)
    assert key == "human_normalized"
    games, blocks, heat = analysis.evaluation_matrix(run, key=key)
    assert games == list(GAMES) and blocks == [0, 1, 2, 3]
    expected = np.array(saved[key], dtype=float)  # None -> nan
    np.testing.assert_allclose(heat, expected)
    assert analysis.visit_scores(run, key="return_mean") == saved["visit_scores"]
    assert analysis.save_figure([run], "evaluation_matrix", path / "figures") is not None


def test_switch_policies_flush_the_replay_reset_moments_and_restart_the_schedule(switching):
    config, blocks = switching["config"], switching["blocks"]
    after_switch = [seen for seen in switching["seen"] if seen["block"] > 0]
    for seen in after_switch:
        assert seen["replay_size"] == 0 and seen["replay_valid"] == 0, seen
        assert seen["replay_items"] == 0 and seen["moments"] == 0.0, seen
    # Learning waits for the flushed replay to refill in every game (one update per 16 frames).
    starts, total = atari_loop.planned_block_updates(config, blocks, flush_at_switch=True)
    assert starts == [k * LEARNING_FRAMES_FROM_EMPTY // 16 for k in range(4)] == [0, 8, 17, 25]
    assert total == 4 * LEARNING_FRAMES_FROM_EMPTY // 16
    assert [seen["step"] for seen in switching["seen"]] == starts
    assert switching["second"].run.counters.updates == total
    # The schedule restarts at every switch: the next update warms up from init_value again.
    switches = of(switching["rows"], "switch")
    assert [row["updates"] for row in switches] == starts[1:]
    assert all(row["learning_rate"] == pytest.approx(INIT_LR) for row in switches)
    assert all(row["flush_replay"] and row["reset_optimizer"] for row in switches)
    assert all(row["replay_items"] == 0 and row["optimizer_moments_norm"] == 0 for row in switches)
    schedule = atari_loop.learning_config(config, blocks).optimizer.schedule
    assert schedule.name == "cosine_restarts" and tuple(schedule.boundaries) == tuple(starts[1:])
    train_rates = [
        row["learning_rate"] for row in of(switching["rows"], "train") if "learning_rate" in row
    ]
    assert max(train_rates) <= config.optimizer.learning_rate * (1 + 1e-6)


def test_a_preempted_sequence_resumes_in_the_block_it_stopped_in(switching):
    first, second, rows = switching["first"], switching["second"], switching["rows"]
    assert first.run.counters.frames == STOP_AT and first.run.counters.block == 1
    assert first.fresh == {}  # references wait for the sequence to finish
    (resume,) = of(rows, "resume")
    assert (resume["frames"], resume["block"], resume["game"]) == (STOP_AT, 1, "breakout")
    # The resumed block was not switched into again; the next hook call is the next block's.
    assert len(of(rows, "switch")) == 3
    assert [seen["block"] for seen in switching["seen"]] == [0, 1, 2, 3]
    frames = [row["frames"] for row in of(rows, "train")]
    assert frames == sorted(set(frames))  # no row repeated after the resume


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("capacity", [64, 512])
def test_planned_block_updates_agree_with_the_learning_plan(flush, capacity):
    config = tiny(switch=False)
    config.replay.capacity = capacity
    blocks = atari_loop.make_game_blocks(["Pong", "Breakout", "Pong"], 96, cycles=2)
    starts, total = atari_loop.planned_block_updates(config, blocks, flush)
    plan = sequence.plan_learning(
        [block.frames // 8 for block in blocks],
        items_per_iteration=2,
        frames_per_iteration=8,
        learning_starts=atari_loop.learning_starts(config),
        capacity=capacity,
        updates_per_frame=config.updates_per_frame,
        flush_at_switch=flush,
    )
    assert starts == plan.block_start_updates.tolist() and total == plan.total_updates
