r"""Throughput of the compiled MinAtar loop, compile time reported apart.

  python -m benchmarks.minatar_throughput [--agents=dqn,rainbow_no_noisy,rainbow] [--seeds=1,8] \
      [--game=breakout] [--num_envs=8] [--frames=4000] [--repeats=2]

For each agent preset (`agents.configs.minatar_preset`, MinAtar's conv(16)->128 network,
one update every 4 steps, learning from the first batch on) and each seed count, one chunk of
``--frames`` steps per seed is compiled (timed apart) and then run ``--repeats`` times; the
fastest run gives the steps/s, per seed and in total (steps summed over seeds and envs). Seed
counts above one run as ``jit(vmap(chunk))``; ``--map`` adds ``lax.map`` over the seeds (one
seed at a time inside one program, what ``run.runs_per_batch=1`` does, the default on CPUs).
``rainbow`` is the full preset (noisy nets); ``rainbow_no_noisy`` drops the noisy layers, as
`benchmarks/configs/minatar_sequence.py` does.
"""

from __future__ import annotations

import time

from absl import flags

from benchmarks import timing


FLAGS = flags.FLAGS

AGENTS = ("dqn", "rainbow_no_noisy", "rainbow")


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_list("agents", list(AGENTS), f"Presets to time, of {', '.join(AGENTS)}.")
    flags.DEFINE_list("seeds", ["1", "8"], "Seed counts (each at least 1).")
    flags.DEFINE_string("game", "breakout", "MinAtar game.")
    flags.DEFINE_integer("num_envs", 8, "Envs per seed.", lower_bound=1)
    flags.DEFINE_integer(
        "frames",
        4000,
        "Steps per seed in one timed chunk (a multiple of --num_envs).",
        lower_bound=1,
    )
    flags.DEFINE_integer("repeats", 2, "Timed chunks; the fastest is reported.", lower_bound=1)
    flags.DEFINE_bool("map", False, "Also time lax.map over the seeds.")


def check_lists(agents: list[str], seeds: list[str]) -> list[int]:
    """The seed counts of --seeds as integers, once --agents and --seeds hold only what the
    benchmark can time; anything else is a one-line ValueError naming the flag (before any
    compilation, where an unknown preset would otherwise be timed as DQN)."""
    if not agents:
        raise ValueError(f"--agents is empty; choose from {', '.join(AGENTS)}")
    for agent in agents:
        if agent not in AGENTS:
            raise ValueError(f"--agents: unknown preset {agent!r}; choose from {', '.join(AGENTS)}")
    return timing.positive_counts("seeds", seeds, "seed")


def measure(agent: str, seeds: int, runs_per_batch: int) -> dict[str, float]:
    """Compile seconds and steps/s of one chunk of the loop."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from agents import configs, minatar_loop, sequence  # noqa: PLC0415
    from agents.sequence import SwitchPolicy  # noqa: PLC0415
    from plasticity import runtime  # noqa: PLC0415

    config = configs.get_config("rainbow" if agent.startswith("rainbow") else "dqn", "minatar")
    if agent == "rainbow_no_noisy":
        config.network.noisy = False
        config.exploration.update(dict(epsilon_begin=1.0, epsilon_end=0.01))
    config.games = (FLAGS.game,)
    config.num_seeds = seeds
    config.env.num_envs = FLAGS.num_envs
    config.frames_per_game = FLAGS.frames * (FLAGS.repeats + 1)
    config.checkpoint_every_frames = FLAGS.frames
    config.replay.min_fill_fraction = 0.0  # learning starts with the first batch
    config.evaluation.fresh_reference = False
    config.run.runs_per_batch = runs_per_batch
    segment = sequence.plan_segments(config, minatar_loop.make_blocks(config))[0]
    programs = minatar_loop.make_agent(segment.config, [FLAGS.game], False)
    game = jnp.int32(0)
    state = programs.init(jnp.arange(seeds, dtype=jnp.int32))
    state = programs.start_block(state, game, SwitchPolicy(), 0)
    per_chunk = FLAGS.frames // FLAGS.num_envs

    def chunk_plan(chunk: int) -> dict:
        window = segment.plan.window(0, chunk * per_chunk, (chunk + 1) * per_chunk)
        flags = minatar_loop.per_iteration_flags(segment, 0, window)
        values = segment.schedule_values(window)
        return {
            k: jnp.asarray(v) for k, v in {**values, "updates": window["updates"], **flags}.items()
        }

    plan = chunk_plan(0)
    started = time.perf_counter()
    with runtime.compiled_loop_lowering():  # as `minatar_loop` compiles its chunks
        chunk = programs.run_chunk.lower(state, game, plan).compile()
    compile_seconds = time.perf_counter() - started
    state, _ = chunk(state, game, plan)  # warm-up (the replay fills past a batch)
    best = float("inf")
    for repeat in range(1, FLAGS.repeats + 1):
        plan = chunk_plan(repeat)
        started = time.perf_counter()
        state, outputs = chunk(state, game, plan)
        jax.block_until_ready((state, outputs))
        best = min(best, time.perf_counter() - started)
    updates = int(chunk_plan(1)["updates"].sum())
    return {
        "compile_s": compile_seconds,
        "steps_per_s_per_seed": FLAGS.frames / best,
        "steps_per_s_total": FLAGS.frames * seeds / best,
        "updates_per_s_per_seed": updates / best,
    }


def main(argv: list[str]) -> None:
    del argv
    seed_counts = check_lists(FLAGS.agents, FLAGS.seeds)
    if FLAGS.frames % FLAGS.num_envs:
        raise ValueError(
            f"--frames ({FLAGS.frames}) must be a multiple of --num_envs ({FLAGS.num_envs})"
        )
    import jax  # noqa: PLC0415

    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()  # the launchers' settings: devices, random bits, threads
    print(runtime.hardware_line())
    print(
        f"game {FLAGS.game}, {FLAGS.num_envs} envs per seed, {FLAGS.frames} steps per seed per "
        f"chunk, one update every 4 steps"
    )
    print(
        f"{'agent':<18} {'seeds':>5} {'mode':>5} {'compile s':>10} {'steps/s/seed':>13} "
        f"{'steps/s total':>14} {'updates/s/seed':>15}"
    )
    with jax.threefry_partitionable(False):
        for agent in FLAGS.agents:
            for seeds in seed_counts:
                modes = [("vmap", 0)] + ([("map", 1)] if FLAGS.map and seeds > 1 else [])
                for mode, per_batch in modes:
                    r = measure(agent, seeds, per_batch)
                    print(
                        f"{agent:<18} {seeds:>5} {mode:>5} {r['compile_s']:>10.1f} "
                        f"{r['steps_per_s_per_seed']:>13.0f} {r['steps_per_s_total']:>14.0f} "
                        f"{r['updates_per_s_per_seed']:>15.0f}",
                        flush=True,
                    )


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "minatar_throughput")
