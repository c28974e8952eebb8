"""Throughput of the Atari agent: environments, learner, and the actor-learner loop end to end.

Usage::

    python -m benchmarks.atari_throughput [--agent=dqn] [--game=Pong] [--num_envs=8] \\
        [--loop_frames=16384] [--updates=50] [--torso=nature]

Prints, with compile times apart (all rates exclude compilation):

* env only: N emulators stepped with send/recv and random actions, frames/s;
* learner only: the compiled learn step (replay sample -> update -> new priorities) on a full
  replay of synthetic frames, updates/s, and what that bounds: updates/s x frames per update;
  measured before and after each loop below and averaged, since a shared machine's load drifts;
* end to end: `agents.atari_loop.train` with N envs at the preset's replay ratio (DQN: one update
  per 16 frames), frames/s measured by the loop's own log rows once learning runs, against
  0.85 x the learner bound (the overlap target on a CPU, where the learner is the bottleneck);
* the classic design: one env, stepped then learned from one after the other on the host,
  frames/s, and its fraction of the learner bound; and its agent step taken apart, each part
  waited for: acting (the jitted policy), env (one agent step of the emulator), replay add, the
  learner (its share of the updates) and the host's own work (the rest);
* the learner's achieved FLOP/s (XLA's cost analysis of the compiled step x updates/s) against a
  plain float32 matrix product on the same device;
* the replay's memory for 1M transitions of 84x84 frames (frames stored once);
* with ``--top_ops=N``, the N XLA operations that take the most time in one learn step, traced
  (`benchmarks.op_profile`), each named by the JAX operation it came from.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from agents import atari_loop, configs
from agents.atari_env import make_atari_env, minimal_action_names
from agents.replay import replay_memory_bytes
from benchmarks import timing
from plasticity import runtime, workdir


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_enum("agent", "dqn", list(configs.AGENTS), "Agent preset (replay ratio).")
    flags.DEFINE_string("game", "Pong", "Atari game.")
    flags.DEFINE_integer("num_envs", 8, "Emulators stepped together.", lower_bound=1)
    flags.DEFINE_enum("torso", "nature", list(configs.TORSOS), "Q-network torso.")
    flags.DEFINE_integer(
        "loop_frames",
        16_384,
        "Frames of the end-to-end run (at least twice the replay's fill: 256 x --num_envs).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "classic_frames", 4_096, "Frames of the one-env loop (at least 304).", lower_bound=1
    )
    flags.DEFINE_integer(
        "env_steps", 500, "Batched steps of the env-only measurement.", lower_bound=1
    )
    flags.DEFINE_integer("updates", 50, "Updates of the learner-only measurement.", lower_bound=1)
    flags.DEFINE_integer(
        "matmul_size", 2048, "Side of the reference matrix product.", lower_bound=1
    )
    flags.DEFINE_integer(
        "top_ops",
        0,
        "Also print the N XLA operations of a learn step that take the most time.",
        lower_bound=0,
    )


def benchmark_config() -> ml_collections.ConfigDict:
    """The preset with a small replay, learning from the start, and next to no evaluation."""
    config = configs.get_config(FLAGS.agent)
    config.network.torso = FLAGS.torso
    config.env.num_envs = FLAGS.num_envs
    config.replay.capacity = 64 * FLAGS.num_envs
    config.replay.min_fill_fraction = 0.5
    config.evaluation.update(dict(episodes=1, max_frames=4 * FLAGS.num_envs, every_frames=10**9))
    config.checkpoint_every_frames = 10**9
    return config


# Agent steps of the one-env loop before it learns: its replay (64 slots) is full.
CLASSIC_WARM_UP_STEPS = 64


def check_frames(config) -> None:
    """Refuses, before any measurement, a --loop_frames or --classic_frames too short to time
    learning: the end-to-end figure needs log rows past the replay's fill, and the one-env clock
    starts only after the learner's first 2 updates (its compilation)."""
    fill_frames = round(
        config.replay.capacity * config.replay.min_fill_fraction * config.env.frame_skip
    )
    if FLAGS.loop_frames < 2 * fill_frames:
        raise ValueError(
            f"--loop_frames must be at least {2 * fill_frames:,} at {config.env.num_envs} envs "
            f"(twice the {fill_frames:,} frames that fill the replay before learning), got "
            f"{FLAGS.loop_frames:,}"
        )
    frame_skip = config.env.frame_skip
    per_update = math.ceil(1 / (frame_skip * config.updates_per_frame))  # agent steps
    least = frame_skip * (CLASSIC_WARM_UP_STEPS + 3 * per_update)
    if FLAGS.classic_frames < least:
        raise ValueError(
            f"--classic_frames must be at least {least:,} ({least // frame_skip} agent steps: "
            f"{CLASSIC_WARM_UP_STEPS} fill the one-env replay, {2 * per_update} more bring the "
            f"learner's first 2 updates, which compile it, and the clock then needs {per_update} "
            f"to time one more), got {FLAGS.classic_frames:,}"
        )


def env_only(config) -> float:
    """Frames/s of N emulators driven by send/recv with random actions."""
    rng = np.random.default_rng(0)
    with make_atari_env(FLAGS.game, config.env.num_envs, seed=0) as env:
        env.reset()
        actions = rng.integers(0, env.num_actions, (FLAGS.env_steps + 20, env.num_envs))
        for row in actions[:20]:
            env.step(row)
        start = time.perf_counter()
        for row in actions[20:]:
            env.send(row)
            env.recv()
        seconds = time.perf_counter() - start
    return FLAGS.env_steps * config.env.num_envs * config.env.frame_skip / seconds


def filled_state(config, compiled):
    """A fresh agent whose replay is full of random frames (sampling touches real memory)."""
    state = atari_loop.init_agent_state(config, compiled, config.env.num_envs, config.seed)
    rng = np.random.default_rng(0)
    num_envs = config.env.num_envs
    replay = state.replay
    for t in range(replay.slots_per_env):
        frame = jnp.asarray(rng.integers(0, 256, (num_envs, 84, 84), dtype=np.uint8))
        replay = compiled.add(
            replay,
            frame,
            jnp.zeros(num_envs, jnp.int32),
            jnp.ones(num_envs),
            jnp.ones(num_envs),
            jnp.full(num_envs, t % 97 == 0),
            jnp.full(num_envs, t % 97 == 96),
        )
    return state.replace(replay=replay)


def compile_learner(config, compiled):
    """(compile seconds, FLOPs per update from XLA's cost analysis, a state to learn from, the
    compiled learn step)."""
    state = filled_state(config, compiled)
    args = (state.train_state, state.replay, state.rng, jnp.float32(0.5))
    start = time.perf_counter()
    executable = compiled.learn.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    return compile_seconds, timing.compiled_flops(executable), state, executable


def learner_rate(compiled, state, updates: int):
    """(updates/s of back-to-back learn steps, the state after them)."""
    train_state, replay, rng = state.train_state, state.replay, state.rng
    for _ in range(3):
        train_state, replay, rng, aux = compiled.learn(train_state, replay, rng, 0.5)
    jax.block_until_ready(aux["loss"])
    start = time.perf_counter()
    for _ in range(updates):
        train_state, replay, rng, aux = compiled.learn(train_state, replay, rng, 0.5)
    jax.block_until_ready(aux["loss"])
    rate = updates / (time.perf_counter() - start)
    return rate, state.replace(train_state=train_state, replay=replay, rng=rng)


def learner_operations(executable, state, count: int, untraced_ms: float) -> list[str]:
    """Lines of the ``count`` XLA operations that take the most time in one call of the compiled
    learn step ``executable``, from a trace (its inputs copied beforehand: the step donates them);
    ``untraced_ms`` is the step's measured time, printed beside the traced total."""
    from benchmarks import op_profile  # noqa: PLC0415

    args = (state.train_state, state.replay, state.rng, jnp.float32(0.5))
    jax.block_until_ready(executable(*jax.tree.map(jnp.copy, args)))
    fresh = jax.block_until_ready(jax.tree.map(jnp.copy, args))
    profile = op_profile.top_operations(
        lambda: jax.block_until_ready(executable(*fresh)), executable.as_text(), count
    )
    return [
        f"top {len(profile.rows)} XLA operations of one learn step ({op_profile.HEADER}); traced "
        f"operations ran during {profile.busy_milliseconds:,.1f} ms, their self times add up to "
        f"{profile.traced_milliseconds:,.1f} ms (the step takes {untraced_ms:,.1f} ms untraced; "
        "Eigen's convolutions are traced at their dispatch only)"
    ] + op_profile.format_rows(profile)


def end_to_end(config) -> tuple[float, list[float]]:
    """(frames/s of the real loop once learning runs, per-row rates), from its metrics rows."""
    config = config.copy_and_resolve_references()
    config.frames_per_game = FLAGS.loop_frames
    config.log_every_frames = max(FLAGS.loop_frames // 8, config.env.num_envs * 4)
    config.games = (FLAGS.game,)
    config.evaluation.fresh_reference = False
    with tempfile.TemporaryDirectory() as directory:
        atari_loop.train(config, directory, show_progress=False)
        rows = [row for row in workdir.read_metrics(directory) if row["event"] == "train"]
    # The first rows hold compilation and the replay warm-up (no updates yet).
    learning = [
        row["frames_per_second"] for row in rows[2:] if row.get("updates_per_second", 0) > 0
    ]
    if not learning:
        raise ValueError("no log interval of the end-to-end run learns: raise --loop_frames")
    return statistics.median(learning), learning


LOOP_PARTS = ("acting", "env", "replay add", "learner")


def classic_loop(config, compiled_single) -> tuple[float, dict[str, float]]:
    """(frames/s of one env stepped synchronously, each update blocking before the next step;
    seconds per agent step of each of `LOOP_PARTS` and of the rest, the host's own work).

    Each part waits for its result before the next starts, so the parts add up to the step."""
    num_frames = FLAGS.classic_frames
    state = atari_loop.init_agent_state(config, compiled_single, 1, config.seed)
    env = make_atari_env(FLAGS.game, 1, seed=0)
    frames = 0
    learning_frames = 0
    updates = 0
    start = None
    parts = dict.fromkeys(LOOP_PARTS, 0.0)
    clock = time.perf_counter

    def timed(part, started):
        parts[part] += clock() - started

    try:
        timestep = env.reset()
        items = 0
        while frames < num_frames:
            if start is None and updates >= 2:  # compiled and learning: start the clock
                start, frames_at_start = clock(), frames
                parts = dict.fromkeys(LOOP_PARTS, 0.0)
            started = clock()
            actions, rng = compiled_single.act(
                state.train_state.params,
                state.train_state.extra,
                timestep.observation,
                state.rng,
                0.1,
            )
            actions = np.asarray(actions)
            timed("acting", started)
            started = clock()
            next_timestep = env.step(actions)
            timed("env", started)
            started = clock()
            replay = compiled_single.add(
                state.replay,
                timestep.frame,
                actions,
                timestep.reward,
                timestep.discount,
                timestep.first,
                timestep.last,
            )
            jax.block_until_ready(replay)
            timed("replay add", started)
            state = state.replace(replay=replay, rng=rng)
            timestep = next_timestep
            frames += config.env.frame_skip
            items += 1
            if items >= CLASSIC_WARM_UP_STEPS:
                learning_frames += config.env.frame_skip
                started = clock()
                while updates < int(learning_frames * config.updates_per_frame):
                    train_state, replay, rng, aux = compiled_single.learn(
                        state.train_state, state.replay, state.rng, 0.5
                    )
                    jax.block_until_ready(aux["loss"])
                    state = state.replace(train_state=train_state, replay=replay, rng=rng)
                    updates += 1
                timed("learner", started)
    finally:
        env.close()
    seconds = clock() - start
    steps = (frames - frames_at_start) / config.env.frame_skip
    per_step = {part: value / steps for part, value in parts.items()}
    per_step["host"] = seconds / steps - sum(per_step.values())
    return (frames - frames_at_start) / seconds, per_step


def main(argv: list[str]) -> None:
    del argv
    runtime.apply_runtime_defaults()  # the launchers' settings: devices, random bits, threads
    config = benchmark_config()
    check_frames(config)
    load = os.getloadavg()[0]
    print(f"hardware: {runtime.hardware_line()}")
    print(
        f"load average (1 min) at start: {load:.2f}"
        + ("  <- measured under load" if load > 2 else "")
    )
    print(
        f"agent {FLAGS.agent} ({FLAGS.torso} torso), {FLAGS.game}, {config.env.num_envs} envs, "
        f"batch {config.learner.batch_size}, "
        f"replay ratio {config.updates_per_frame:g} updates/frame\n"
    )

    env_rate = env_only(config)
    print(f"env only        : {env_rate:>10,.0f} frames/s  ({config.env.num_envs} envs, send/recv)")

    num_actions = len(minimal_action_names(FLAGS.game))
    compiled = atari_loop.compile_agent(config, num_actions)
    compile_seconds, flops, state, executable = compile_learner(config, compiled)
    rate_before, state = learner_rate(compiled, state, FLAGS.updates)
    loop_rate, rates = end_to_end(config)
    rate_after, state = learner_rate(compiled, state, FLAGS.updates)
    # The load of a shared machine drifts: the bound is the mean of the learner measured right
    # before and right after the end-to-end run.
    updates_per_second = (rate_before + rate_after) / 2
    frames_per_update = 1 / config.updates_per_frame
    bound = updates_per_second * frames_per_update
    print(
        f"learner only    : {updates_per_second:>10,.1f} updates/s ({rate_before:.1f} before, "
        f"{rate_after:.1f} after the loop; compile {compile_seconds:.1f} s) -> bound "
        f"{bound:,.0f} frames/s at {frames_per_update:g} frames per update"
    )
    print(
        f"end to end      : {loop_rate:>10,.0f} frames/s  (median of {len(rates)} log intervals; "
        f"{loop_rate / bound:.2f} x learner bound, target >= 0.85; "
        f"{loop_rate / env_rate:.2f} x env only)"
    )

    single = config.copy_and_resolve_references()
    single.env.num_envs = 1
    single.replay.capacity = config.replay.capacity // config.env.num_envs
    compiled_single = atari_loop.compile_agent(single, num_actions)
    classic_rate, parts = classic_loop(single, compiled_single)
    rate_last, state = learner_rate(compiled, state, FLAGS.updates)
    classic_bound = (rate_after + rate_last) / 2 * frames_per_update
    print(
        f"one-env loop    : {classic_rate:>10,.0f} frames/s  (classic host loop, no overlap; "
        f"{classic_rate / classic_bound:.2f} x the learner bound measured around it, "
        f"{classic_bound:,.0f} frames/s; end to end is {loop_rate / classic_rate:.2f} x)"
    )
    step_ms = 1e3 * sum(parts.values())
    print(
        "  per agent step: "
        + ", ".join(
            f"{name} {1e3 * value:.2f} ms ({1e3 * value / step_ms:.0%})"
            for name, value in parts.items()
        )
        + f"; {step_ms:.2f} ms in all"
    )

    reference = timing.matmul_flops(FLAGS.matmul_size)
    achieved = flops * updates_per_second
    print(
        f"learner FLOP/s  : {achieved / 1e9:>10,.1f} GFLOP/s ({flops / 1e9:.2f} GFLOP per update, "
        f"XLA cost analysis) vs {FLAGS.matmul_size}^2 matmul {reference / 1e9:,.1f} GFLOP/s "
        f"({achieved / reference:.0%})"
    )
    for envs in sorted({1, config.env.num_envs}):
        memory = replay_memory_bytes(
            1_000_000, (84, 84), num_envs=envs, stack_size=4, max_n_step=config.learner.n_step
        )
        print(
            f"replay 1M, {envs} env line(s): {memory / 2**30:.2f} GiB "
            "(84x84 uint8 frames stored once)"
        )
    if FLAGS.top_ops:
        lines = learner_operations(executable, state, FLAGS.top_ops, 1e3 / updates_per_second)
        print("\n".join(lines))
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "atari_throughput")
