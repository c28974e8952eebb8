"""Schedules, switch policies, learning plans and the evaluation matrix of `agents.sequence`."""

from __future__ import annotations

import fractions
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from agents import configs, evaluation_matrix, sequence
from agents.replay import ReplayState, replay_add, replay_init, replay_num_valid
from plasticity.networks import MLP
from plasticity.optim import make_optimizer, optimizer_learning_rate
from plasticity.train_state import TrainState, apply_gradients, create_train_state


def test_schedule_numbers_blocks_cycles_and_visits():
    blocks = sequence.make_schedule(["a", "b", "c"], 100, cycles=2)
    assert [b.game for b in blocks] == ["a", "b", "c"] * 2
    assert [b.visit for b in blocks] == [1, 1, 1, 2, 2, 2]
    assert [b.cycle for b in blocks] == [1, 1, 1, 2, 2, 2]
    assert [b.index for b in blocks] == list(range(6))
    assert all(b.frames == 100 for b in blocks)
    resolved = sequence.make_schedule(["A"], 10, resolve=str.lower)
    assert resolved[0].game == "a"
    with pytest.raises(ValueError, match="cycles"):
        sequence.make_schedule(["a"], 10, cycles=0)
    with pytest.raises(ValueError, match="at least one game"):
        sequence.make_schedule([], 10)


def test_evaluation_cells_cover_every_game_seen_with_its_visit_count():
    blocks = sequence.make_schedule(["a", "b"], 10, cycles=2)
    assert [(c.game, c.visit) for c in evaluation_matrix.evaluation_cells(blocks, 0)] == [("a", 1)]
    cells = evaluation_matrix.evaluation_cells(blocks, 2)  # a, b, [a]
    assert [(c.game, c.visit, c.trained_game, c.cycle) for c in cells] == [
        ("a", 2, "a", 2),
        ("b", 1, "a", 2),
    ]
    assert [c.is_visit_end for c in cells] == [True, False]
    with pytest.raises(ValueError, match="outside"):
        evaluation_matrix.evaluation_cells(blocks, 4)


def test_visit_summary_separates_first_visit_revisit_and_fresh():
    rows = [
        {"game": "a", "trained_game": "a", "visit": 1, "return_mean": 1.0},
        {"game": "a", "trained_game": "a", "visit": 1, "return_mean": 3.0},
        {"game": "a", "trained_game": "b", "visit": 1, "return_mean": 100.0},  # forgetting cell
        {"game": "a", "trained_game": "a", "visit": 2, "return_mean": 5.0},
        {"game": "a", "trained_game": "a", "visit": 2, "return_mean": None},
    ]
    fresh = [{"game": "a", "return_mean": 4.0}, {"game": "a", "return_mean": 6.0}]
    assert evaluation_matrix.visit_summary(rows, fresh) == {
        "a": {"visit_1": 2.0, "visit_2": 5.0, "fresh": 5.0}
    }


def reference_plan(lengths, items, frames, starts, capacity, upf, flush):
    """The host counters of a loop that adds, then learns, one iteration at a time."""
    replay_items = learning_frames = learning_updates = 0
    updates, learning_before, block_starts = [], [], []
    for block, length in enumerate(lengths):
        if flush and block > 0:
            replay_items = 0
        block_starts.append(learning_updates)
        for _ in range(length):
            learning_before.append(replay_items >= starts)
            replay_items = min(replay_items + items, capacity)
            due = 0
            if replay_items >= starts:
                learning_frames += frames
                due = int(learning_frames * upf + 1e-9) - learning_updates
            learning_updates += due
            updates.append(due)
    return np.array(updates), np.array(learning_before), np.array(block_starts)


def plan_of(lengths, items, frames, starts, capacity, upf, flush=False):
    """`sequence.plan_learning` of blocks ``lengths`` (iterations) with these settings."""
    return sequence.plan_learning(
        lengths,
        items_per_iteration=items,
        frames_per_iteration=frames,
        learning_starts=starts,
        capacity=capacity,
        updates_per_frame=upf,
        flush_at_switch=flush,
    )


def whole_run(plan, key: str) -> np.ndarray:
    """``plan.window``'s ``key`` over every iteration of the run, block after block."""
    return np.concatenate([plan.window(b, 0, n)[key] for b, n in enumerate(plan.iterations)])


@pytest.mark.parametrize(
    "lengths, items, frames, starts, capacity, upf, flush",
    [
        ((50, 50, 50), 2, 2, 20, 64, 0.25, False),
        ((50, 50, 50), 2, 2, 20, 64, 0.25, True),
        ((37, 11), 8, 32, 100, 1000, 1 / 16, True),
        ((40,), 3, 3, 1, 30, 1.0, False),
        ((5, 5, 30), 2, 2, 50, 64, 0.5, True),  # blocks shorter than the fill: no learning
        ((10, 10), 2, 2, 20, 20, 0.5, False),  # learning starts with a full replay: 11 updates
    ],
)
def test_learning_plan_matches_the_host_counters(
    lengths, items, frames, starts, capacity, upf, flush
):
    plan = plan_of(lengths, items, frames, starts, capacity, upf, flush)
    updates, learning_before, block_starts = reference_plan(
        lengths, items, frames, starts, capacity, upf, flush
    )
    np.testing.assert_array_equal(whole_run(plan, "updates"), updates)
    np.testing.assert_array_equal(whole_run(plan, "learning_before"), learning_before)
    np.testing.assert_array_equal(plan.block_start_updates, block_starts)
    np.testing.assert_array_equal(whole_run(plan, "updates_before"), np.cumsum(updates) - updates)
    assert plan.total_updates == updates.sum()
    assert plan.block_first_iteration.tolist() == [0, *np.cumsum(lengths).tolist()]
    frames_after = whole_run(plan, "frames_after")
    np.testing.assert_array_equal(frames_after, (np.arange(sum(lengths)) + 1) * frames)
    # Any stretch of a block equals the same stretch of the whole block's window.
    middle = plan.window(len(lengths) - 1, 2, 4)
    full = plan.window(len(lengths) - 1, 0, lengths[-1])
    for key, values in middle.items():
        np.testing.assert_array_equal(values, full[key][2:4], err_msg=key)


def test_a_flush_delays_learning_until_the_replay_is_refilled():
    kwargs = dict(items_per_iteration=4, frames_per_iteration=4, learning_starts=40)
    kwargs.update(capacity=400, updates_per_frame=0.25)
    kept = sequence.plan_learning((100, 100), flush_at_switch=False, **kwargs)
    flushed = sequence.plan_learning((100, 100), flush_at_switch=True, **kwargs)
    assert kept.window(1, 0, 100)["updates"].min() == 1  # learning goes on at the switch
    second = flushed.window(1, 0, 100)["updates"]
    assert second[:9].sum() == 0  # 10 adds of 4 refill 40 items
    assert second[9:].min() == 1


def test_the_first_games_reference_is_the_sequences_first_block():
    """A fresh network on the first game for one block would replay the sequence's first block
    (same initial network, plan, optimizer, action set): it is not trained again, and the
    sequence's evaluation of that game after block 0 becomes its 'eval_fresh' rows."""
    config = configs.smoke_config("dqn", "minatar")
    config.games, config.cycles, config.frames_per_game = ("breakout", "asterix"), 2, 8192
    config.evaluation.fresh_reference = True
    blocks = sequence.make_schedule(config.games, config.frames_per_game, config.cycles)
    main, *references = sequence.plan_segments(config, blocks)
    assert main.first_block_is_reference and [r.name for r in references] == ["fresh_asterix"]
    single = sequence.make_schedule(["breakout"], config.frames_per_game)
    assert [s.name for s in sequence.plan_segments(config, single)] == ["sequence"]  # no copy
    evaluated = [
        {"event": "eval", "game": "breakout", "seed": seed, "return_mean": 1.5 + seed}
        for seed in (0, 1)
    ]
    fresh = sequence.first_block_reference_rows(main, 0, evaluated)
    assert fresh == [{**row, "event": "eval_fresh", "from_sequence_block": 0} for row in evaluated]
    assert sequence.first_block_reference_rows(main, 1, evaluated) == []
    assert sequence.first_block_reference_rows(references[0], 0, evaluated) == []
    config.evaluation.fresh_reference = False
    (alone,) = sequence.plan_segments(config, blocks)
    assert not alone.first_block_is_reference
    assert sequence.first_block_reference_rows(alone, 0, evaluated) == []


def test_the_evaluation_line_is_one_format_for_every_loop():
    """Atari and MinAtar say a block's evaluation in one line: where, the frames, each game's
    mean over seeds (human-normalized where rows have it), and a game without an ended episode
    left out rather than shown as nan."""
    config = configs.smoke_config("dqn", "minatar")
    config.games, config.cycles, config.frames_per_game = ("breakout", "asterix"), 2, 8192
    blocks = sequence.make_schedule(config.games, config.frames_per_game, config.cycles)
    main, *_ = sequence.plan_segments(config, blocks)
    rows = [
        {"game": "breakout", "frames": 24_576, "return_mean": 1.5 + seed, "human_normalized": None}
        for seed in (0, 1)
    ] + [{"game": "asterix", "frames": 24_576, "return_mean": float("nan")}]
    assert sequence.evaluation_message(main, 2, rows) == (
        "eval after block 2 (breakout, visit 2) at 24,576 frames: breakout 2.00"
    )
    atari = [{"game": "pong", "frames": 2048, "return_mean": -2.0, "human_normalized": 0.06}]
    assert sequence.evaluation_scores(atari) == "pong -2.00 (0.060 human-normalized)"
    assert sequence.evaluation_scores(rows[2:]) == "no episode ended"


def test_a_run_that_never_learns_is_refused_before_it_starts():
    kwargs = dict(items_per_iteration=4, frames_per_iteration=4, updates_per_frame=0.25)
    small = sequence.plan_learning((10,), learning_starts=100, capacity=64, **kwargs)
    with pytest.raises(ValueError, match="replay holds at most 64 transitions"):
        sequence.check_learning_reachable(small)
    short = sequence.plan_learning((10, 10), learning_starts=100, capacity=400, **kwargs)
    with pytest.raises(ValueError, match="no game block is long enough.*100 frames"):
        sequence.check_learning_reachable(short)
    sequence.check_learning_reachable(
        sequence.plan_learning((30,), learning_starts=100, capacity=400, **kwargs)
    )
    # 2^33 iterations of one update each: more than the learner's int32 step counts.
    endless = sequence.plan_learning((2**33,), learning_starts=100, capacity=400, **kwargs)
    with pytest.raises(ValueError, match=r"plans 8,589,934,\d+ learner updates, more than"):
        sequence.check_learning_reachable(endless)


def test_a_full_replay_fill_counts_the_capacity_the_replay_holds():
    """The replay holds its capacity rounded down to whole envs (201 over 2 envs: 200), so
    learning from a full replay starts at those 200 transitions, never at the 201 asked for."""
    config = configs.smoke_config("dqn", "minatar")
    config.env.num_envs, config.replay.capacity, config.replay.min_fill_fraction = 2, 201, 1.0
    settings = sequence.learning_settings(config)
    assert settings["capacity"] == 200
    assert settings["learning_starts"] == 200
    sequence.check_learning_reachable(sequence.plan_learning((400,), **settings))


def optimizer_config(name: str, nap: bool) -> ml_collections.ConfigDict:
    """An optimizer chain with every kind of state: moments, schedule count, NaP, L2-init."""
    config = configs.get_config("rainbow").optimizer
    if name == "rmsprop":
        config.update(dict(name="rmsprop", rmsprop_centered=True, eps=1e-2))
    config.nap.enabled = nap
    config.l2_init = 1e-3
    config.schedule.update(dict(warmup_steps=4, init_value=1e-8, end_value=1e-6))
    return config


def network_params(norm: str) -> dict:
    model = MLP((8,), num_outputs=3, norm=norm)
    return model.init(jax.random.key(0), jnp.ones((1, 5)))["params"]


def updated_state(name: str, nap: bool, steps: int = 3) -> TrainState:
    """A train state after ``steps`` updates with random gradients."""
    tx = make_optimizer(optimizer_config(name, nap))
    params = network_params("layernorm" if nap else "none")
    state = create_train_state(params, tx, jax.random.key(0))

    def step(state, key):
        leaves, tree = jax.tree.flatten(state.params)
        keys = jax.random.split(key, len(leaves))
        grads = [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
        return apply_gradients(state, jax.tree.unflatten(tree, grads), tx), None

    return jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(s.rng, steps))[0])(state)


@pytest.fixture(scope="module")
def trained() -> dict[str, TrainState]:
    """Adam + NaP + L2-init, and centred RMSProp + L2-init, after three updates."""
    return {"adam": updated_state("adam", nap=True), "rmsprop": updated_state("rmsprop", False)}


def leaves_of(opt_state, kind):
    return [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, kind))
        if isinstance(node, kind)
    ]


def test_resetting_the_optimizer_zeroes_moments_and_keeps_schedule_nap_and_anchor(trained):
    state = trained["adam"]
    reset = jax.jit(sequence.reset_optimizer_moments)(state)
    (adam_before,) = leaves_of(state.opt_state, optax.ScaleByAdamState)
    (adam_after,) = leaves_of(reset.opt_state, optax.ScaleByAdamState)
    assert int(adam_before.count) == 3 and int(adam_after.count) == 0
    assert all(np.abs(x).max() > 0 for x in jax.tree.leaves((adam_before.mu, adam_before.nu)))
    assert all(np.all(x == 0) for x in jax.tree.leaves((adam_after.mu, adam_after.nu)))
    # Everything that is not a moment survives bit for bit: NaP's reference norms and count, the
    # schedule's count, L2-init's anchor, the parameters.
    is_adam = lambda node: isinstance(node, optax.ScaleByAdamState)
    without_adam = lambda opt: jax.tree.leaves(
        jax.tree.map(lambda n: None if is_adam(n) else n, opt, is_leaf=is_adam)
    )
    before, after = without_adam(state.opt_state), without_adam(reset.opt_state)
    assert len(before) == len(after) > 3
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    (schedule,) = leaves_of(reset.opt_state, optax.ScaleByScheduleState)
    assert int(schedule.count) == 3
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reset.params)):
        np.testing.assert_array_equal(a, b)


def test_resetting_rmsprop_zeroes_its_averages(trained):
    state = trained["rmsprop"]
    reset = sequence.reset_optimizer_moments(state)
    (before,) = leaves_of(state.opt_state, optax.ScaleByRStdDevState)
    (after,) = leaves_of(reset.opt_state, optax.ScaleByRStdDevState)
    assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(before))
    assert all(np.all(x == 0) for x in jax.tree.leaves(after))


@jax.jit
def filled_replay() -> ReplayState:
    """Two env lines of 20 timesteps, one episode each, none ended."""

    def add(replay, t):
        first = jnp.broadcast_to(t == 0, (2,))
        frame = jnp.full((2, 3), t, jnp.uint8)
        ones = jnp.ones((2,))
        return (
            replay_add(
                replay, frame, jnp.ones((2,), jnp.int32), ones, ones, first, ~ones.astype(bool)
            ),
            None,
        )

    replay = replay_init(64, 2, (3,), stack_size=1, max_n_step=2)
    replay, _ = jax.lax.scan(add, replay, jnp.arange(20))
    return replay.replace(max_priority=jnp.float32(7.0))


POLICIES = (
    sequence.SwitchPolicy(),
    sequence.SwitchPolicy(flush_replay=True),
    sequence.SwitchPolicy(reset_optimizer=True),
)
# One compiled program for the three policies.
switch_all = jax.jit(lambda s, r: [sequence.apply_switch_policy(s, r, p) for p in POLICIES])


def test_switch_policies_flush_or_keep_the_replay_and_always_cut_episodes(trained):
    replay = filled_replay()
    state = trained["adam"]
    (kept_state, kept), (flushed_state, flushed), (reset_state, _) = switch_all(state, replay)
    newest = (int(replay.head) - 1) % replay.slots_per_env
    assert not bool(replay.last[:, newest].any()) and bool(kept.last[:, newest].all())
    # Cutting the episodes only changes the newest slot's flags and its neighbours' validity.
    np.testing.assert_array_equal(kept.frames, replay.frames)
    assert int(replay_num_valid(kept)) == int(replay_num_valid(replay)) + 2  # window now ends
    assert_same(kept_state, state)
    fresh = replay_init(64, 2, (3,), stack_size=1, max_n_step=2)
    assert int(flushed.size) == 0 and int(replay_num_valid(flushed)) == 0
    for name in ("frames", "action", "reward", "first", "last", "head"):
        np.testing.assert_array_equal(getattr(flushed, name), getattr(fresh, name))
    assert float(flushed.max_priority) == 7.0  # the learner's priority scale is kept
    assert_same(flushed_state, state)
    (adam,) = leaves_of(reset_state.opt_state, optax.ScaleByAdamState)
    assert int(adam.count) == 0


def assert_same(a, b) -> None:
    """Bitwise equal pytrees (PRNG keys compared by their data)."""
    raw = lambda x: (
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    )
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(raw(x), raw(y))


def test_the_restarted_schedule_starts_every_block_at_the_warm_up_value():
    config = optimizer_config("adam", nap=False)
    restarted = sequence.restarted_schedule_config(
        config, block_start_updates=[0, 40, 80], total_updates=120
    )
    assert restarted.schedule.boundaries == (40, 80)
    lr = lambda count: float(optimizer_learning_rate(restarted, count))
    peak = config.learning_rate
    for start in (0, 40, 80):
        assert lr(start) == pytest.approx(1e-8, rel=1e-5)  # the warm-up's start
        assert lr(start + 4) == pytest.approx(peak, rel=1e-5)  # the peak after 4 updates
    assert lr(39) < 1e-5 and lr(79) < 1e-5  # decayed towards 1e-6 before each switch
    # The optimizer's own count drives it: the first update after a switch (count 40) moves each
    # parameter by the warm-up value (Adam's first bias-corrected step has size 1; L2-init and
    # clipping see a zero pull and a small gradient).
    tx = make_optimizer(restarted)
    params = {"w": jnp.zeros((3,))}
    opt_state = tx.init(params)
    at_switch = lambda n: n._replace(count=jnp.int32(40))
    is_schedule = lambda n: isinstance(n, optax.ScaleByScheduleState)
    opt_state = jax.tree.map(
        lambda n: at_switch(n) if is_schedule(n) else n, opt_state, is_leaf=is_schedule
    )
    updates, _ = jax.jit(tx.update)({"w": jnp.full((3,), 0.5)}, opt_state, params)
    np.testing.assert_allclose(updates["w"], -1e-8, rtol=1e-3)
    with pytest.raises(ValueError, match="no learner update"):
        sequence.restarted_schedule_config(config, [0], 0)


def test_a_block_shorter_than_the_warm_up_is_refused_in_one_line():
    """A segment of no more updates than the warm-up would never reach the peak rate."""
    config = optimizer_config("adam", nap=False)
    warmup = config.schedule.warmup_steps
    ok = sequence.restarted_schedule_config(config, [0, warmup + 1], 2 * warmup + 2)
    assert ok.schedule.boundaries == (warmup + 1,)
    for starts, total in (([0, warmup], 2 * warmup + 2), ([0, warmup + 1], 2 * warmup + 1)):
        with pytest.raises(ValueError, match=f"one block makes {warmup:,}:") as error:
            sequence.restarted_schedule_config(config, starts, total)
        assert "\n" not in str(error.value)


def test_a_checkpoint_names_its_segment_and_a_changed_plan_sets_it_aside():
    """A relaunch restores a checkpoint into the segment it was written in; where the plan now
    has another segment at that position (a changed plan), the checkpoint cannot be used."""
    from agents import driver  # noqa: PLC0415

    config = configs.smoke_config("dqn", "minatar")
    config.games, config.frames_per_game = ("breakout", "asterix", "freeway"), 8192
    config.evaluation.fresh_reference = True
    segments = sequence.plan_segments(config, sequence.make_schedule(config.games, 8192))
    assert [s.name for s in segments] == ["sequence", "fresh_asterix", "fresh_freeway"]
    at = lambda index, name: {"segment": index, "block": 0, "iteration": 3, "segment_name": name}  # noqa: E731
    assert driver._saved_segment(segments, at(1, "fresh_asterix")) is segments[1]
    assert driver._saved_segment(segments, {"segment": 2, "block": 0}) is segments[2]  # unnamed
    with pytest.raises(ValueError, match="written in segment 'fresh_breakout', which this run"):
        driver._saved_segment(segments, at(1, "fresh_breakout"))


@pytest.mark.parametrize("flush", [False, True])
def test_the_importance_exponent_reaches_its_end_value_with_the_sequence(flush):
    """Left at 0, the anneal spans the sequence's learning frames (those once learning started,
    and again after each refill), so the last update uses the end value, as in DQN Zoo."""
    config = configs.get_config("rainbow", "minatar")
    config.switch.flush_replay = flush
    main = sequence.plan_segments(config, sequence.make_schedule(config.games, 40_000))[0]
    last = len(main.blocks) - 1
    end = main.plan.iterations[last]
    beta = main.schedule_values(main.plan.window(last, end - 2, end))["importance_exponent"]
    assert beta[-1] == config.replay.importance_exponent_end and beta[0] < beta[-1]
    config.replay.importance_exponent_anneal_frames = 10**9  # a set length is kept
    main = sequence.plan_segments(config, sequence.make_schedule(config.games, 40_000))[0]
    beta = main.schedule_values(main.plan.window(last, end - 1, end))["importance_exponent"]
    assert beta[-1] < 0.41


def test_train_rows_carry_an_importance_exponent_only_for_a_prioritized_replay():
    """A uniform replay's importance weights are 1 whatever the anneal says, so its 'train' rows
    leave the exponent out rather than show one rising to 1.0 that no update uses."""
    for agent, prioritized in (("rainbow", True), ("dqn", False)):
        config = configs.get_config(agent, "minatar")
        assert bool(config.replay.prioritized) == prioritized
        main = sequence.plan_segments(config, sequence.make_schedule(config.games, 40_000))[0]
        values = main.schedule_values(main.plan.window(0, 0, 2))
        field = main.importance_field(values, 1)
        expected = {"importance_exponent": float(values["importance_exponent"][1])}
        assert field == (expected if prioritized else {})


def test_the_run_counts_its_learning_frames_in_frames_not_transitions():
    """`LearningPlan.total_learning_frames` (the importance-exponent anneal's default length)
    counts emulator frames: with 2 envs and a frame skip of 4 an iteration adds 2 items but
    plays 8 frames. Host counters of a loop that adds, then learns, give the reference."""
    lengths, items, frames, starts, capacity = (30, 20), 2, 8, 12, 100
    plan = plan_of(lengths, items, frames, starts, capacity, 0.25)
    replay_items = learning_frames = 0
    for _ in range(sum(lengths)):
        replay_items = min(replay_items + items, capacity)
        learning_frames += frames if replay_items >= starts else 0
    assert learning_frames == 45 * 8  # learning from the 6th iteration on
    assert plan.total_learning_frames == learning_frames
    assert whole_run(plan, "learning_frames_after")[-1] == learning_frames


def test_the_replay_ratio_of_a_decimal_rate_is_exact():
    """Owed updates are floor(learning frames x the rate the user wrote), in every window and in
    the plan's totals alike: 0.29 updates a frame owe 29 updates after 100 frames, although
    100 * 0.29 is 28.999999999999996 in floating point."""
    plan = sequence.plan_learning(
        (50,),
        items_per_iteration=1,
        frames_per_iteration=4,
        learning_starts=1,
        capacity=100,
        updates_per_frame=0.29,
    )
    window = plan.window(0, 0, 50)
    exact = [
        math.floor(fractions.Fraction("0.29") * int(f)) for f in window["learning_frames_after"]
    ]
    np.testing.assert_array_equal(window["updates_after"], exact)
    np.testing.assert_array_equal(window["updates"], np.diff([0, *exact]))
    assert plan.total_updates == exact[-1] == 58


def test_linear_schedules_hold_their_end_value_after_their_duration():
    """Exploration decays linearly to its end value over ``decay_frames`` learning frames and
    stays there (DQN's epsilon-greedy schedule), rather than going on below it."""
    values = sequence.linear_values(np.array([0, 50, 100, 150, 10_000]), 1.0, 0.1, 100)
    np.testing.assert_allclose(values, [1.0, 0.55, 0.1, 0.1, 0.1], rtol=1e-12)
    config = configs.smoke_config("dqn", "minatar")
    main = sequence.plan_segments(config, sequence.make_schedule(["breakout"], 8192))[0]
    end = main.plan.iterations[0]
    window = main.plan.window(0, end - 2, end)
    assert window["learning_frames_before"].min() > 10 * config.exploration.decay_frames
    epsilon = main.schedule_values(window)["epsilon"]
    np.testing.assert_array_equal(epsilon, np.float32(config.exploration.epsilon_end))


def test_one_game_played_for_several_cycles_keeps_its_own_action_set():
    """Left open, the full action set is for sequences of several games; one game played again
    and again keeps its minimal set (what `agents.configs` says of ``env.full_action_space``)."""
    config = configs.smoke_config("dqn", "minatar")
    assert config.env.full_action_space is None
    for games, cycles, full in ((("breakout",), 3, False), (("breakout", "asterix"), 1, True)):
        config.games, config.cycles = games, cycles
        blocks = sequence.make_schedule(games, config.frames_per_game, cycles)
        assert len(blocks) > 1
        (main,) = sequence.plan_segments(config, blocks)
        assert main.config.env.full_action_space is full


def test_only_end_of_block_evaluations_enter_the_evaluation_matrix():
    """The Atari loop also evaluates inside a block (``evaluation.every_frames``, rows with
    ``end_of_block`` False): those are learning curves, not cells of the matrix or visit scores."""
    blocks = sequence.make_schedule(["a", "b"], 10)
    cell = {"event": "eval", "block": 0, "game": "a", "trained_game": "a", "visit": 1}
    rows = [
        {**cell, "end_of_block": False, "return_mean": 100.0},
        {**cell, "end_of_block": True, "return_mean": 2.0},
    ]
    summary = evaluation_matrix.evaluation_matrix_summary(blocks, rows)
    assert summary["return_mean"] == [[2.0, None], [None, None]]
    assert summary["visit_scores"] == {"a": {"visit_1": 2.0}}


def test_exploration_decays_from_the_first_learning_frame_and_waits_for_a_refill():
    """Epsilon stays at its begin value until the replay held ``learning_starts`` items before
    the iteration (the first learning iteration f still explores fully), then decays over
    learning frames, not frames played: at f + 1 it has decayed by one iteration's 2 frames of
    256. After a flush, block 1 refills for f iterations at the begin value again, then resumes
    where its learning frames left it (long decayed: the end value)."""
    config = configs.smoke_config("dqn", "minatar")
    config.switch.flush_replay = True
    blocks = sequence.make_schedule(["breakout", "asterix"], 8192)
    main = sequence.plan_segments(config, blocks)[0]
    exploration, f = config.exploration, main.plan.first_learning[0]
    assert (exploration.epsilon_begin, exploration.epsilon_end) == (1.0, 0.05)
    assert exploration.decay_frames == 256 and main.frames_per_iteration == 2
    assert f == 31 and main.plan.first_learning[1] == f  # 64 items, 2 an iteration

    def epsilon(block: int, iteration: int) -> float:
        window = main.plan.window(block, iteration, iteration + 1)
        return float(main.schedule_values(window)["epsilon"][0])

    decayed = lambda frames: 1.0 - 0.95 * frames / 256  # noqa: E731
    first_block = [epsilon(0, i) for i in (f - 1, f, f + 1, f + 64, f + 128, f + 500)]
    expected = [1.0, 1.0, decayed(2), decayed(128), 0.05, 0.05]
    np.testing.assert_allclose(first_block, expected, rtol=1e-6)
    second_block = [epsilon(1, i) for i in (0, f - 1, f, f + 1)]
    np.testing.assert_allclose(second_block, [1.0, 1.0, 1.0, 0.05], rtol=1e-6)


def test_the_optimizer_moments_norm_is_the_global_norm_of_adams_mu_and_nu(trained):
    """sqrt(Σ mu² + Σ nu²) over every parameter's Adam moments (NumPy, float64), nothing else of
    the optimizer state (NaP's reference norms, L2-init's anchor, counts); RMSProp's averages
    likewise."""
    for name, kind in (("adam", optax.ScaleByAdamState), ("rmsprop", optax.ScaleByRStdDevState)):
        state = trained[name]
        (moments,) = leaves_of(state.opt_state, kind)
        fields = [getattr(moments, f) for f in ("mu", "nu") if hasattr(moments, f)]
        squares = [np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(fields)]
        assert len(squares) == 2 * len(jax.tree.leaves(state.params))
        norm = float(jax.jit(sequence.optimizer_moments_norm)(state))
        np.testing.assert_allclose(norm, np.sqrt(sum(squares)), rtol=1e-6, err_msg=name)


def test_a_block_start_at_the_runs_end_is_no_schedule_boundary():
    """Block starts at 0 and at the total update count open no segment of the restarted
    schedule: starts [0, 40, 80] of an 80-update run give the one boundary 40 (not a last,
    empty segment, which the warm-up check would refuse)."""
    config = optimizer_config("adam", nap=False)
    restarted = sequence.restarted_schedule_config(config, [0, 40, 80], 80)
    assert restarted.schedule.boundaries == (40,)
    assert restarted.schedule.total_steps == 80
    assert float(optimizer_learning_rate(restarted, 40)) == pytest.approx(1e-8, rel=1e-5)


def test_the_evaluation_matrix_averages_finite_seeds_and_the_fresh_references_seeds():
    """A seed whose score is NaN (no episode ended) is left out of its cell, its visit score and
    its fresh reference; the other seeds are averaged: cell (block 0, a) over seeds 0 and 2 is
    2.0, b's fresh reference over seeds 0 and 1 is 4.0."""
    blocks = sequence.make_schedule(["a", "b"], 10)
    cell = {"event": "eval", "end_of_block": True}
    a_0 = {**cell, "block": 0, "game": "a", "trained_game": "a", "visit": 1}
    a_1 = {**cell, "block": 1, "game": "a", "trained_game": "b", "visit": 1}
    b_1 = {**cell, "block": 1, "game": "b", "trained_game": "b", "visit": 1}
    fresh = {"event": "eval_fresh", "game": "b", "frames": 10}
    rows = [
        {**a_0, "seed": 0, "return_mean": 1.0},
        {**a_0, "seed": 1, "return_mean": float("nan")},
        {**a_0, "seed": 2, "return_mean": 3.0},
        {**a_1, "seed": 0, "return_mean": 1.5},
        {**b_1, "seed": 0, "return_mean": 6.0},
        {**fresh, "seed": 0, "return_mean": 3.0},
        {**fresh, "seed": 1, "return_mean": 5.0},
        {**fresh, "seed": 2, "return_mean": float("nan")},
    ]
    summary = evaluation_matrix.evaluation_matrix_summary(blocks, rows)
    assert summary["return_mean"] == [[2.0, None], [1.5, 6.0]]
    assert summary["fresh"] == {"b": {"return_mean": 4.0, "frames": 10}}
    assert summary["visit_scores"] == {
        "a": {"visit_1": 2.0},
        "b": {"visit_1": 6.0, "fresh": 4.0},
    }
