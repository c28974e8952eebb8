"""Tests of the on-device replay against a NumPy reference built from the full (never overwritten) timeline.

Frames encode (env, episode, time in episode, global step) in their pixels, so a stack that mixes two
episodes, a frame read from an overwritten slot, or missing zero padding is caught by exact comparison.
"""

import collections
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.replay import (
    ReplayState,
    replay_add,
    replay_end_episodes,
    replay_init,
    replay_memory_bytes,
    replay_num_valid,
    replay_sample,
    replay_transitions,
    replay_update_priorities,
)
from agents.sum_tree import sum_tree_from_leaves, sum_tree_leaves
from benchmarks import op_profile

FRAME_SHAPE = (4, 4)
NUM_ENVS = 2
SLOTS_PER_ENV = 32
CAPACITY = NUM_ENVS * SLOTS_PER_ENV
STACK = 3
MAX_N = 3
ALPHA = 0.5
GAMMA = 0.9
BATCH = 64  # one batch size everywhere, so each jitted function compiles once
FIRST_REWARD, FIRST_DISCOUNT = 1000.0, 0.37  # meaningless at first timesteps: must never be read

add = jax.jit(replay_add)
update_priorities = jax.jit(replay_update_priorities)
transitions = jax.jit(replay_transitions, static_argnames=("n_step",))
_sample = jax.jit(replay_sample, static_argnums=(2, 3, 5))


def sample(state, key, prioritized=False, beta=1.0):
    """A batch of BATCH MAX_N-step transitions; always called the same way so it compiles once per mode."""
    return _sample(state, key, BATCH, MAX_N, GAMMA, prioritized, beta)


class Timeline(NamedTuple):
    """What the env adapter produced, step-major: scalars (steps, num_envs), frames (steps, num_envs, H, W)."""

    frame: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def step(self, t: int) -> tuple:
        return tuple(field[t] for field in self)


def make_timeline(seed: int, num_envs: int, steps: int, max_episode_length: int = 8) -> Timeline:
    """Random episodes with terminations, truncations and mid-episode life-loss zero discounts."""
    rng = np.random.default_rng(seed)
    shape = (steps, num_envs)
    frame = np.zeros(shape + FRAME_SHAPE, np.uint8)
    action = rng.integers(0, 6, size=shape).astype(np.int32)
    reward = rng.integers(-3, 4, size=shape).astype(np.float32)
    discount = np.where(rng.random(shape) < 0.15, 0.0, 1.0).astype(np.float32)
    first = np.zeros(shape, bool)
    last = np.zeros(shape, bool)
    for env in range(num_envs):
        episode, time_in_episode, length = 0, 0, 0
        for t in range(steps):
            if time_in_episode == 0:
                length = int(rng.integers(1, max_episode_length + 1))
                first[t, env] = True
                reward[t, env], discount[t, env] = FIRST_REWARD, FIRST_DISCOUNT
            if time_in_episode == length - 1:
                last[t, env] = True
                truncated = rng.random() < 0.4
                if not first[t, env]:
                    discount[t, env] = 1.0 if truncated else 0.0
            frame[t, env] = t % 250 + 1
            frame[t, env, 0, :3] = (env + 1, episode % 250 + 1, time_in_episode % 250 + 1)
            time_in_episode += 1
            if last[t, env]:
                episode, time_in_episode = episode + 1, 0
    return Timeline(frame, action, reward, discount, first, last)


def fill(state: ReplayState, timeline: Timeline, start: int, stop: int) -> ReplayState:
    for t in range(start, stop):
        state = add(state, *timeline.step(t))
    return state


def global_time(slot: int, steps_added: int, slots_per_env: int = SLOTS_PER_ENV) -> int:
    """Global step held by ``slot`` after ``steps_added`` adds (written slots are the last min(steps, T))."""
    oldest = steps_added - min(steps_added, slots_per_env)
    return oldest + (slot - oldest) % slots_per_env


def reference_valid(
    tl: Timeline, env: int, g: int, steps_added: int, stack: int, n_step: int
) -> bool:
    oldest = steps_added - min(steps_added, SLOTS_PER_ENV)
    if tl.last[g, env]:
        return False
    for j in range(1, n_step + 1):
        if g + j >= steps_added:
            return False
        if tl.last[g + j, env]:
            break
    earliest_needed = g
    while earliest_needed > g - stack + 1 and not tl.first[earliest_needed, env]:
        earliest_needed -= 1
    return earliest_needed >= oldest


def reference_valid_mask(
    tl: Timeline, steps_added: int, stack: int = STACK, n_step: int = MAX_N
) -> np.ndarray:
    """(num_envs * slots_per_env,) validity of every slot, flat index env * slots_per_env + slot."""
    mask = np.zeros((tl.first.shape[1], SLOTS_PER_ENV), bool)
    for env in range(mask.shape[0]):
        for slot in range(min(steps_added, SLOTS_PER_ENV)):
            mask[env, slot] = reference_valid(
                tl, env, global_time(slot, steps_added), steps_added, stack, n_step
            )
    return mask.reshape(-1)


def reference_stack(tl: Timeline, env: int, g: int, stack: int = STACK) -> np.ndarray:
    frames, keep = [], True
    for i in range(stack):
        if i > 0 and tl.first[g - i + 1, env]:
            keep = False
        frames.append(tl.frame[g - i, env] if keep else np.zeros(FRAME_SHAPE, np.uint8))
    return np.stack(frames[::-1], axis=-1)


def reference_transition(tl: Timeline, env: int, g: int, n_step: int, gamma: float) -> dict:
    n_step_return, scale, k = 0.0, 1.0, 0
    for j in range(1, n_step + 1):
        n_step_return += scale * float(tl.reward[g + j, env])
        scale *= gamma * float(tl.discount[g + j, env])
        k = j
        if tl.last[g + j, env]:
            break
    return dict(
        obs_tm1=reference_stack(tl, env, g),
        a_tm1=tl.action[g, env],
        r_t=n_step_return,
        discount_t=scale,
        obs_t=reference_stack(tl, env, g + k),
    )


def check_batch_against_reference(tl, steps_added, batch, indices, n_step, gamma):
    for b, index in enumerate(np.asarray(indices)):
        env, slot = divmod(int(index), SLOTS_PER_ENV)
        expected = reference_transition(tl, env, global_time(slot, steps_added), n_step, gamma)
        np.testing.assert_array_equal(batch["obs_tm1"][b], expected["obs_tm1"])
        np.testing.assert_array_equal(batch["obs_t"][b], expected["obs_t"])
        assert int(batch["a_tm1"][b]) == expected["a_tm1"]
        np.testing.assert_allclose(float(batch["r_t"][b]), expected["r_t"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            float(batch["discount_t"][b]), expected["discount_t"], rtol=1e-6, atol=1e-7
        )


def empty_replay(**overrides) -> ReplayState:
    settings = dict(
        capacity=CAPACITY,
        num_envs=NUM_ENVS,
        frame_shape=FRAME_SHAPE,
        stack_size=STACK,
        max_n_step=MAX_N,
        priority_exponent=ALPHA,
    )
    settings.update(overrides)
    return replay_init(**settings)


TOTAL_STEPS = 3 * SLOTS_PER_ENV + 7  # wraps around three times


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return make_timeline(seed=0, num_envs=NUM_ENVS, steps=TOTAL_STEPS)


@pytest.fixture(scope="module")
def history(timeline):
    """The replay after each add: history[s] has seen s timesteps per env."""
    states = [empty_replay()]
    for t in range(TOTAL_STEPS):
        states.append(add(states[-1], *timeline.step(t)))
    return states


@pytest.fixture(scope="module")
def full_state(history):
    return history[-1]


# ---------------------------------------------------------------------------------------------- sizes


def test_one_million_atari_transitions_fit_in_8_gib():
    num_bytes = replay_memory_bytes(1_000_000, (84, 84), num_envs=4)
    frame_bytes = 1_000_000 * 84 * 84
    assert frame_bytes <= num_bytes <= 8 * 2**30
    assert num_bytes < 1.01 * frame_bytes  # each frame stored once, bookkeeping is small


def test_memory_bytes_equals_allocated_state():
    state = empty_replay()
    allocated = sum(x.nbytes for x in jax.tree.leaves(state))
    assert replay_memory_bytes(CAPACITY, FRAME_SHAPE, NUM_ENVS, STACK, MAX_N) == allocated


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(capacity=65), "multiple of num_envs"),
        (dict(capacity=12), "too small"),
        (dict(frame_shape=(4, 0)), "frame_shape"),
        (dict(stack_size=0), "stack_size"),
        (dict(num_envs=0), "num_envs"),
        (dict(priority_exponent=-1.0), "priority_exponent"),
    ],
)
def test_init_rejects_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        empty_replay(**overrides)


def test_numpy_integer_sizes_are_accepted_like_python_ints(full_state):
    """Sizes read from NumPy arrays or configs (np.int64) pass the replay's checks, so they must
    work through to the sum tree: same replay, same sample."""
    from_numpy = empty_replay(capacity=np.int64(CAPACITY), num_envs=np.int64(NUM_ENVS))
    assert jax.tree.structure(from_numpy) == jax.tree.structure(empty_replay())
    key = jax.random.key(3)
    batch, info = replay_sample(full_state, key, np.int64(8), MAX_N, GAMMA)
    expected, expected_info = replay_sample(full_state, key, 8, MAX_N, GAMMA)
    np.testing.assert_array_equal(info.indices, expected_info.indices)
    np.testing.assert_array_equal(batch["obs_t"], expected["obs_t"])


def test_add_rejects_wrong_shapes(timeline):
    frame, *rest = timeline.step(0)
    with pytest.raises(ValueError, match="frame must have shape"):
        replay_add(empty_replay(), frame[:, :2], *rest)
    with pytest.raises(ValueError, match="exceeds the replay's max_n_step"):
        replay_sample(empty_replay(), jax.random.key(0), 4, MAX_N + 1, GAMMA)


# ------------------------------------------------------------------------------------------ validity


def test_validity_matches_reference_at_every_fill_level_and_after_wrap_around(timeline, history):
    for steps_added, state in enumerate(history):
        expected = reference_valid_mask(timeline, steps_added)
        valid = np.asarray(sum_tree_leaves(state.valid_tree)) > 0
        np.testing.assert_array_equal(valid, expected, err_msg=f"after {steps_added} adds")
        np.testing.assert_array_equal(
            sum_tree_leaves(state.priority_tree), expected.astype(np.float32)
        )
        assert int(replay_num_valid(state)) == expected.sum()
        # Counted in place (one scatter-add an add), the tree is exactly the one its leaves build.
        rebuilt = sum_tree_from_leaves(expected.astype(np.float32))
        np.testing.assert_array_equal(state.valid_tree.nodes, rebuilt.nodes)


def test_only_valid_slots_are_sampled_when_barely_filled(timeline, history):
    checked = 0
    for steps_added, state in enumerate(history[: 2 * (STACK + MAX_N) + 1]):
        valid = reference_valid_mask(timeline, steps_added)
        if not valid.any():
            continue
        for prioritized in (False, True):
            _, info = sample(state, jax.random.key(steps_added), prioritized)
            assert valid[np.asarray(info.indices)].all(), steps_added
        checked += 1
    assert checked >= STACK + MAX_N


# --------------------------------------------------------------------------------------- transitions


def test_sampled_transitions_match_reference_after_wrap_around(timeline, full_state):
    for seed in range(2):
        batch, info = sample(full_state, jax.random.key(seed))
        assert batch["obs_tm1"].shape == (BATCH,) + FRAME_SHAPE + (STACK,)
        assert batch["obs_tm1"].dtype == jnp.uint8
        assert batch["r_t"].dtype == jnp.float32 and batch["a_tm1"].dtype == jnp.int32
        check_batch_against_reference(timeline, TOTAL_STEPS, batch, info.indices, MAX_N, GAMMA)


def test_shorter_n_step_than_max_matches_reference(timeline, full_state):
    _, info = sample(full_state, jax.random.key(1))
    batch = transitions(full_state, info.indices, 1, GAMMA)
    check_batch_against_reference(timeline, TOTAL_STEPS, batch, info.indices, 1, GAMMA)


def test_every_valid_slot_of_a_partly_filled_replay_matches_reference(timeline, history):
    steps_added = SLOTS_PER_ENV - 5
    indices = np.flatnonzero(reference_valid_mask(timeline, steps_added))
    assert indices.size <= BATCH
    indices = np.resize(indices, BATCH)  # padded by repetition to the one compiled batch size
    batch = transitions(history[steps_added], indices, MAX_N, GAMMA)
    check_batch_against_reference(timeline, steps_added, batch, indices, MAX_N, GAMMA)


def _decode(frame: np.ndarray) -> tuple[int, int, int]:
    return (
        int(frame[0, 0]),
        int(frame[0, 1]),
        int(frame[0, 2]),
    )  # env, episode, time in episode (+1 each)


def _check_stack_is_one_episode(stack: np.ndarray) -> tuple[int, int, int]:
    frames = [stack[..., c] for c in range(stack.shape[-1])]
    padded = [not f.any() for f in frames]
    num_padding = sum(padded)
    assert padded == [True] * num_padding + [False] * (len(frames) - num_padding), (
        "padding must lead"
    )
    codes = [_decode(f) for f in frames[num_padding:]]
    env, episode, newest_time = codes[-1]
    assert all(c[:2] == (env, episode) for c in codes), f"stack mixes episodes: {codes}"
    assert [c[2] for c in codes] == list(range(newest_time - len(codes) + 1, newest_time + 1))
    assert num_padding == max(0, STACK - newest_time), (
        "zero frames exactly before the episode start"
    )
    return env, episode, newest_time


def test_stacks_never_mix_episodes_and_are_zero_padded_at_episode_starts(full_state):
    batches = [sample(full_state, jax.random.key(seed))[0] for seed in range(8)]
    obs_tm1 = np.concatenate([b["obs_tm1"] for b in batches])
    obs_t = np.concatenate([b["obs_t"] for b in batches])
    padded_starts = 0
    for b in range(obs_tm1.shape[0]):
        env, episode, time_tm1 = _check_stack_is_one_episode(obs_tm1[b])
        env_t, episode_t, time_t = _check_stack_is_one_episode(obs_t[b])
        assert (env_t, episode_t) == (env, episode)
        assert 1 <= time_t - time_tm1 <= MAX_N
        padded_starts += time_tm1 < STACK
    assert padded_starts > 0  # the check above saw zero padding


def test_hand_computed_returns_at_life_loss_termination_and_truncation():
    # t:        0     1    2    3    4    5     6    7    8     9   10   11   12
    first = [1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    last = [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    reward = [FIRST_REWARD, 1, 2, 4, 8, FIRST_REWARD, 1, 2, FIRST_REWARD, 1, 1, 1, 1]
    discount = [FIRST_DISCOUNT, 1, 0, 1, 0, FIRST_DISCOUNT, 1, 1, FIRST_DISCOUNT, 1, 1, 1, 1]
    # t=2 is a life loss (zero discount, episode goes on); t=4 terminates; t=7 truncates (discount 1).
    state = empty_replay()  # both envs get this timeline; stack 3, n up to 3
    for t in range(len(first)):
        per_env = lambda value, dtype: np.full((NUM_ENVS,), value, dtype)
        state = add(
            state,
            np.full((NUM_ENVS,) + FRAME_SHAPE, t + 1, np.uint8),
            per_env(10 + t, np.int32),
            per_env(reward[t], np.float32),
            per_env(discount[t], np.float32),
            per_env(first[t], bool),
            per_env(last[t], bool),
        )
    valid = (np.asarray(sum_tree_leaves(state.valid_tree)) > 0).reshape(NUM_ENVS, SLOTS_PER_ENV)
    for env in range(NUM_ENVS):
        np.testing.assert_array_equal(
            np.flatnonzero(valid[env]), [0, 1, 2, 3, 5, 6, 8, 9]
        )  # 10..12: window open

    slots = np.array([0, 1, 2, 3, 5, 6, 8, 9])
    indices = np.resize(
        np.concatenate([slots, slots + SLOTS_PER_ENV]), BATCH
    )  # the one compiled batch size
    batch = {k: np.asarray(v)[:16] for k, v in transitions(state, indices, MAX_N, 0.5).items()}
    for name, value in batch.items():  # env 1 saw the same timeline
        np.testing.assert_array_equal(value[8:], value[:8], err_msg=name)
    batch = {k: v[:8] for k, v in batch.items()}
    np.testing.assert_array_equal(batch["a_tm1"], [10, 11, 12, 13, 15, 16, 18, 19])
    # 0: 1 + .5*2 + .25*0*4 | 1: 2 + .5*0*4 | 2: 4 + .5*8 (ends at 4) | 3: 8 | 5: 1 + .5*2 (ends at 7)
    # 6: 2 | 8: 1 + .5 + .25 | 9: same
    np.testing.assert_allclose(batch["r_t"], [2.0, 2.0, 8.0, 8.0, 2.0, 2.0, 1.75, 1.75])
    np.testing.assert_allclose(batch["discount_t"], [0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 0.125, 0.125])
    newest_pixels = lambda obs: np.asarray(obs)[:, 0, 0, :]  # frame value = t + 1, 0 = padding
    np.testing.assert_array_equal(
        newest_pixels(batch["obs_tm1"]),
        [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 0, 6], [0, 6, 7], [0, 0, 9], [0, 9, 10]],
    )
    np.testing.assert_array_equal(
        newest_pixels(batch["obs_t"]),
        [
            [2, 3, 4],
            [3, 4, 5],
            [3, 4, 5],
            [3, 4, 5],
            [6, 7, 8],
            [6, 7, 8],
            [10, 11, 12],
            [11, 12, 13],
        ],
    )


def test_frames_with_channels_stack_oldest_first_along_channels():
    state = replay_init(16, 1, (3, 3, 2), stack_size=2, max_n_step=1)
    for t in range(4):
        frame = np.stack([np.full((3, 3), 10 * t + 1), np.full((3, 3), 10 * t + 2)], -1)[
            None
        ].astype(np.uint8)
        flags = np.array([t == 0]), np.array([False])
        state = add(state, frame, np.zeros(1, np.int32), np.ones(1), np.ones(1), *flags)
    batch = transitions(state, jnp.array([0, 2]), 1, 0.9)
    assert batch["obs_tm1"].shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(batch["obs_tm1"][:, 1, 1], [[0, 0, 1, 2], [11, 12, 21, 22]])
    np.testing.assert_array_equal(batch["obs_t"][:, 1, 1], [[1, 2, 11, 12], [21, 22, 31, 32]])


# -------------------------------------------------------------------------------------- priorities


@pytest.fixture(scope="module")
def planted(timeline, full_state):
    """The full replay with priorities spanning twelve orders of magnitude on its valid slots."""
    valid = np.flatnonzero(reference_valid_mask(timeline, TOTAL_STEPS))
    priorities = np.exp(np.random.default_rng(3).uniform(-14, 14, size=valid.size)).astype(
        np.float32
    )
    return update_priorities(full_state, valid, priorities), valid, priorities


def _sample_counts(state, prioritized: bool, num_batches: int = 200) -> np.ndarray:
    keys = jax.random.split(jax.random.key(7), num_batches)
    indices = [sample(state, k, prioritized)[1].indices for k in keys]
    return np.bincount(np.asarray(indices).ravel(), minlength=CAPACITY)


def _chi_square_ok(counts: np.ndarray, expected: np.ndarray) -> bool:
    chi_square = np.sum((counts - expected) ** 2 / expected)
    dof = expected.size - 1
    return chi_square < dof + 6 * np.sqrt(2 * dof)


def test_uniform_mode_ignores_planted_priorities(planted):
    state, valid, _ = planted
    counts = _sample_counts(state, prioritized=False)
    assert counts.sum() == counts[valid].sum()
    assert _chi_square_ok(counts[valid], np.full(valid.size, counts.sum() / valid.size))
    _, info = sample(state, jax.random.key(0), False, 0.4)
    np.testing.assert_array_equal(info.weights, np.ones(BATCH, np.float32))
    np.testing.assert_allclose(info.probabilities, 1.0 / valid.size, rtol=1e-6)


def test_prioritized_mode_follows_planted_priorities(planted):
    state, valid, priorities = planted
    counts = _sample_counts(state, prioritized=True)
    assert counts.sum() == counts[valid].sum()
    probabilities = priorities.astype(np.float64) ** ALPHA
    probabilities /= probabilities.sum()
    significant = (
        probabilities * counts.sum() >= 5
    )  # chi-square over cells with enough expected draws
    assert _chi_square_ok(counts[valid][significant], probabilities[significant] * counts.sum())
    assert not _chi_square_ok(counts[valid], np.full(valid.size, counts.sum() / valid.size))


def test_importance_weights_match_formula(planted):
    state, valid, priorities = planted
    beta = 0.4
    _, info = sample(state, jax.random.key(11), True, beta)
    leaf = np.zeros(CAPACITY)
    leaf[valid] = priorities.astype(np.float64) ** ALPHA
    probabilities = leaf[np.asarray(info.indices)] / leaf.sum()
    weights = (valid.size * probabilities) ** -beta
    np.testing.assert_allclose(info.probabilities, probabilities, rtol=1e-5)
    np.testing.assert_allclose(info.weights, weights / weights.max(), rtol=1e-5)


def test_new_items_get_the_max_priority_seen(timeline, planted):
    state, valid, priorities = planted
    max_priority = float(priorities.max())
    assert float(state.max_priority) == max_priority
    more = make_timeline(seed=5, num_envs=NUM_ENVS, steps=10)
    state = fill(state, more, 0, 10)
    leaves = np.asarray(sum_tree_leaves(state.priority_tree))
    recent = np.arange(TOTAL_STEPS, TOTAL_STEPS + 10 - MAX_N) % SLOTS_PER_ENV
    recent = np.concatenate([recent + env * SLOTS_PER_ENV for env in range(NUM_ENVS)])
    now_valid = recent[np.asarray(sum_tree_leaves(state.valid_tree))[recent] > 0]
    assert now_valid.size > 0
    np.testing.assert_allclose(leaves[now_valid], max_priority**ALPHA, rtol=1e-6)


def test_update_priorities_last_duplicate_wins_and_invalid_slots_stay_unsampleable(
    timeline, full_state
):
    valid = reference_valid_mask(timeline, TOTAL_STEPS)
    a, b = np.flatnonzero(valid)[:2]
    invalid = np.flatnonzero(~valid)[0]
    indices, priorities = np.array([a, b, a, invalid]), np.array([4.0, 9.0, 16.0, 1e6], np.float32)
    state = update_priorities(full_state, indices, priorities)
    leaves = np.asarray(sum_tree_leaves(state.priority_tree))
    np.testing.assert_allclose(leaves[[a, b, invalid]], [4.0, 3.0, 0.0])
    _, info = sample(state, jax.random.key(0), True)
    assert valid[np.asarray(info.indices)].all()


# ---------------------------------------------------------------------------------------- vmap, rng


@pytest.mark.parametrize("keep_priorities", [False, True])
def test_an_add_writes_validity_in_one_scatter_add_and_never_sorts(timeline, keep_priorities):
    """What a GPU runs as separate kernels: an add's validity update is one scatter-add (not a
    gather and a scatter per tree level), and repeated slots are resolved without a sort."""
    state = empty_replay(keep_priorities=keep_priorities)
    jaxpr = jax.make_jaxpr(replay_add)(state, *timeline.step(0)).jaxpr
    counts = collections.Counter(eqn.primitive.name for eqn, _ in op_profile.jaxpr_equations(jaxpr))
    assert counts.get("sort", 0) == 0
    assert counts.get("scatter-add", 0) == 1
    levels = state.priority_tree.num_levels
    assert counts.get("scatter", 0) == (levels + 1 if keep_priorities else 0)


def test_a_replay_without_priorities_keeps_and_samples_the_same_transitions(timeline, history):
    """keep_priorities=False skips the priority tree at every add (a uniform learner's replay):
    everything else, and so every uniform sample, is what the full replay holds."""
    state = empty_replay(keep_priorities=False)
    for t in range(TOTAL_STEPS):
        state = add(state, *timeline.step(t))
    full = history[-1]
    for name in ("frames", "action", "reward", "discount", "first", "last", "head", "size"):
        np.testing.assert_array_equal(getattr(state, name), getattr(full, name), err_msg=name)
    np.testing.assert_array_equal(state.valid_tree.nodes, full.valid_tree.nodes)
    assert not np.asarray(state.priority_tree.nodes).any()  # never written
    assert np.asarray(full.priority_tree.nodes).any()
    for seed in range(3):
        key = jax.random.key(seed)
        ours, reference = sample(state, key), sample(full, key)
        np.testing.assert_array_equal(ours[1].indices, reference[1].indices)
        for name in reference[0]:
            np.testing.assert_array_equal(ours[0][name], reference[0][name], err_msg=name)
    with pytest.raises(ValueError, match="keep_priorities=True"):
        sample(state, jax.random.key(0), True)
    with pytest.raises(ValueError, match="keep_priorities=True"):
        replay_update_priorities(state, jnp.zeros((2,), jnp.int32), jnp.ones((2,)))


def test_vmap_over_seeds_in_scan_equals_separate_calls_and_same_rng_gives_same_sample():
    steps = SLOTS_PER_ENV + 9
    timelines = [make_timeline(seed, NUM_ENVS, steps) for seed in (21, 22)]
    seeds_timeline = tuple(
        np.stack(fields, axis=1) for fields in zip(*timelines)
    )  # (steps, seeds, envs, ...)

    @jax.jit
    def add_all_in_scan(state, timesteps):
        return jax.lax.scan(lambda s, x: (jax.vmap(replay_add)(s, *x), None), state, timesteps)[0]

    sample_seeds = jax.jit(
        jax.vmap(lambda s, k: replay_sample(s, k, BATCH, MAX_N, GAMMA, True, 0.5))
    )
    seeds_state = add_all_in_scan(
        jax.tree.map(lambda x: jnp.stack([x, x]), empty_replay()), seeds_timeline
    )
    keys = jax.random.split(jax.random.key(4), 2)
    batches, infos = sample_seeds(seeds_state, keys)

    for seed, tl in enumerate(timelines):
        single = fill(empty_replay(), tl, 0, steps)
        jax.tree.map(lambda v, s: np.testing.assert_array_equal(v[seed], s), seeds_state, single)
        batch, info = sample(single, keys[seed], True, 0.5)
        again, info_again = sample(single, keys[seed], True, 0.5)
        for name in batch:
            np.testing.assert_array_equal(batches[name][seed], batch[name])
            np.testing.assert_array_equal(again[name], batch[name])
        for vmapped, separate, repeated in zip(infos, info, info_again):
            np.testing.assert_array_equal(vmapped[seed], separate)
            np.testing.assert_array_equal(repeated, separate)
        check_batch_against_reference(tl, steps, batch, info.indices, MAX_N, GAMMA)
    assert not np.array_equal(batches["obs_tm1"][0], batches["obs_tm1"][1])


def test_orbax_checkpoint_round_trip_is_bit_identical(full_state, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "replay", full_state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "replay", full_state)
    assert isinstance(restored, ReplayState) and restored.stack_size == STACK
    jax.tree.map(np.testing.assert_array_equal, restored, full_state)
    key = jax.random.key(9)
    jax.tree.map(
        np.testing.assert_array_equal, sample(restored, key, True), sample(full_state, key, True)
    )


# ---------------------------------------------------------------------------- edge cases


def test_new_items_keep_the_largest_priority_ever_seen_after_smaller_updates(planted):
    """New items get the max priority *seen*, not the max of the last update: a batch of small
    TD errors must not demote every item added after it."""
    state, valid, priorities = planted
    state = update_priorities(state, valid[:2], np.array([1e-3, 2e-3], np.float32))
    assert float(state.max_priority) == float(priorities.max())


def test_a_priority_exponent_of_zero_is_uniform_prioritized_replay(timeline):
    """alpha = 0 is the documented lower end (every valid slot weighs 1): accepted, and the
    priority tree's leaves are exactly the validity's."""
    state = fill(empty_replay(priority_exponent=0.0), timeline, 0, 12)
    np.testing.assert_array_equal(
        sum_tree_leaves(state.priority_tree), sum_tree_leaves(state.valid_tree)
    )


def test_a_replay_started_mid_episode_samples_a_stack_once_its_frames_are_all_written():
    """The first timestep added need not be `first` (a replay begun inside an episode): slot
    STACK - 1 has all STACK frames of its stack written and is valid once its n-step window is,
    as the reference says; only the slots before it lack frames."""
    tl = make_timeline(seed=0, num_envs=NUM_ENVS, steps=STACK + MAX_N)
    tl.first[:] = tl.last[:] = False  # one episode, begun before the replay, still running
    state = fill(empty_replay(), tl, 0, STACK + MAX_N)
    valid = reference_valid_mask(tl, STACK + MAX_N)
    assert valid.sum() == NUM_ENVS and valid.reshape(NUM_ENVS, SLOTS_PER_ENV)[:, STACK - 1].all()
    np.testing.assert_array_equal(np.asarray(sum_tree_leaves(state.valid_tree)) > 0, valid)


def test_importance_weights_and_stored_priorities_are_exact(timeline, full_state):
    """Priorities from 0.01 to 4, where an offset of 1e-6 is at least two float32 ulps: the replay
    stores each raw priority bit for bit and its tree leaf is priority ** α (to 1e-6 of
    float64), invalid slots 0; a prioritized sample's probabilities are leaf / total and its
    importance weights (N P)^-β / max over the batch, both to 1e-6 of a float64 reference."""
    valid = np.flatnonzero(reference_valid_mask(timeline, TOTAL_STEPS))
    rng = np.random.default_rng(12)
    priorities = np.exp(rng.uniform(np.log(0.01), np.log(4.0), valid.size)).astype(np.float32)
    state = update_priorities(full_state, valid, priorities)
    np.testing.assert_array_equal(np.asarray(state.priority).reshape(-1)[valid], priorities)
    leaves = np.asarray(sum_tree_leaves(state.priority_tree)).astype(np.float64)
    expected = np.zeros(CAPACITY)
    expected[valid] = priorities.astype(np.float64) ** ALPHA
    np.testing.assert_allclose(leaves, expected, rtol=1e-6, atol=0)
    beta = 0.4
    _, info = sample(state, jax.random.key(13), True, beta)
    probabilities = leaves[np.asarray(info.indices)] / leaves.sum()
    weights = (valid.size * probabilities) ** -beta
    np.testing.assert_allclose(info.probabilities, probabilities, rtol=1e-6)
    np.testing.assert_allclose(info.weights, weights / weights.max(), rtol=1e-6)
    assert weights.min() < 0.5 * weights.max()  # the batch's weights are far from uniform


def test_ending_the_episodes_gives_newly_valid_slots_their_priority_in_the_tree():
    """`replay_end_episodes` marks each env's newest timestep last, so the slots whose n-step
    window was still open become valid: their priority-tree leaves must become valid ·
    priority ** α (here the max priority 9 they were added with: leaf 3), every other leaf
    stays valid · priority ** α, and the tree is the one its leaves build."""
    state = empty_replay()
    frames = np.zeros((NUM_ENVS,) + FRAME_SHAPE, np.uint8)
    ones, no = np.ones(NUM_ENVS, np.float32), np.zeros(NUM_ENVS, bool)
    actions = np.zeros(NUM_ENVS, np.int32)
    for t in range(12):  # one running episode per env
        state = add(state, frames + t, actions, ones, ones, np.full(NUM_ENVS, t == 0), no)
    valid_before = np.flatnonzero(np.asarray(sum_tree_leaves(state.valid_tree)) > 0)
    raised = np.linspace(0.5, 9.0, valid_before.size).astype(np.float32)
    state = update_priorities(state, valid_before, raised)
    for t in range(12, 16):  # added at the max priority, 9
        state = add(state, frames + t, actions, ones, ones, no, no)
    before = np.asarray(sum_tree_leaves(state.valid_tree)) > 0
    ended = jax.jit(replay_end_episodes)(state)
    valid = np.asarray(sum_tree_leaves(ended.valid_tree)) > 0
    newly_valid = np.flatnonzero(valid & ~before)
    # The MAX_N - 1 slots before each env's newest one, whose windows reached past it (the
    # newest is now last, so invalid).
    np.testing.assert_array_equal(newly_valid % SLOTS_PER_ENV, [13, 14] * NUM_ENVS)
    priority = np.asarray(ended.priority, np.float64).reshape(-1)
    np.testing.assert_array_equal(priority[newly_valid], 9.0)
    leaves = np.asarray(sum_tree_leaves(ended.priority_tree))
    np.testing.assert_allclose(leaves, np.where(valid, priority**ALPHA, 0.0), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(leaves[newly_valid], 3.0)
    np.testing.assert_array_equal(ended.priority_tree.nodes, sum_tree_from_leaves(leaves).nodes)


def test_a_sample_holds_the_trees_stratified_draw_in_ascending_order(full_state):
    """`replay_sample` sorts the drawn indices (so that they are computed once, not inside every
    gather that reads them): on a count tree, whose stratified draw is ascending already, it
    returns exactly the tree's draw, uniform or prioritized, with each index's transition."""
    from agents.sum_tree import sum_tree_sample  # noqa: PLC0415

    for prioritized in (False, True):
        key = jax.random.key(21)
        batch, info = sample(full_state, key, prioritized)
        tree = full_state.priority_tree if prioritized else full_state.valid_tree
        drawn = np.asarray(sum_tree_sample(tree, key, BATCH, counts=not prioritized))
        indices = np.asarray(info.indices)
        assert np.all(np.diff(indices) >= 0)
        np.testing.assert_array_equal(indices, np.sort(drawn))
        own = replay_transitions(full_state, indices, MAX_N, GAMMA)
        for name, values in own.items():
            np.testing.assert_array_equal(batch[name], values, err_msg=name)
