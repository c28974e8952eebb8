"""Replay memory size and add / sample throughput.

Run: ``python -m benchmarks.replay_memory [--capacity=100000] [--num_envs=1,8] [--batch_size=32]
[--calls=500] [--uniform_only]`` (about a minute on a 2-core CPU). Prints the bytes of a
1M-transition 84x84 replay (computed without allocating it) and, for a 100k replay of 84x84 frames,
add and sample throughput (median of single calls that each wait for their result, after a warm-up)
with compile time reported apart. ``--uniform_only`` times adds to a replay that keeps no priorities
(``replay_init(keep_priorities=False)``, a uniformly sampling learner's).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from agents.replay import (
    ReplayState,
    replay_add,
    replay_init,
    replay_memory_bytes,
    replay_num_valid,
    replay_sample,
    replay_update_priorities,
)
from benchmarks import timing
from plasticity import runtime

FRAME_SHAPE = (84, 84)
EPISODE_LENGTH = 97  # synthetic episodes, so stacks and n-step windows meet episode boundaries
WARM_UP_CALLS = (
    20  # untimed calls after compiling, so first-touch and thread start-up are not timed
)


def synthetic_timestep(step: jax.Array, num_envs: int) -> tuple[jax.Array, ...]:
    """Timestep ``step`` of every env: a frame filled with the step number, an episode every 97 steps."""
    frame = jnp.full((num_envs,) + FRAME_SHAPE, step % 251, jnp.uint8)
    time_in_episode = (step + jnp.arange(num_envs)) % EPISODE_LENGTH
    return (
        frame,
        (step % 6) * jnp.ones((num_envs,), jnp.int32),
        jnp.ones((num_envs,), jnp.float32),
        jnp.ones((num_envs,), jnp.float32),
        time_in_episode == 0,
        time_in_episode == EPISODE_LENGTH - 1,
    )


def _add_scanned(state: ReplayState, steps: jax.Array) -> ReplayState:
    def body(state, step):
        return replay_add(state, *synthetic_timestep(step, state.num_envs)), None

    return jax.lax.scan(body, state, steps)[0]


_add_scanned_jit = jax.jit(_add_scanned, donate_argnums=0)


def fill_replay(state: ReplayState, start: int, num_steps: int) -> ReplayState:
    """Adds ``num_steps`` synthetic timesteps inside one jitted ``lax.scan`` (state donated, in place)."""
    return _add_scanned_jit(state, jnp.arange(start, start + num_steps, dtype=jnp.int32))


def timed(function: Callable[[], object]) -> float:
    """Seconds until ``function``'s result is ready."""
    start = time.perf_counter()
    jax.block_until_ready(function())
    return time.perf_counter() - start


def median_call_seconds(call: Callable[[int], object], num_calls: int) -> tuple[float, float]:
    """(first call = compile, median of the later calls) in seconds; each call waits for its result."""
    compile_s = timed(lambda: call(0))
    for i in range(1, min(WARM_UP_CALLS, num_calls + 1)):  # calls 1..num_calls exist
        timed(lambda: call(i))
    return compile_s, float(np.median([timed(lambda: call(i)) for i in range(1, num_calls + 1)]))


def measure_add(
    capacity: int, num_envs: int, num_calls: int, keep_priorities: bool = True
) -> dict[str, float]:
    """Add throughput (timesteps/s over all envs): one jitted call per add, and adds inside ``lax.scan``."""
    add = jax.jit(replay_add, donate_argnums=0)
    empty = replay_init(capacity, num_envs, FRAME_SHAPE, keep_priorities=keep_priorities)
    holder = [jax.block_until_ready(empty)]
    timesteps = [
        jax.device_put(synthetic_timestep(jnp.int32(t), num_envs)) for t in range(num_calls + 1)
    ]

    def one(t: int) -> jax.Array:
        holder[0] = add(holder[0], *timesteps[t])
        return holder[0].head

    compile_s, call_s = median_call_seconds(one, num_calls)
    scan_steps = 4 * num_calls
    holder[0] = jax.block_until_ready(
        fill_replay(holder[0], 0, scan_steps)
    )  # compiles the scanned version
    scan_s = timed(lambda: fill_replay(holder[0], scan_steps, scan_steps).head)
    return dict(
        compile_s=compile_s,
        per_call_timesteps_per_s=num_envs / call_s,
        scanned_timesteps_per_s=scan_steps * num_envs / scan_s,
    )


def measure_sample(
    state: ReplayState, batch_size: int, prioritized: bool, num_calls: int
) -> dict[str, float]:
    """Sample throughput (batches/s) of one jitted ``replay_sample`` call per batch."""
    sample = jax.jit(lambda s, k: replay_sample(s, k, batch_size, 3, 0.99, prioritized, 0.4))
    keys = list(jax.random.split(jax.random.key(0), num_calls + 1))
    compile_s, call_s = median_call_seconds(lambda i: sample(state, keys[i]), num_calls)
    return dict(compile_s=compile_s, batches_per_s=1.0 / call_s)


def measure_update_priorities(
    state: ReplayState, batch_size: int, num_calls: int
) -> dict[str, float]:
    """Priority-update throughput (batches/s); ``state`` is donated (unusable afterwards)."""
    update = jax.jit(replay_update_priorities, donate_argnums=0)
    keys = jax.random.split(jax.random.key(1), num_calls + 1)
    indices = [jax.random.randint(k, (batch_size,), 0, state.capacity) for k in keys]
    priorities = [jax.random.uniform(k, (batch_size,)) for k in keys]
    holder = [state]

    def one(i: int) -> jax.Array:
        holder[0] = update(holder[0], indices[i], priorities[i])
        return holder[0].max_priority

    compile_s, call_s = median_call_seconds(one, num_calls)
    return dict(compile_s=compile_s, batches_per_s=1.0 / call_s)


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_integer("capacity", 100_000, "Replay slots of the timed replay.", lower_bound=1)
    flags.DEFINE_list("num_envs", ["1", "8"], "Env counts whose adds are timed (each at least 1).")
    flags.DEFINE_integer("batch_size", 32, "Transitions per sampled batch.", lower_bound=1)
    flags.DEFINE_integer(
        "calls", 500, "Timed calls per figure (the median is reported).", lower_bound=1
    )
    flags.DEFINE_bool(
        "uniform_only",
        False,
        "Time adds to a replay made with keep_priorities=False (a uniform learner's).",
    )


def main(argv: Sequence[str]) -> None:
    """Prints the figures; see the module docstring."""
    del argv
    args = flags.FLAGS
    num_envs_list = timing.positive_counts("num_envs", args.num_envs, "env")
    one_million = replay_memory_bytes(1_000_000, FRAME_SHAPE, num_envs=1)
    print(f"hardware: {runtime.hardware_line()}")
    print(
        f"replay of 1,000,000 transitions of 84x84 uint8: {one_million / 2**30:.3f} GiB ({one_million:,} bytes)"
    )
    print(f"capacity {args.capacity:,}, frames 84x84, stack 4, n-step 3, batch {args.batch_size}")
    for num_envs in num_envs_list:
        figures = measure_add(args.capacity, num_envs, args.calls, not args.uniform_only)
        kept = "no priorities" if args.uniform_only else "with priorities"
        print(
            f"  add ({kept}), {num_envs} envs: {figures['per_call_timesteps_per_s']:,.0f} timesteps/s one jitted call per add, "
            f"{figures['scanned_timesteps_per_s']:,.0f} timesteps/s inside lax.scan "
            f"(compile {figures['compile_s']:.2f} s)"
        )
    state = jax.block_until_ready(
        fill_replay(replay_init(args.capacity, 1, FRAME_SHAPE), 0, args.capacity + 7)
    )
    print(f"  filled: {int(replay_num_valid(state)):,} valid slots")
    for prioritized in (False, True):
        figures = measure_sample(state, args.batch_size, prioritized, args.calls)
        mode = "prioritized" if prioritized else "uniform"
        batches_per_s = figures["batches_per_s"]
        print(
            f"  sample ({mode}): {batches_per_s:,.0f} batches/s = {batches_per_s * args.batch_size:,.0f} "
            f"transitions/s (compile {figures['compile_s']:.2f} s)"
        )
    figures = measure_update_priorities(state, args.batch_size, args.calls)
    print(
        f"  update_priorities: {figures['batches_per_s']:,.0f} batches/s (compile {figures['compile_s']:.2f} s)"
    )


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "replay_memory")
