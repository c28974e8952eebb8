"""Throughput of the Atari environment layer alone (random actions, no learning).

Usage: ``python -m benchmarks.env_throughput [--game=Pong] [--num_envs=8] [--steps=1000]``

Prints agent steps/s and emulator frames/s (agent steps x frame_skip; no-op and reset frames not
counted) for:

  (a) one env stepped from a Python loop: ``agents.atari_env`` with N=1, i.e. ale-py's C++ vector
      env with one emulator plus this project's timestep bookkeeping (gymnasium's
      ``AtariPreprocessing`` wrapper needs OpenCV, which is not a dependency);
  (b) N envs, synchronous ``step``;
  (c) N envs, ``send`` / ``recv`` pipelined: env-only, and overlapped with a stand-in for a learner
      update (a host sleep, as when the learner runs on an accelerator, and a jitted XLA:CPU matmul
      chain competing for the same cores), against the same work done one after the other.

and the hardware it ran on. Figures are medians over ``--repeats`` runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from absl import flags

from agents.atari_env import AtariVectorEnvironment, make_atari_env
from benchmarks import timing
from plasticity import runtime


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    the harness (the tests do) defines no global flags that could clash with a launcher's."""
    flags.DEFINE_string("game", "Pong", "Atari game.")
    flags.DEFINE_integer("num_envs", 8, "Envs stepped together in (b) and (c).", lower_bound=1)
    flags.DEFINE_integer(
        "num_threads", None, "Emulator threads; default min(num_envs, cores).", lower_bound=1
    )
    flags.DEFINE_integer(
        "steps",
        1000,
        "Batched steps per measurement (the overlap measurements take half as many).",
        lower_bound=2,
    )
    flags.DEFINE_integer(
        "repeats", 3, "Measurements per figure; the median is printed.", lower_bound=1
    )
    flags.DEFINE_integer(
        "learner_size", 256, "Matrix side of the XLA:CPU learner stand-in.", lower_bound=1
    )
    flags.DEFINE_float(
        "sleep_ms", 5.0, "Duration of the host-sleep learner stand-in.", lower_bound=0
    )


class Throughput(NamedTuple):
    """Agent steps and emulator frames per second, and seconds per batched step."""

    agent_steps_per_s: float
    frames_per_s: float
    seconds_per_step: float


def _random_actions(env: AtariVectorEnvironment, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, env.num_actions, size=(steps, env.num_envs), dtype=np.int32
    )


def _throughput(env: AtariVectorEnvironment, steps: int, seconds: float) -> Throughput:
    agent_steps = steps * env.num_envs
    return Throughput(
        agent_steps / seconds, agent_steps * env.config.frame_skip / seconds, seconds / steps
    )


def measure_sync(
    env: AtariVectorEnvironment, steps: int, work: Callable[[], None] | None = None
) -> Throughput:
    """Times `steps` calls of `env.step` with random actions, each followed by `work()` if given."""
    actions = _random_actions(env, steps)
    start = time.perf_counter()
    for row in actions:
        env.step(row)
        if work is not None:
            work()
    return _throughput(env, steps, time.perf_counter() - start)


def measure_async(
    env: AtariVectorEnvironment, steps: int, work: Callable[[], None] | None = None
) -> Throughput:
    """Times `steps` rounds of send(actions); work(); recv(): the emulators run during `work()`."""
    actions = _random_actions(env, steps)
    start = time.perf_counter()
    for row in actions:
        env.send(row)
        if work is not None:
            work()
        env.recv()
    return _throughput(env, steps, time.perf_counter() - start)


def measure_work(work: Callable[[], None], steps: int) -> float:
    """Seconds per call of `work`."""
    start = time.perf_counter()
    for _ in range(steps):
        work()
    return (time.perf_counter() - start) / steps


def xla_learner_stand_in(size: int) -> Callable[[], None]:
    """A jitted matmul chain on the host CPU that blocks until done, like a learner update."""
    import jax
    import jax.numpy as jnp

    weights = jnp.ones((size, size), jnp.float32) / size

    @jax.jit
    def update(w: jax.Array) -> jax.Array:
        for _ in range(4):
            w = jnp.tanh(w @ w)
        return w

    update(weights).block_until_ready()
    return lambda: update(weights).block_until_ready()


def sleep_stand_in(milliseconds: float) -> Callable[[], None]:
    """A host that waits, as it does while an accelerator runs the learner update."""
    return lambda: time.sleep(milliseconds / 1000.0)


def _median(measure: Callable[[], Throughput], repeats: int) -> Throughput:
    runs = [measure() for _ in range(repeats)]
    return Throughput(*(statistics.median(values) for values in zip(*runs)))


def _format(label: str, result: Throughput) -> str:
    return (
        f"{label:<58} {result.agent_steps_per_s:>10,.0f} agent steps/s {result.frames_per_s:>10,.0f} frames/s"
        f"  ({result.seconds_per_step * 1e3:.2f} ms/step)"
    )


def main(argv: list[str]) -> None:
    del argv
    runtime.apply_runtime_defaults()  # the launchers' settings: devices, random bits, threads
    steps, repeats, n = flags.FLAGS.steps, flags.FLAGS.repeats, flags.FLAGS.num_envs
    print(f"hardware: {runtime.hardware_line()}")
    print(
        f"game: {flags.FLAGS.game}, random actions, {steps} batched steps x {repeats} repeats (median)\n"
    )

    with make_atari_env(flags.FLAGS.game, 1, seed=0) as env:
        env.reset()
        measure_sync(env, 50)
        single = _median(lambda: measure_sync(env, steps), repeats)
    print(_format("(a) 1 env, Python loop (agents.atari_env, N=1)", single))

    with make_atari_env(flags.FLAGS.game, n, seed=0, num_threads=flags.FLAGS.num_threads) as env:
        env.reset()
        measure_sync(env, 50)
        label = f"N={n}, {env.num_threads} threads"
        sync = _median(lambda: measure_sync(env, steps), repeats)
        print(_format(f"(b) {label}, step()", sync))
        pipelined = _median(lambda: measure_async(env, steps), repeats)
        print(_format(f"(c) {label}, send()/recv(), env only", pipelined))

        print("\n(c) overlap of env stepping with a learner stand-in, per batched step:")
        stand_ins = {
            f"host sleep {flags.FLAGS.sleep_ms:g} ms (learner on an accelerator)": sleep_stand_in(
                flags.FLAGS.sleep_ms
            ),
            f"XLA:CPU matmul chain {flags.FLAGS.learner_size}^2 on the same cores": xla_learner_stand_in(
                flags.FLAGS.learner_size
            ),
        }
        for name, work in stand_ins.items():
            work_s = statistics.median(
                measure_work(work, max(steps // 10, 10)) for _ in range(repeats)
            )
            one_after_other = _median(lambda: measure_sync(env, steps // 2, work), repeats)
            overlapped = _median(lambda: measure_async(env, steps // 2, work), repeats)
            print(
                f"  {name}: work {work_s * 1e3:.2f} ms, env step {sync.seconds_per_step * 1e3:.2f} ms; "
                f"step()+work {one_after_other.seconds_per_step * 1e3:.2f} ms, "
                f"send()+work+recv() {overlapped.seconds_per_step * 1e3:.2f} ms "
                f"(perfect overlap: {max(work_s, sync.seconds_per_step) * 1e3:.2f} ms), "
                f"{overlapped.agent_steps_per_s:,.0f} agent steps/s"
            )


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "env_throughput")
