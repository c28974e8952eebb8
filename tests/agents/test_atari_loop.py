"""The Atari actor-learner loop: work dir, resume, seeds, game blocks, the prioritized switch."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agents import atari_loop, atari_scores, configs, sequence
from agents.atari_env import resolve_game
from agents.replay import replay_update_priorities
from plasticity import workdir as workdir_lib
from plasticity import checkpointing

FRAMES = 1024  # 2 envs x 4 frames per step: 128 loop iterations; learning starts after 256 frames
LEARNING_START_FRAMES = 256


def smoke(seed: int = 0, frames: int = FRAMES) -> ml_collections.ConfigDict:
    config = configs.smoke_config("dqn")
    config.games = ("Pong",)
    config.seed = seed
    config.frames_per_game = frames
    config.evaluation.update(dict(every_frames=512, episodes=2, max_frames=160))
    config.log_every_frames = 256
    config.checkpoint_every_frames = 512
    config.diagnostics.update(dict(every_frames=512, names=("weight_norm", "update_ratio")))
    return config


@pytest.fixture(scope="module", autouse=True)
def fast_compiling_random_numbers():
    """Threefry's partitionable mode multiplies XLA:CPU compile times of multi-axis random draws
    (e.g. conv kernel inits) by ~10; these tests do not depend on which stream is drawn."""
    with jax.threefry_partitionable(False):
        yield


@pytest.fixture(scope="module")
def interrupted_and_resumed(tmp_path_factory):
    """A run stopped at 512 frames (as by preemption), relaunched on its work dir to the end."""
    path = tmp_path_factory.mktemp("run")
    first = atari_loop.train(smoke(), str(path), show_progress=False, stop_after_checkpoints=1)
    second = atari_loop.train(smoke(), str(path), show_progress=False)
    return path, first, second


def state_of(result):
    return result.outputs["state"]


def test_the_work_dir_holds_config_metrics_events_and_checkpoints(interrupted_and_resumed):
    path, first, second = interrupted_and_resumed
    assert first.done == 512 and not first.completed and first.stopped
    assert second.done == FRAMES and second.completed and second.resumed_from == 512
    saved = json.loads((path / "config.json").read_text())
    assert saved["agent"] == "dqn" and saved["schedule"] == [
        {"game": "pong", "frames": FRAMES, "visit": 1, "index": 0, "cycle": 1}
    ]
    assert list(path.glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (path / "checkpoints").iterdir()) == [512, 1024]
    rows = workdir_lib.read_metrics(path)
    every_row = ("event", "step", "frames", "agent_steps", "updates", "game", "block", "visit")
    for row in rows:
        for key in every_row + ("cycle", "seed"):
            assert key in row, (key, row)
        assert row["game"] == "pong" and row["agent_steps"] * 4 == row["frames"]
    evals = [row for row in rows if row["event"] == "eval"]
    assert [row["frames"] for row in evals] == [512, 1024]
    assert [row["end_of_block"] for row in evals] == [False, True]  # progress, then the matrix
    assert all(row["trained_game"] == "pong" for row in evals)
    assert all("human_normalized" in row and "return_mean" in row for row in evals)
    train_rows = [row for row in rows if row["event"] == "train"]
    assert [row["frames"] for row in train_rows] == [256, 512, 768, 1024]  # none repeated
    assert [row["event"] for row in rows].count("resume") == 1
    assert np.isfinite(train_rows[-1]["loss"]) and train_rows[-1]["updates"] > 0
    diagnostics = [row for row in rows if row["event"] == "diagnostics"]
    assert [row["frames"] for row in diagnostics] == [512, 1024]
    assert all(row["weight_norm/torso/conv_0"] > 0 for row in diagnostics)
    assert all(row["update_ratio"] > 0 for row in diagnostics)  # of the last update


def test_resume_restores_counters_and_the_learner(interrupted_and_resumed):
    path, first, second = interrupted_and_resumed
    # The replay ratio: one update per 16 frames once learning has started.
    assert int(state_of(second).train_state.step) == (FRAMES - LEARNING_START_FRAMES) // 16
    with checkpointing.for_directory(path / "checkpoints") as checkpointer:
        metadata = checkpointer.restore_metadata(512)
    assert metadata["done"] == 512 and metadata["iteration"] == 64  # 512 frames / 8 a step
    assert metadata["loop"]["episodes"] >= 0
    train_rows = [r for r in workdir_lib.read_metrics(path) if r["event"] == "train"]
    assert train_rows[1]["frames"] == 512
    assert train_rows[1]["updates"] == (512 - LEARNING_START_FRAMES) // 16
    resume_row = next(row for row in workdir_lib.read_metrics(path) if row["event"] == "resume")
    assert resume_row["frames"] == 512 and resume_row["iteration"] == 64


def test_a_different_config_on_the_same_work_dir_is_refused(interrupted_and_resumed):
    path, _, _ = interrupted_and_resumed
    config = smoke()
    config.learner.discount = 0.5
    with pytest.raises(ValueError, match="learner.discount"):
        atari_loop.train(config, str(path), show_progress=False)


def test_seeds_are_honoured():
    """Same seed: bit-identical parameters and evaluation returns; another seed: different ones."""
    runs = [atari_loop.train(smoke(seed, frames=512), show_progress=False) for seed in (0, 0, 1)]
    leaves = [jax.tree.leaves(state_of(run).train_state.params) for run in runs]
    for a, b in zip(leaves[0], leaves[1]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(leaves[0], leaves[2]))
    evaluations = [run.outputs["evaluations"][-1] for run in runs]
    assert evaluations[0]["eval_frames"] == evaluations[1]["eval_frames"]
    replay_frames = [np.asarray(state_of(run).replay.frames) for run in runs]
    np.testing.assert_array_equal(replay_frames[0], replay_frames[1])
    assert not np.array_equal(replay_frames[0], replay_frames[2])


@pytest.mark.parametrize("prioritized", [False, True])
def test_the_prioritized_switch_of_the_agent_config_reaches_the_compiled_learn_step(prioritized):
    """One slot gets a priority 10^6 times the others': only prioritized sampling favours it. A
    uniform agent's replay keeps no priorities at all (nothing to plant, nothing updated)."""
    config = smoke()  # the loop's shapes (2 envs), so the uniform case reuses the compiled step
    config.replay.prioritized = prioritized
    compiled = atari_loop.compile_agent(config, 6)
    state = atari_loop.init_agent_state(config, compiled, 2, seed=0)
    replay = state.replay
    for t in range(20):
        replay = compiled.add(
            replay,
            jnp.full((2, 84, 84), t, jnp.uint8),
            jnp.zeros(2, jnp.int32),
            jnp.ones(2),
            jnp.ones(2),
            jnp.full(2, t == 0),
            jnp.zeros(2, bool),
        )
    heavy = 7  # env 0, slot 7
    assert replay.keeps_priorities == prioritized
    set_priority = jax.jit(replay_update_priorities)
    hits = draws = 0
    for seed in range(3):
        if prioritized:
            skewed = set_priority(replay, jnp.array([heavy]), jnp.array([1e6]))
        else:
            skewed = replay
        skewed = jax.tree.map(jnp.copy, skewed)  # the learn step donates the replay
        priorities_before = np.asarray(skewed.priority).copy()
        train_state = jax.tree.map(jnp.copy, state.train_state)  # ... and the train state
        key = jax.device_put(jax.random.key(seed), jax.devices()[0])  # committed, as in the loop
        _, after, _, aux = compiled.learn(train_state, skewed, key, 0.5)
        indices = np.asarray(aux["per_example"]["indices"])
        hits, draws = hits + np.sum(indices == heavy), draws + indices.size
        if prioritized:
            np.testing.assert_allclose(
                np.asarray(after.priority).reshape(-1)[indices],
                aux["per_example"]["priorities"],
                rtol=1e-6,
            )
        else:
            np.testing.assert_array_equal(after.priority, priorities_before)
            np.testing.assert_array_equal(aux["per_example"]["weights"], 1.0)
    if prioritized:
        assert hits / draws > 0.9
    else:
        assert hits / draws < 0.15  # uniform over 38 valid slots: about 0.026


def test_game_blocks_visits_and_the_action_set():
    config = configs.smoke_config("dqn")
    config.games, config.cycles = ("Pong", "ALE/Breakout-v5", "pong"), 2
    blocks = atari_loop.make_blocks(config)
    assert [(b.game, b.visit) for b in blocks] == [
        ("pong", 1),
        ("breakout", 1),
        ("pong", 2),
        ("pong", 3),
        ("breakout", 2),
        ("pong", 4),
    ]
    full = lambda blocks: sequence.plan_segments(config, blocks)[0].config.env.full_action_space
    assert full(blocks) and not full(blocks[:1])
    config.env.full_action_space = True
    assert full(blocks[:1])
    with pytest.raises(ValueError, match="close matches: pong"):
        resolve_game("Pongg")


def test_games_with_other_action_sets_are_refused_before_a_run_starts():
    """With their minimal action sets, a sequence's games must share one: refused at planning
    (not after the first block trained), even where the counts agree (9 and 9 actions)."""
    config = configs.smoke_config("dqn")
    config.env.full_action_space = False
    for games, expected in (
        (("Pong", "Breakout"), "pong and breakout have different action sets (6: NOOP, FIRE,"),
        (("Enduro", "MsPacman"), "enduro and ms_pacman have different action sets (9: NOOP,"),
    ):
        config.games = games
        with pytest.raises(ValueError, match=re.escape(expected)) as error:
            atari_loop.plan_run(config)
        assert "set env.full_action_space=True" in str(error.value)
    config.games = ("Pong", "pong")
    atari_loop.plan_run(config)  # one game twice: one action set
    config.games, config.env.full_action_space = ("Enduro", "MsPacman"), None
    atari_loop.plan_run(config)  # left unset, a sequence of several games plays the full set


def test_bad_budgets_fail_with_one_line_errors():
    config = smoke()
    config.frames_per_game = 1001
    with pytest.raises(ValueError, match="multiple of env.num_envs x env.frame_skip = 8"):
        atari_loop.train(config, show_progress=False)
    config.frames_per_game = 64  # shorter than the replay's fill: learning would never start
    with pytest.raises(ValueError, match="learning never starts"):
        atari_loop.train(config, show_progress=False)


def test_only_returns_of_uncut_episodes_are_human_normalized():
    # Pong: random -20.7, human 14.6. A random policy scores about -2 in a 400-frame episode,
    # which the table would call halfway to human play.
    def result(cap: int, returns=(-2.0, -2.0)) -> atari_scores.EvalResult:
        return atari_scores.EvalResult("pong", list(returns), frames=800, max_episode_frames=cap)

    assert result(400).human_normalized is None
    assert result(107_999).human_normalized is None
    assert result(108_000).human_normalized == pytest.approx((-2.0 + 20.7) / (14.6 + 20.7))
    assert result(1_000_000).human_normalized == pytest.approx(result(108_000).human_normalized)
    assert result(400).mean_return == -2.0  # the raw return is still reported
    assert result(108_000, returns=()).human_normalized is None  # no episode finished
    unknown = atari_scores.EvalResult("tetris", [5.0], frames=800, max_episode_frames=108_000)
    assert unknown.human_normalized is None  # no reference scores for the game


def test_evaluation_envs_each_get_a_longest_episode_of_the_frame_budget():
    """Evaluation envs play at once and share `max_frames`: with 4 envs, a 320-frame budget and
    160-frame episodes, each env's share (80 frames) ended before any episode did and nothing
    was counted. Two envs fit, and envs done with their quota spend none of the budget."""
    config = smoke()
    config.env.max_episode_frames = 160
    config.evaluation.update(dict(episodes=4, max_frames=320, num_envs=4))
    assert configs.evaluation_num_envs(config) == 2
    config.evaluation.max_frames = 10_000
    assert configs.evaluation_num_envs(config) == 4  # capped by the episodes
    config.evaluation.update(dict(max_frames=100, num_envs=None))
    assert configs.evaluation_num_envs(config) == 1  # never fewer than one
    config.evaluation.max_frames = 320
    compiled = atari_loop.compile_agent(config, 6)
    state = atari_loop.init_agent_state(config, compiled, 2, seed=0)
    result = atari_loop.evaluate(compiled, state.train_state, config, "pong", 0, False)
    assert len(result.returns) == 2 and result.frames == 320  # two capped episodes, one per env
