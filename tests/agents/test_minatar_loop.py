"""The compiled MinAtar loop: determinism, seeds, exact resume, game switches, the work dir.

One tiny DQN config (a 4-channel conv, 2 envs, 512 frames per block) on breakout and
space_invaders, played twice: every test shares its compiled programs (a few seconds each to
compile on a 2-core CPU) through module fixtures.
"""

from __future__ import annotations

import json
import math
import sys
import time
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from agents import configs, minatar_env, minatar_loop, sequence
from agents.evaluation_matrix import EVALUATION_MATRIX_FILE
from agents.sequence import SwitchPolicy
from benchmarks import analysis as figures
from benchmarks import chunk_ops, op_profile
from plasticity import analysis
from plasticity import run as run_lib
from plasticity import workdir as workdir_lib

GAMES = ("breakout", "space_invaders")
FRAMES = 512  # per block, 2 envs: 256 iterations a block, 4 blocks


@pytest.fixture(scope="module", autouse=True)
def fast_compiling_random_numbers():
    """Threefry's partitionable mode multiplies XLA:CPU compile times of conv inits by ~10."""
    with jax.threefry_partitionable(False):
        yield


def tiny(num_seeds: int = 2, seed: int = 0) -> ml_collections.ConfigDict:
    config = configs.smoke_config("dqn", "minatar")
    config.games, config.cycles = GAMES, 2
    config.num_seeds = num_seeds
    config.seed = seed
    config.frames_per_game = FRAMES
    config.diagnostics.every_frames = 256
    config.evaluation.fresh_reference = num_seeds > 1
    return config


def train(config, workdir=None, **kwargs):
    return minatar_loop.train(config, workdir, show_progress=False, **kwargs)


def final_state(result):
    return result.outputs["state"]


def evaluations(result):
    return result.outputs["evaluations"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("full")
    return path, train(tiny(), str(path))


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, full_run):
    """Stopped after 3 chunks (mid-block), relaunched on its work dir to the end."""
    path = tmp_path_factory.mktemp("resumed")
    first = train(tiny(), str(path), stop_after_checkpoints=3)
    second = train(tiny(), str(path))
    return path, first, second


def raw(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(raw(x), raw(y))


def stable(rows):
    """Rows without wall-clock fields and resume markers."""
    drop = ("frames_per_second", "seconds")
    return [
        {k: v for k, v in row.items() if k not in drop} for row in rows if row["event"] != "resume"
    ]


def test_suite_constants_match_gymnax(full_run):
    suite = minatar_loop.make_agent(tiny(), GAMES).suite
    assert suite.games == GAMES and suite.num_actions == 6 and suite.channels == 6
    for game, env in zip(suite.games, suite.envs):
        minimal = tuple(int(a) for a in env.minimal_action_set)
        assert minimal == minatar_env.MINIMAL_ACTION_SETS[game]
        assert env.obs_shape == (10, 10, minatar_env.CHANNELS[game])
        assert tuple(int(a) for a in env.action_set) == tuple(range(6))  # the full set


def test_unknown_games_fail_with_close_matches():
    assert minatar_env.resolve_minatar_game("SpaceInvaders-MinAtar") == "space_invaders"
    assert minatar_env.resolve_minatar_game("space invaders") == "space_invaders"
    with pytest.raises(ValueError, match="close matches: breakout"):
        minatar_env.resolve_minatar_game("breakot")
    config = tiny()
    config.games = ("breakout", "pong")
    with pytest.raises(ValueError, match="unknown MinAtar game 'pong'"):
        minatar_loop.make_blocks(config)


def test_the_work_dir_holds_rows_with_frames_game_visit_and_seed(full_run):
    path, result = full_run
    assert result.completed
    rows = workdir_lib.read_metrics(path)
    for row in rows:
        for key in ("event", "step", "frames", "agent_steps", "updates", "game", "visit", "seed"):
            assert key in row, (key, row)
    train = [r for r in rows if r["event"] == "train"]
    # One row per seed every 128 frames; the block's game from frame 1 to its last frame.
    assert [r["frames"] for r in train if r["seed"] == 0] == list(range(128, 4 * FRAMES + 1, 128))
    for row in train:
        block = (row["frames"] - 1) // FRAMES
        assert row["game"] == GAMES[block % 2] and row["visit"] == block // 2 + 1
    assert {r["seed"] for r in train} == {0, 1}
    learned = [r for r in train if r["frames"] > 256]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in learned)
    diagnostics = [r for r in rows if r["event"] == "diagnostics" and r["seed"] == 1]
    assert [r["frames"] for r in diagnostics] == [256, 512, 768, 1024, 1280, 1536, 1792, 2048]
    assert all(r["weight_norm/torso/conv_0"] > 0 and r["update_ratio"] > 0 for r in diagnostics)
    switches = [r for r in rows if r["event"] == "switch" and r["seed"] == 0]
    assert [(r["frames"], r["previous_game"], r["game"]) for r in switches] == [
        (512, "breakout", "space_invaders"),
        (1024, "space_invaders", "breakout"),
        (1536, "breakout", "space_invaders"),
    ]
    assert all(r["replay_items"] == min(r["frames"], 1024) for r in switches)
    assert all(r["optimizer_moments_norm"] > 0 and not r["flush_replay"] for r in switches)


def test_without_the_gradient_norm_the_rows_keep_the_other_learner_means(tmp_path):
    config = tiny(num_seeds=1)
    config.games, config.cycles, config.diagnostics.every_frames = ("breakout",), 1, 0
    config.learner.grad_norm = False
    assert train(config, str(tmp_path)).completed
    train_rows = [r for r in workdir_lib.read_metrics(tmp_path) if r["event"] == "train"]
    learned = [r for r in train_rows if r["frames"] > 256]
    assert learned and all("grad_norm" not in r for r in train_rows)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["q_mean"]) for r in learned)


def test_an_update_ratio_without_its_previous_parameters_is_null_not_zero(tmp_path):
    """At a quarter update per iteration, a diagnostics row at a chunk's first iteration can come
    before the chunk's first update: its parameters before the last update are gone, and the
    ratio is null (it was 0.0); so is a row after an intervention and before the next update
    (it measured the intervention: 0.40 beside 0.0005). Every other row after learning starts
    measures a real step, the same one for rows between the same two updates."""
    config = tiny(num_seeds=1)
    config.games, config.cycles, config.frames_per_game = ("breakout",), 1, 512
    config.diagnostics.every_frames, config.replay.min_fill_fraction = 2, 66 / 1024
    config.diagnostics.names = ("weight_norm", "update_ratio")
    config.intervention.name, config.intervention.every_frames = "shrink_perturb", 40
    assert train(config, str(tmp_path)).completed
    rows = workdir_lib.read_metrics(tmp_path)
    intervened = {(r["updates"], r["frames"]) for r in rows if r["event"] == "intervention"}
    learned = [r for r in rows if r["event"] == "diagnostics" and r["updates"] > 0]
    unknown = [r for r in learned if r["update_ratio"] is None]
    assert 258 in [r["frames"] for r in unknown]  # the second chunk's first iteration
    for row in unknown:  # else after an intervention with no update since
        assert row["frames"] == 258 or any(
            u == row["updates"] and f <= row["frames"] for u, f in intervened
        ), row["frames"]
    assert len(unknown) < len(learned) // 4
    ratios = {}
    for row in learned:
        assert row["update_ratio"] is None or row["update_ratio"] > 0
        if row["update_ratio"] is not None:
            assert ratios.setdefault(row["updates"], row["update_ratio"]) == row["update_ratio"]


def test_the_evaluation_matrix_covers_every_game_seen_after_every_block(full_run):
    path, result = full_run
    evals = [r for r in workdir_lib.read_metrics(path) if r["event"] == "eval"]
    cells = sorted({(r["block"], r["game"], r["visit"], r["trained_game"]) for r in evals})
    assert cells == [
        (0, "breakout", 1, "breakout"),
        (1, "breakout", 1, "space_invaders"),
        (1, "space_invaders", 1, "space_invaders"),
        (2, "breakout", 2, "breakout"),
        (2, "space_invaders", 1, "breakout"),
        (3, "breakout", 2, "space_invaders"),
        (3, "space_invaders", 2, "space_invaders"),
    ]
    assert [r["frames"] for r in evals if r["seed"] == 0 and r["game"] == "breakout"] == [
        512,
        1024,
        1536,
        2048,
    ]
    assert all(r["episodes"] >= 1 for r in evals)  # episodes end within the frame cap
    fresh = [r for r in workdir_lib.read_metrics(path) if r["event"] == "eval_fresh"]
    assert sorted((r["game"], r["seed"]) for r in fresh) == [
        ("breakout", 0),
        ("breakout", 1),
        ("space_invaders", 0),
        ("space_invaders", 1),
    ]
    assert all(r["frames"] == FRAMES for r in fresh)
    # The first game's reference is the sequence's first block (see the test below).
    first_visit = {r["seed"]: r["return_mean"] for r in evals if r["block"] == 0}
    assert {r["seed"]: r["return_mean"] for r in fresh if r["game"] == "breakout"} == first_visit
    assert all(r["from_sequence_block"] == 0 for r in fresh if r["game"] == "breakout")
    games, block_ids, matrix = figures.evaluation_matrix(analysis.load_run(path))
    assert games == list(GAMES) and block_ids == [0, 1, 2, 3]
    assert np.isnan(matrix[0, 1]) and np.isfinite(matrix[1:]).all()
    summary = json.loads((path / EVALUATION_MATRIX_FILE).read_text())
    assert summary["games"] == list(GAMES) and summary["return_mean"][0][1] is None
    np.testing.assert_allclose(np.array(summary["return_mean"], float), matrix)
    assert set(summary["visit_scores"]["breakout"]) == {"visit_1", "visit_2", "fresh"}


def test_games_switch_at_exactly_the_block_boundaries(full_run):
    """The replay holds the last two blocks (512 slots per env): breakout's, then space invaders'.

    Space invaders always shows several aliens in plane 1 (breakout: one ball), and breakout's
    frames never touch planes 4-5 (zero padding).
    """
    _, result = full_run
    frames = np.asarray(final_state(result).replay.frames)  # (seeds, envs, slots, 10, 10, 6)
    assert frames.shape[2:] == (512, 10, 10, 6)
    invaders = frames[..., 1].sum(axis=(-1, -2)) > 1
    assert not invaders[:, :, :256].any() and invaders[:, :, 256:].all()
    assert not frames[:, :, :256, :, :, 4:].any()
    assert int(final_state(result).replay.head[0]) == 0  # 1,024 adds per env line


def test_same_seed_gives_identical_runs(full_run):
    _, result = full_run
    again = train(tiny())
    assert_trees_equal(final_state(result), final_state(again))
    assert stable(evaluations(result)) == stable(evaluations(again))


def test_an_interrupted_run_resumes_bit_identical(full_run, resumed_run):
    full_path, full = full_run
    path, first, second = resumed_run
    assert not first.completed and second.completed
    assert_trees_equal(final_state(full), final_state(second))
    assert stable(workdir_lib.read_metrics(full_path)) == stable(workdir_lib.read_metrics(path))
    resumes = [r for r in workdir_lib.read_metrics(path) if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["frames"] == 3 * 256


def test_a_run_stopped_as_its_sequence_ends_trains_the_references_from_fresh_networks(
    tmp_path, full_run
):
    """Stopped right after the sequence's last checkpoint, which holds the sequence's final
    networks, the relaunch starts the fresh references from the seeds' initial networks, as the
    uninterrupted run does: every row after it equals that run's."""
    full_path, _ = full_run
    sequence_checkpoints = len(GAMES) * 2 * FRAMES // tiny().checkpoint_every_frames
    first = train(tiny(), str(tmp_path), stop_after_checkpoints=sequence_checkpoints)
    assert first.stopped and first.done == len(GAMES) * 2 * FRAMES
    assert train(tiny(), str(tmp_path)).completed
    rows = workdir_lib.read_metrics(tmp_path)
    assert [r["run_frames"] for r in rows if r["event"] == "resume"] == [first.done]
    assert any(r["event"] == "eval_fresh" and "from_sequence_block" not in r for r in rows)
    assert stable(rows) == stable(workdir_lib.read_metrics(full_path))


def test_vmapped_seeds_are_separate_runs(full_run):
    """Seed 1 batched with seed 0 (second lane) and with seed 2 (first lane): the same run."""
    _, batched = full_run
    shifted = train(tiny(seed=1))
    assert_trees_equal(
        jax.tree.map(lambda x: x[1], final_state(batched)),
        jax.tree.map(lambda x: x[0], final_state(shifted)),
    )
    assert [r for r in stable(evaluations(batched)) if r["seed"] == 1] == [
        r for r in stable(evaluations(shifted)) if r["seed"] == 1
    ]


@pytest.mark.slow
def test_vmapped_seeds_equal_separate_runs(full_run):
    """Against a one-seed program (compiled anew, ~30 s): equal up to float rounding, the
    fresh-network references included."""
    _, batched = full_run
    config = tiny(num_seeds=1, seed=1)
    config.evaluation.fresh_reference = True  # as the two-seed run has
    alone = train(config)
    second_seed = jax.tree.map(lambda x: x[1], final_state(batched))
    only_seed = jax.tree.map(lambda x: x[0], final_state(alone))
    np.testing.assert_array_equal(second_seed.replay.action, only_seed.replay.action)
    np.testing.assert_array_equal(second_seed.replay.frames, only_seed.replay.frames)
    for a, b in zip(
        jax.tree.leaves(second_seed.train_state.params),
        jax.tree.leaves(only_seed.train_state.params),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    batched_returns = [r["return_mean"] for r in evaluations(batched) if r["seed"] == 1]
    assert batched_returns == [r["return_mean"] for r in evaluations(alone)]


def test_a_block_start_applies_the_switch_policy(full_run):
    _, result = full_run
    agent = minatar_loop.make_agent(tiny(), GAMES)
    breakout, state = jnp.int32(0), final_state(result)
    kept = agent.start_block(state, breakout, SwitchPolicy(), 0)
    assert int(kept.replay.size[0]) == int(state.replay.size[0]) == 512
    assert bool(kept.timestep.first.all())  # new episodes, of breakout (one ball in plane 1)
    assert (np.asarray(kept.timestep.observation)[..., 1].sum(axis=(-1, -2)) == 1).all()
    policy = SwitchPolicy(flush_replay=True, reset_optimizer=True)
    switched = agent.start_block(state, breakout, policy, 0)
    assert int(switched.replay.size.max()) == 0
    is_rmsprop = lambda n: isinstance(n, optax.ScaleByRStdDevState)
    moments = [
        n
        for n in jax.tree.leaves(switched.train_state.opt_state, is_leaf=is_rmsprop)
        if is_rmsprop(n)
    ]
    assert moments and all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(moments))
    assert_trees_equal(switched.train_state.params, state.train_state.params)


def primitives(jaxpr) -> list[str]:
    """Names of every primitive in ``jaxpr`` and the jaxprs nested in its equations."""
    return [eqn.primitive.name for eqn, _ in op_profile.jaxpr_equations(jaxpr)]


def test_a_chunk_holds_no_while_loop_only_its_scan_and_conditionals():
    """A loop whose trip count is a device value (the iteration's update count) makes a GPU read
    it back to the host at every iteration, a sync that stalled the loop to a third of
    PureJaxRL's speed; the updates are unrolled conditionals instead."""
    config = tiny()
    config.diagnostics.every_frames = 0
    agent = minatar_loop.make_agent(config, GAMES)
    state = jax.eval_shape(agent.init, np.arange(2, dtype=np.int32))
    plan = chunk_ops.learning_plan(4)
    found = primitives(jax.make_jaxpr(agent.run_chunk)(state, np.int32(0), plan).jaxpr)
    assert found.count("scan") == 1 and "while" not in found
    bound = sequence.max_updates_per_iteration(config.env.num_envs, config.updates_per_frame)
    assert found.count("cond") >= bound >= 1


@pytest.mark.parametrize(
    "num_envs, updates_per_frame, bound",
    [(2, 0.25, 1), (8, 0.25, 2), (10, 0.1, 1), (3, 0.3, 1), (7, 1 / 3, 3), (4, 1.0, 4)],
)
def test_no_iteration_of_the_plan_owes_more_updates_than_the_compiled_bound(
    num_envs, updates_per_frame, bound
):
    assert sequence.max_updates_per_iteration(num_envs, updates_per_frame) == bound
    plan = sequence.plan_learning(
        [997, 501],
        items_per_iteration=num_envs,
        frames_per_iteration=num_envs,
        learning_starts=64,
        capacity=4096,
        updates_per_frame=updates_per_frame,
    )
    owed = np.concatenate([plan.window(b, 0, n)["updates"] for b, n in enumerate(plan.iterations)])
    compiled_bound = sequence.max_updates_per_iteration(
        plan.frames_per_iteration, plan.updates_per_frame
    )
    assert owed.max() == compiled_bound == bound and owed.min() >= 0


def test_packed_outputs_unpack_to_the_named_per_env_values():
    last = jnp.array([True, False, True])
    running = types.SimpleNamespace(
        episode_return=jnp.array([1.5, 0.0, -2.0], jnp.float32),
        episode_steps=jnp.array([7, 3, 1_000_000], jnp.int32),
    )
    packed = minatar_loop.pack_episodes(last, running)[None, None]  # (seeds, T, 3, envs)
    learner = jnp.array([[[0.25, 3.0]]])  # (seeds, T, scalars)
    out = minatar_loop.unpack_outputs({"episodes": packed, "learner": learner}, ("loss", "q"))
    np.testing.assert_array_equal(out["ended"][0, 0], [True, False, True])
    np.testing.assert_array_equal(out["returns"][0, 0], [1.5, 0.0, -2.0])
    np.testing.assert_array_equal(out["lengths"][0, 0], [7, 3, 1_000_000])
    assert out["learner"]["loss"][0, 0] == 0.25 and out["learner"]["q"][0, 0] == 3.0


@pytest.mark.slow
def test_dqn_learns_breakout_beyond_a_random_policy():
    """Evidence of learning, not a CI gate (about 90 s on a 2-core CPU):

        python -m pytest -m slow -s tests/agents/test_minatar_loop.py -k learns

    DQN (the MinAtar preset: conv(16) -> 128, centred RMSProp, epsilon 1 -> 0.05 over 50k
    steps, one update every 4 steps) trained for 100,000 steps on Breakout-MinAtar, evaluated on
    16 episodes (epsilon 0.05), against a uniformly random policy on the same 16 episodes.
    Measured: DQN 1.75 (± 0.66) on an Intel Xeon, 1.56 on an AMD EPYC with the same code and
    keys (RL runs move with the CPU's float rounding); random 0.25.
    """
    config = configs.get_config("dqn", "minatar")
    config.games, config.frames_per_game = ("breakout",), 100_000
    config.evaluation.update(dict(episodes=16, max_frames=16 * 1_002, fresh_reference=False))
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    (trained,) = evaluations(result)
    random_config = configs.get_config("dqn", "minatar")
    random_config.evaluation.update(dict(episodes=16, max_frames=16 * 1_002, epsilon=1.0))
    agent = minatar_loop.make_agent(random_config, ["breakout"], full_action_space=False)
    train_state = final_state(result).train_state
    returns, finished = agent.evaluate(
        train_state.params,
        train_state.extra,
        jnp.int32(0),
        jnp.zeros((1,), jnp.int32),
        jnp.uint32(0),
    )
    random_mean = float(np.mean(np.asarray(returns)[np.asarray(finished)]))
    print(
        f"\nBreakout-MinAtar after 100k steps: DQN {trained['return_mean']:.2f} "
        f"(± {trained['return_std']:.2f}, {trained['episodes']} episodes), random policy "
        f"{random_mean:.2f}; {seconds:.0f} s"
    )
    assert trained["return_mean"] > random_mean + 1.0


@pytest.mark.slow
def test_mlp_at_purejaxrl_settings_reaches_its_return_at_300k_steps(tmp_path):
    """The settings `benchmarks.peers` times learn as PureJaxRL's ``dqn.py`` does (about 3 min):

        python -m pytest -m slow -s tests/agents/test_minatar_loop.py -k purejaxrl

    MLP 120-84, Adam 2.5e-4, batch 128, one update per 10 steps of 10 envs, epsilon 1 -> 0.05
    over 250k steps, 4 seeds vmapped, 300k steps each; evaluated on 16 episodes (epsilon 0.05).
    PureJaxRL's training returns over the last 5% of 300k steps, 4 seeds, measured beside it:
    see BUILD_NOTES.md ("Peers"); about 7.
    """
    from benchmarks import peer_settings  # noqa: PLC0415

    config = peer_settings.purejaxrl_config(seeds=4, steps=300_000, diagnostics=False)
    config.evaluation.update(dict(episodes=16, max_frames=16 * 1_002))
    config.log_every_frames = 15_000
    result = train(config, str(tmp_path))
    rows = [r for r in workdir_lib.read_metrics(tmp_path) if r["event"] == "train"]
    last = [r["return_mean"] for r in rows if r["frames"] == config.frames_per_game]
    evaluated = [row["return_mean"] for row in evaluations(result)]
    print(
        f"\nMLP at PureJaxRL's settings, 300k steps, 4 seeds: training return over the last "
        f"15k steps {np.nanmean(last):.2f} (per seed {np.round(last, 2)}), evaluation "
        f"{np.mean(evaluated):.2f} (per seed {np.round(evaluated, 2)})"
    )
    assert np.nanmean(last) > 5.0


def test_the_first_games_reference_trained_anyway_replays_the_first_block(tmp_path, monkeypatch):
    """Why the first game's reference is not trained: trained anyway (same initial networks,
    plan, optimizer and evaluation episodes), it scores exactly what the sequence's first block
    scores, seed by seed."""

    def with_first_reference(config, blocks):
        segments = sequence.plan_segments(config, blocks)
        return [*segments, sequence.reference_segment(segments[0], blocks[0].game)]

    monkeypatch.setattr(minatar_loop, "plan_segments", with_first_reference)
    config = tiny()
    config.cycles, config.diagnostics.every_frames = 1, 0
    assert train(config, tmp_path).completed
    fresh = [r for r in workdir_lib.read_metrics(tmp_path) if r["event"] == "eval_fresh"]
    fields = ("seed", "frames", "updates", "return_mean", "return_std", "episodes")
    scores = lambda rows: sorted(tuple(r[f] for f in fields) for r in rows)  # noqa: E731
    first_block = [r for r in fresh if r["game"] == "breakout" and "from_sequence_block" in r]
    trained = [r for r in fresh if r["game"] == "breakout" and "from_sequence_block" not in r]
    assert len(trained) == 2 and scores(trained) == scores(first_block)


def test_the_progress_bar_shows_the_current_games_last_return(tmp_path, monkeypatch):
    """Each chunk's bar shows its own game's last return, '—' until one of its episodes ended
    (not the previous game's, nor the sequence's in a reference)."""
    shown = []
    original = run_lib.Run.show
    monkeypatch.setattr(
        run_lib.Run, "show", lambda self, **fields: (shown.append(fields), original(self, **fields))
    )
    config = tiny(num_seeds=1)
    config.cycles, config.diagnostics.every_frames = 1, 0
    config.evaluation.fresh_reference = True
    assert train(config, tmp_path).completed
    starts = [fields for fields in shown if "game" in fields]
    assert all("last_return" in fields for fields in starts)
    first_of = {}
    for fields in starts:
        first_of.setdefault((fields["game"], fields.get("run")), fields["last_return"])
    assert first_of == {
        ("breakout (1/2)", None): "—",
        ("space_invaders (2/2)", None): "—",
        ("space_invaders (1/1)", "fresh_space_invaders"): "—",
    }


class CounterState(NamedTuple):
    time: jax.Array
    over: jax.Array


class CounterGame:
    """A gymnax-shaped game for `MinAtarSuite`'s own bookkeeping: a reward of 1 at every step
    (stepping an ended game included), game over on action 1, and an ended game that stays over
    when stepped again (as gymnax's Seaquest and Space Invaders report)."""

    def reset_env(self, key, params):
        return jnp.zeros((10, 10, 4), jnp.bool_), CounterState(jnp.int32(0), jnp.bool_(False))

    def step_env(self, key, state, action, params):
        state = CounterState(state.time + 1, state.over | (action == 1))
        return jnp.zeros((10, 10, 4), jnp.bool_), state, jnp.float32(1.0), state.over, {}


def test_episodes_restart_cleanly_after_truncation_and_game_over(monkeypatch):
    """`MinAtarSuite.step`'s timestep protocol (module docstring of `agents.minatar_env`): an
    episode opens with a ``first`` timestep (reward 0, discount 1), whatever stepping the ended
    game would give, and ends with ``last`` after exactly ``max_episode_steps`` steps
    (truncation, discount 1) or at game over (discount 0)."""
    game = types.SimpleNamespace(make=lambda name, use_minimal_action_set: (CounterGame(), None))
    monkeypatch.setitem(sys.modules, "gymnax", game)
    suite = minatar_env.MinAtarSuite(("breakout",), True, 0.0, max_episode_steps=4)
    # Four steps to the truncation, a step into the next episode, game over, four more steps.
    actions = jnp.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], jnp.int32)

    @jax.jit
    def rollout(key):
        carry, begun = suite.begin(suite.init(1), 0, key)
        step = lambda carry, action: suite.step(carry, 0, action[None], key)  # noqa: E731
        return jax.tree.map(
            lambda a, b: jnp.concatenate([a, b[:, 0]]), begun, jax.lax.scan(step, carry, actions)[1]
        )

    timesteps = jax.device_get(rollout(jax.random.key(0)))
    first = np.array([1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1], bool)
    last = np.array([0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0], bool)
    np.testing.assert_array_equal(timesteps.first, first)
    np.testing.assert_array_equal(timesteps.last, last)
    np.testing.assert_array_equal(timesteps.reward, np.where(first, 0.0, 1.0))
    np.testing.assert_array_equal(timesteps.discount, np.where(np.arange(13) == 6, 0.0, 1.0))
