"""Tests of the batched Atari environments (ale-py vector env) and of the reference Atari scores."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import time

import numpy as np
import pytest

from agents import atari_env, atari_scores
from agents.atari_env import Timestep, make_atari_env, resolve_game

BREAKOUT_STEPS = 400  # random play loses all 5 lives in ~150-350 agent steps
TOGGLE_STEPS = 120


def random_actions(num_actions: int, num_envs: int, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_actions, size=(steps, num_envs))


def rollout(
    env: atari_env.AtariVectorEnvironment, actions: np.ndarray, use_send_recv: bool = False
) -> list[Timestep]:
    """reset() then one step per row of `actions`; returns every timestep."""
    timesteps = [env.reset()]
    for row in actions:
        if use_send_recv:
            env.send(row)
            time.sleep(0.001)  # the emulators work while Python does something else
            timesteps.append(env.recv())
        else:
            timesteps.append(env.step(row))
    return timesteps


def stacked(timesteps: list[Timestep], field: str) -> np.ndarray:
    return np.stack([getattr(ts, field) for ts in timesteps])


@pytest.fixture(scope="module")
def breakout_runs() -> dict[bool, list[Timestep]]:
    """Breakout rollouts (2 envs, same seed and actions) with life loss ending the bootstrap or not.

    The second one is shorter: it only needs a few life losses.
    """
    actions = random_actions(4, 2, BREAKOUT_STEPS)
    runs = {}
    for life_loss_ends_bootstrap, steps in ((True, BREAKOUT_STEPS), (False, TOGGLE_STEPS)):
        with make_atari_env(
            "Breakout", 2, seed=3, life_loss_ends_bootstrap=life_loss_ends_bootstrap
        ) as env:
            assert env.num_actions == 4
            runs[life_loss_ends_bootstrap] = rollout(env, actions[:steps])
    return runs


def test_timestep_shapes_dtypes_and_reset(breakout_runs):
    first = breakout_runs[True][0]
    expected = {
        "observation": ((2, 84, 84, 4), np.uint8),
        "frame": ((2, 84, 84), np.uint8),
        "first": ((2,), np.bool_),
        "last": ((2,), np.bool_),
        "reward": ((2,), np.float32),
        "raw_reward": ((2,), np.float32),
        "discount": ((2,), np.float32),
        "life_loss": ((2,), np.bool_),
        "episode_return": ((2,), np.float32),
        "episode_frames": ((2,), np.int32),
        "lives": ((2,), np.int32),
    }
    for ts in (first, breakout_runs[True][-1]):
        for field, (shape, dtype) in expected.items():
            value = getattr(ts, field)
            assert value.shape == shape and value.dtype == dtype, field
        assert ts.observation.flags["C_CONTIGUOUS"]
    assert first.first.all() and not first.last.any()
    np.testing.assert_array_equal(first.reward, 0.0)
    np.testing.assert_array_equal(first.discount, 1.0)
    np.testing.assert_array_equal(first.lives, 5)
    np.testing.assert_array_equal(first.episode_return, 0.0)
    assert first.observation[..., -1].any(), (
        "the newest frame of a reset observation shows the screen"
    )
    assert not first.observation[..., :-1].any(), "frames before the episode start are zeros"


def test_frames_stack_and_shift(breakout_runs):
    timesteps = breakout_runs[True]
    timesteps = timesteps[:200]
    obs, frames, first = (
        stacked(timesteps, "observation"),
        stacked(timesteps, "frame"),
        stacked(timesteps, "first"),
    )
    np.testing.assert_array_equal(obs[..., -1], frames)
    continuing = ~first[1:]
    np.testing.assert_array_equal(obs[1:][continuing][..., :-1], obs[:-1][continuing][..., 1:])
    assert not np.array_equal(frames[1], frames[-1])


def test_life_loss_and_game_over_timeline(breakout_runs):
    timesteps = breakout_runs[True]
    first, last = stacked(timesteps, "first"), stacked(timesteps, "last")
    discount, lives = stacked(timesteps, "discount"), stacked(timesteps, "lives")
    life_loss, raw_reward = stacked(timesteps, "life_loss"), stacked(timesteps, "raw_reward")
    episode_return, episode_frames = (
        stacked(timesteps, "episode_return"),
        stacked(timesteps, "episode_frames"),
    )

    lost = np.zeros_like(life_loss)
    lost[1:] = (lives[1:] < lives[:-1]) & ~first[1:]
    np.testing.assert_array_equal(life_loss, lost)
    mid_episode_losses = life_loss & ~last
    assert mid_episode_losses.sum() >= 2 and last.sum() >= 1, (
        "random Breakout loses lives and games"
    )
    # A life loss cuts the bootstrap but does not end the episode.
    np.testing.assert_array_equal(discount[mid_episode_losses], 0.0)
    t, i = np.nonzero(mid_episode_losses[:-1])
    assert not first[t + 1, i].any()
    # Game over: last with discount 0, then a fresh episode.
    t, i = np.nonzero(last[:-1])
    assert len(t) >= 1
    np.testing.assert_array_equal(discount[t, i], 0.0)
    np.testing.assert_array_equal(lives[t, i], 0)
    assert first[t + 1, i].all()
    np.testing.assert_array_equal(raw_reward[t + 1, i], 0.0)
    np.testing.assert_array_equal(discount[t + 1, i], 1.0)
    np.testing.assert_array_equal(lives[t + 1, i], 5)
    # `first` exactly follows `last`; discount is 1 everywhere else.
    np.testing.assert_array_equal(first[1:], last[:-1])
    np.testing.assert_array_equal(discount, np.where(life_loss | last, 0.0, 1.0))
    # Episode returns and frame counts, recomputed from the per-step rewards.
    for env in range(2):
        running, frames_prev = 0.0, None
        for step in range(len(timesteps)):
            running = 0.0 if first[step, env] else running + raw_reward[step, env]
            assert episode_return[step, env] == pytest.approx(running)
            if not first[step, env]:  # 4 frames a step; fewer when the game ends within one
                advance = episode_frames[step, env] - frames_prev
                assert advance == 4 or (last[step, env] and 1 <= advance <= 4)
            frames_prev = episode_frames[step, env]


def test_life_loss_bootstrap_toggle(breakout_runs):
    on, off = breakout_runs[True][: TOGGLE_STEPS + 1], breakout_runs[False]
    assert stacked(on, "life_loss").sum() >= 2
    np.testing.assert_array_equal(stacked(on, "frame"), stacked(off, "frame"))
    life_loss, last = stacked(on, "life_loss"), stacked(on, "last")
    np.testing.assert_array_equal(stacked(off, "discount"), np.where(last, 0.0, 1.0))
    np.testing.assert_array_equal(stacked(on, "discount"), np.where(last | life_loss, 0.0, 1.0))


def test_reward_clipping_keeps_raw_rewards():
    actions = random_actions(6, 1, 80)
    with make_atari_env("SpaceInvaders", 1, seed=0) as env:
        clipped = rollout(env, actions)
    with make_atari_env("SpaceInvaders", 1, seed=0, reward_clip=False) as env:
        unclipped = rollout(env, actions)
    raw = stacked(clipped, "raw_reward")
    assert raw.max() > 1.0, "Space Invaders scores 5-30 points per alien"
    np.testing.assert_array_equal(stacked(clipped, "reward"), np.clip(raw, -1.0, 1.0))
    np.testing.assert_array_equal(stacked(unclipped, "reward"), raw)
    np.testing.assert_array_equal(stacked(unclipped, "raw_reward"), raw)
    assert clipped[-1].episode_return[0] == raw.sum()


def test_truncation_keeps_discount_one_and_ignores_the_action_at_last():
    with make_atari_env("Pong", 1, seed=0, max_episode_frames=40) as env:
        actions = random_actions(env.num_actions, 1, 25)
        timesteps = rollout(env, actions)
        other_actions = actions.copy()
        other_actions[10] = (
            actions[10] + 1
        ) % env.num_actions  # the action taken at the `last` timestep
        replayed = [env.reset(seed=0)] + [env.step(row) for row in other_actions]
    last, first = stacked(timesteps, "last"), stacked(timesteps, "first")
    # 40 frames = 10 agent steps of 4 frames; then a reset step; then 10 more.
    expected_last = np.zeros(26, bool)
    expected_last[[10, 21]] = True
    np.testing.assert_array_equal(last[:, 0], expected_last)
    np.testing.assert_array_equal(first[[0, 11, 22]], True)
    np.testing.assert_array_equal(stacked(timesteps, "discount"), 1.0)
    np.testing.assert_array_equal(stacked(timesteps, "frame"), stacked(replayed, "frame"))


def test_no_op_starts():
    with make_atari_env("Pong", 1, seed=1, noop_max=0) as env:
        np.testing.assert_array_equal(env.reset().episode_frames, 0)
    with make_atari_env("Pong", 3, seed=1, noop_max=30) as env:
        noops = env.reset().episode_frames
    assert (noops >= 0).all() and (noops <= 30).all() and len(set(noops.tolist())) > 1


@pytest.mark.parametrize("game", ["Pong", "MsPacman", "Skiing"])
def test_full_action_space_has_18_actions(game):
    with make_atari_env(game, 1, seed=0, full_action_space=True) as env:
        assert env.num_actions == 18 and env.action_names == atari_env.FULL_ACTION_NAMES
        env.reset()
        env.step(np.array([17]))  # DOWNLEFTFIRE is accepted even where the game has no fire button


def test_full_action_lookup_drops_fire_where_missing():
    nine = ("NOOP", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT")
    lookup = atari_env.full_action_lookup(nine)
    assert [nine[i] for i in lookup] == [
        n.replace("FIRE", "") or "NOOP" for n in atari_env.FULL_ACTION_NAMES
    ]
    np.testing.assert_array_equal(
        atari_env.full_action_lookup(atari_env.FULL_ACTION_NAMES), np.arange(18)
    )


def test_sticky_actions_are_applied():
    """With repeat probability 1 the emulator never leaves its first action: actions stop mattering."""
    frames = []
    for actions_seed in (0, 1):
        with make_atari_env("Breakout", 1, seed=0, sticky_action_prob=1.0) as env:
            frames.append(stacked(rollout(env, random_actions(4, 1, 40, actions_seed)), "frame"))
    np.testing.assert_array_equal(frames[0], frames[1])
    with make_atari_env("Breakout", 1, seed=0) as env:
        unsticky = stacked(rollout(env, random_actions(4, 1, 40, 0)), "frame")
    assert not np.array_equal(unsticky, frames[0])


def test_seeds_are_honoured_and_async_matches_sync():
    actions = random_actions(4, 2, 60)
    with make_atari_env("Breakout", 2, seed=7) as env:
        sync_a = rollout(env, actions)
        again = [env.reset(seed=7)] + [env.step(row) for row in actions]
        fresh = rollout(env, actions)  # a later reset() without a seed draws new emulator seeds
    with make_atari_env("Breakout", 2, seed=7) as env:
        async_b = rollout(env, actions, use_send_recv=True)
    with make_atari_env("Breakout", 1, seed=8) as env:
        other = rollout(env, actions[:, :1])
    for field in Timestep._fields:
        np.testing.assert_array_equal(
            stacked(sync_a, field), stacked(async_b, field), err_msg=field
        )
        np.testing.assert_array_equal(stacked(sync_a, field), stacked(again, field), err_msg=field)
    np.testing.assert_array_equal(sync_a[0].observation, async_b[0].observation)
    assert not np.array_equal(stacked(sync_a, "frame")[:, :1], stacked(other, "frame"))
    assert not np.array_equal(stacked(sync_a, "frame"), stacked(fresh, "frame"))
    # Emulators within a batch are seeded differently.
    assert not np.array_equal(stacked(sync_a, "frame")[:, 0], stacked(sync_a, "frame")[:, 1])


def test_derived_seeds_differ_across_seeds_and_resets():
    seeds = [atari_env.derive_env_seeds(s, r, 4) for s in (0, 1) for r in (0, 1)]
    flat = np.concatenate(seeds)
    assert len(set(flat.tolist())) == flat.size
    assert (flat >= 0).all() and (flat < 2**31).all()
    np.testing.assert_array_equal(
        atari_env.derive_env_seeds(5, 0, 4), atari_env.derive_env_seeds(5, 0, 4)
    )


def test_protocol_errors():
    with make_atari_env("Pong", 2, seed=0) as env:
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(np.zeros(2, np.int32))
        env.reset()
        with pytest.raises(RuntimeError, match="without a pending"):
            env.recv()
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(3, np.int32))
        with pytest.raises(ValueError, match=r"\[0, 6\)"):
            env.step(np.array([0, 6]))
        with pytest.raises(ValueError, match="integers"):
            env.step(np.array([0.0, 1.0]))
        env.send(np.zeros(2, np.int32))
        with pytest.raises(RuntimeError, match="twice"):
            env.send(np.zeros(2, np.int32))
        env.recv()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"sticky_action_prob": 1.5}, "sticky_action_prob"),
        ({"frame_skip": 0}, "frame_skip"),
        ({"stack": 0}, "stack"),
        ({"max_episode_frames": 0}, "max_episode_frames"),
        ({"num_threads": 0}, "num_threads"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    config = {"num_envs": 1, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        make_atari_env("Pong", config.pop("num_envs"), config.pop("seed"), **config)


@pytest.mark.parametrize(
    "name, rom",
    [
        ("Pong", "pong"),
        ("pong", "pong"),
        ("ALE/Pong-v5", "pong"),
        ("PongNoFrameskip-v4", "pong"),
        ("MontezumaRevenge", "montezuma_revenge"),
        ("montezuma_revenge", "montezuma_revenge"),
        ("ALE/MsPacman-v5", "ms_pacman"),
        ("UpNDown", "up_n_down"),
        ("TicTacToe3D", "tic_tac_toe_3d"),
    ],
)
def test_resolve_game(name, rom):
    assert resolve_game(name) == rom


def test_unknown_game_lists_close_matches():
    with pytest.raises(ValueError) as error:
        resolve_game("Pongg")
    message = str(error.value)
    assert "pong" in message.split("close matches:")[1] and "\n" not in message
    with pytest.raises(ValueError, match="multiplayer"):
        resolve_game("combat")
    assert "combat" not in atari_env.available_games() and "pong" in atari_env.available_games()


def test_every_standard_game_is_shipped():
    assert len(atari_scores.ATARI_57_GAMES) == 57
    assert set(atari_scores.ATARI_57_GAMES) <= set(atari_env.available_games())


def test_throughput_harness_counts_steps_and_frames():
    from benchmarks import env_throughput

    with make_atari_env("Pong", 2, seed=0) as env:
        env.reset()
        sync = env_throughput.measure_sync(env, 10)
        calls = []
        pipelined = env_throughput.measure_async(env, 10, work=lambda: calls.append(1))
    assert len(calls) == 10
    for result in (sync, pipelined):
        assert result.frames_per_s == pytest.approx(4 * result.agent_steps_per_s)
        assert result.agent_steps_per_s == pytest.approx(2 / result.seconds_per_step)
    assert "cores available" in env_throughput.runtime.hardware_line()


# ----------------------------------------------------------------------------- reference scores


def test_well_known_reference_scores():
    assert atari_scores.reference_scores("Pong") == (-20.7, 14.6)
    assert atari_scores.reference_scores("ALE/Breakout-v5") == (1.7, 30.5)
    assert atari_scores.reference_scores("montezuma_revenge") == (0.0, 4753.3)
    assert atari_scores.reference_scores("SpaceInvaders") == (148.0, 1668.7)
    assert atari_scores.reference_scores("Seaquest") == (68.4, 42054.7)


def test_reference_scores_are_dqn_zoos_table_at_its_negative_and_extreme_entries():
    """Spot checks against DQN Zoo's ``atari_data.py`` (van Hasselt et al. 2016's table) where a
    typo hides best: negative scores, the widest and the narrowest ranges, the first and last
    games, and Video Pinball's random score that other tables replace."""
    published = {
        "alien": (227.8, 7127.7),
        "atlantis": (12850.0, 29028.1),
        "double_dunk": (-18.6, -16.4),
        "ice_hockey": (-11.2, 0.9),
        "private_eye": (24.9, 69571.3),
        "skiing": (-17098.1, -4336.9),
        "surround": (-10.0, 6.5),
        "tennis": (-23.8, -8.3),
        "video_pinball": (16256.9, 17667.9),
        "zaxxon": (32.5, 9173.3),
    }
    for game, (random, human) in published.items():
        assert atari_scores.reference_scores(game) == (random, human), game


def test_the_median_averages_each_games_runs_before_taking_the_median_over_games():
    """Runs (rows) of one game scoring 0, 0 and 3 average to 1.0, the median of that one game;
    the median of the pooled run scores, or of each run's mean over games, is 0.0."""
    assert atari_scores.median(np.array([[0.0], [0.0], [3.0]])) == 1.0


def test_human_and_random_scores_normalize_to_one_and_zero():
    for game in atari_scores.ATARI_57_GAMES:
        random, human = atari_scores.reference_scores(game)
        assert human > random, game
        assert atari_scores.human_normalized_score(game, human) == pytest.approx(1.0, abs=1e-12)
        assert atari_scores.human_normalized_score(game, random) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(
        atari_scores.human_normalized_score("pong", [-20.7, 14.6, 49.9]), [0.0, 1.0, 2.0]
    )


def test_unknown_score_game_lists_close_matches():
    with pytest.raises(ValueError, match="close matches: breakout"):
        atari_scores.human_normalized_score("Breakuot", 3.0)


def test_median_and_iqm():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])
    assert atari_scores.median(scores) == pytest.approx(3.5)
    assert atari_scores.iqm(scores) == pytest.approx(
        np.mean([2.0, 3.0, 4.0, 5.0])
    )  # drops 2 each end
    runs = np.array([[0.0, 2.0, 10.0], [2.0, 4.0, 30.0]])  # (runs, games)
    assert atari_scores.median(runs) == pytest.approx(3.0)  # per-game means 1, 3, 20
    # 6 pooled scores: drop 1 from each end of [0, 2, 2, 4, 10, 30].
    assert atari_scores.iqm(runs) == pytest.approx(np.mean([2.0, 2.0, 4.0, 10.0]))
    as_mapping = {"pong": [0.0, 2.0], "breakout": [2.0, 4.0], "alien": [10.0, 30.0]}
    assert atari_scores.iqm(as_mapping) == pytest.approx(atari_scores.iqm(runs))
    assert atari_scores.median(as_mapping) == pytest.approx(atari_scores.median(runs))
    normalized = atari_scores.human_normalized_scores({"pong": 14.6, "breakout": 1.7})
    assert normalized == pytest.approx({"pong": 1.0, "breakout": 0.0})
    with pytest.raises(ValueError):
        atari_scores.iqm([])
    # A NaN is not trimmed away as the largest score: the aggregate is NaN, like the median.
    for with_nan in ([0.0, 1.0, 2.0, np.nan], {"pong": np.nan, "breakout": 1.0}):
        assert np.isnan(atari_scores.iqm(with_nan)) and np.isnan(atari_scores.median(with_nan))
    # Any spelling of a game with reference scores is normalized, as human_normalized_score does.
    for name in ("pong", "Pong", "ALE/Pong-v5", "PongNoFrameskip-v4"):
        result = atari_scores.EvalResult(name, [14.6], frames=800, max_episode_frames=108_000)
        assert result.human_normalized == pytest.approx(1.0)


def test_emulators_print_no_banner():
    # A fresh process, since the ALE prints its banner once, at the first emulator it creates.
    code = (
        "from agents.atari_env import make_atari_env\n"
        "from agents.atari_env import minimal_action_names\n"
        "minimal_action_names('Pong')\n"
        "env = make_atari_env('Breakout', 2, seed=0)\n"
        "env.reset()\n"
        "env.close()\n"
        "print('stepped')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "stepped"
    assert "Arcade Learning Environment" not in result.stderr


def test_reward_clipping_keeps_the_sign_of_a_lost_point():
    """Clipped rewards lie in [-1, 1], not [0, 1]: Pong's -1 for a lost point stays -1 (random
    play loses its first point after about 120 agent steps)."""
    with make_atari_env("Pong", 1, seed=0) as env:
        timesteps = rollout(env, random_actions(env.num_actions, 1, 150))
    raw = stacked(timesteps, "raw_reward")
    assert raw.min() == -1.0
    np.testing.assert_array_equal(stacked(timesteps, "reward"), np.clip(raw, -1.0, 1.0))


def test_make_atari_env_defaults_are_dqn_zoos():
    """`make_atari_env` builds with `AtariConfig`'s defaults, the DQN Zoo settings: a life loss
    ends the bootstrap, rewards are clipped, up to 30 no-ops, 4 frames a step, 4 stacked."""
    signature = inspect.signature(make_atari_env).parameters
    defaults = {name: p.default for name, p in signature.items() if p.default is not p.empty}
    config = {f.name: f.default for f in dataclasses.fields(atari_env.AtariConfig)}
    assert defaults == {name: config[name] for name in defaults}
    assert set(config) - set(defaults) == {"game", "num_envs", "seed"}
    assert defaults["life_loss_ends_bootstrap"] and defaults["reward_clip"]
    assert (defaults["noop_max"], defaults["frame_skip"], defaults["stack"]) == (30, 4, 4)
    assert defaults["max_episode_frames"] == atari_scores.REFERENCE_EPISODE_FRAMES
