r"""Where the MinAtar loop's time goes: compile, env, acting + replay, learner, diagnostics, host.

  python -m benchmarks.loop_breakdown [--preset=purejaxrl|conv] [--seeds=1] [--frames=20000]
      [--batch_size=0] [--runs_per_batch=0] [--[no]grad_norm]
      [--cpu_products=auto|xla|ynnpack]

The loop's own compiled chunk (`agents.minatar_loop.make_agent`, lowered as training lowers it) is
timed with its learning plan edited, one part at a time:

* ``env``: the environments alone (`agents.minatar_env.MinAtarSuite.step` with random actions, in
  a compiled scan of the same length, the seeds vmapped on one device whatever the loop's mapping:
  a small part, so the approximation stays small);
* ``acting + replay``: the chunk with no update due (act, step, add to the replay, bookkeeping)
  minus ``env``;
* ``learner``: the chunk with its updates minus the chunk without, also per update;
* ``diagnostics``: the chunk with the diagnostics due at the MinAtar preset's period minus without
  (its ``diagnostics.every_frames``, fixed here, no flag sets it: the ``purejaxrl`` preset switches
  them off as the peer has none, so its period here is the MinAtar preset's); a ``--frames``
  shorter than the period has none due, and the row says so;
* ``host``: a whole `agents.minatar_loop.train` run of the same frames and diagnostics (programs
  compiled by an earlier run) minus its chunk: checkpoints, rows, evaluation, plan building.

The learner's row also gives its FLOP rate: XLA's count of one seed's learn step (replay sample,
update; the loop's own function, compiled alone) x the updates of all seeds / the learner's
seconds, against a ``--matmul_size`` float32 matrix product on the same device. It is the ceiling
on any speed-up at the same work: a learner at 75% of that rate cannot run 1.5x faster.

The chunk learns from its first batch on, so every iteration is due an update. A whole run of
`benchmarks.peers` fills the replay first (each seed's first 10,000 env steps learn nothing) and
has no diagnostics, so its env steps/s are higher: the parts here predict it as (learning steps'
share x learner) + acting + replay + env per env step.

``--preset=purejaxrl`` is the MLP at PureJaxRL's settings (`benchmarks.peer_settings.purejaxrl_config`);
``conv`` the project's default MinAtar DQN preset (conv(16) torso, 8 envs, one update per 4
steps). Their learner rows give the cost per update of each network. Each figure is the fastest of
``--repeats`` runs (noise on a shared machine only adds time).

``--batch_size=B`` replaces the preset's batch (same replay, same updates): the learner's
milliseconds per update at two batch sizes separate its cost per sampled example from what every
update pays whatever the batch (Adam's passes over the parameters, the gradient norm, the target
copy), the part no larger batch amortizes.

``--grad_norm`` / ``--nograd_norm`` turn each update's global gradient norm (``learner.grad_norm``,
logged and checked for divergence) on or off: the ``purejaxrl`` preset leaves it off as the peer
computes none, the ``conv`` preset keeps the project's default (on). The two learner rows give its
cost.

``--top_ops=N`` also traces one run of the chunk with every update due (`benchmarks.op_profile`)
and prints the N XLA operations that took the most time, each named by the JAX operation it came
from: what inside the learner or the environments to look at first.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from absl import flags

from benchmarks import peer_settings, timing


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_enum("preset", "purejaxrl", ["purejaxrl", "conv"], "Which loop settings.")
    flags.DEFINE_integer("seeds", 1, "Seeds (one seed runs without a seed axis).", lower_bound=1)
    flags.DEFINE_integer("frames", 20_000, "Steps per seed of the timed chunk.", lower_bound=1)
    flags.DEFINE_integer(
        "repeats", 3, "Timed runs of each variant; the fastest counts.", lower_bound=1
    )
    flags.DEFINE_integer(
        "top_ops",
        0,
        "Also print the N XLA operations of the chunk that take the most time (traced).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "matmul_size", 2048, "Side of the reference matrix product.", lower_bound=1
    )
    flags.DEFINE_integer("batch_size", 0, "Learner batch size (0: the preset's).", lower_bound=0)
    flags.DEFINE_integer(
        "runs_per_batch",
        None,
        "Seeds each device vmaps at once (0: all; unset: the project's default, one at a time on "
        "CPUs).",
        lower_bound=0,
    )
    peer_settings.define_cpu_products_flag()
    flags.DEFINE_bool(
        "grad_norm",
        None,
        "Compute each update's gradient norm (unset: the preset's, off at PureJaxRL's settings).",
    )


def breakdown_config(
    preset: str,
    seeds: int,
    frames: int,
    batch_size: int = 0,
    runs_per_batch: int | None = None,
    grad_norm: bool | None = None,
):
    """The loop's config: learning from the first batch, one chunk of ``frames`` steps per seed,
    diagnostics at the MinAtar preset's period; ``batch_size`` > 0 replaces the preset's,
    ``runs_per_batch`` sets how each device runs its seeds (None: the project's default) and
    ``grad_norm`` whether each update computes its gradient norm (None: the preset's, off at
    PureJaxRL's settings)."""
    from agents import configs  # noqa: PLC0415

    if preset == "purejaxrl":
        config = peer_settings.purejaxrl_config(seeds, frames, True, runs_per_batch)
        config.learner.grad_norm = False  # the peer's; the diagnostics stay for their own row
    else:
        config = configs.get_config("dqn", "minatar")
        config.num_seeds, config.games = seeds, ("breakout",)
        config.evaluation.update(dict(episodes=1, max_frames=1_000, fresh_reference=False))
        config.run.runs_per_batch = runs_per_batch
    config.frames_per_game = frames
    if batch_size > 0:
        config.learner.batch_size = batch_size
    if grad_norm is not None:
        config.learner.grad_norm = grad_norm
    config.checkpoint_every_frames = config.log_every_frames = frames
    # Learning from the first batch on, so that nearly every iteration of the chunk learns.
    config.replay.min_fill_fraction = config.learner.batch_size / config.replay.capacity
    config.diagnostics.every_frames = configs.get_config("dqn", "minatar").diagnostics.every_frames
    return config


def fastest(run: Callable[[Any], Any], prepare: Callable[[], Any] = lambda: None) -> float:
    """Seconds of the fastest of --repeats calls of ``run(prepare())`` (`benchmarks.timing`)."""
    return timing.fastest_seconds(run, FLAGS.repeats, prepare)


def update_flops(programs, config, state) -> float:
    """FLOPs of one seed's learn step (replay sample -> update) by XLA's cost analysis: the loop's
    learn step, lowered as the loop lowers it, on the first seed's learner and replay."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from agents.learner import make_learn_step  # noqa: PLC0415
    from plasticity import runtime  # noqa: PLC0415

    # The first seed's learner and replay (the state has a seed axis, even of one).
    train_state, replay = jax.tree.map(lambda x: x[0], (state.train_state, state.replay))
    learn_step = jax.jit(make_learn_step(programs.learner, config))
    with runtime.compiled_loop_lowering():
        executable = learn_step.lower(
            train_state, replay, jax.random.key(0), jnp.float32(0.5)
        ).compile()
    return timing.compiled_flops(executable)


def chunk_seconds(config, top_ops: int = 0) -> tuple[dict[str, float], list[str]]:
    """Compile seconds, the chunk's seconds with all, no updates, and diagnostics due, and one
    seed's FLOPs per update; with ``top_ops``, the lines of that many operations' traced times in
    the chunk with all due."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from agents import minatar_loop, sequence  # noqa: PLC0415

    segment = sequence.plan_segments(config, minatar_loop.make_blocks(config))[0]
    programs = minatar_loop.make_agent(segment.config, list(config.games), False)
    game = jnp.int32(0)
    seeds = jnp.arange(config.num_seeds, dtype=jnp.int32)
    state = programs.start_block(programs.init(seeds), game, sequence.SwitchPolicy(), 0)
    window = segment.plan.window(0, 0, config.frames_per_game // config.env.num_envs)
    flags_due = minatar_loop.per_iteration_flags(segment, 0, window)
    plan = {**segment.schedule_values(window), "updates": window["updates"], **flags_due}
    plans = {
        "all": {**plan, "diagnose": np.zeros_like(plan["diagnose"])},
        "no_updates": {
            **plan,
            "updates": np.zeros_like(plan["updates"]),
            "diagnose": np.zeros_like(plan["diagnose"]),
        },
        "diagnostics": plan,
    }
    plans = {name: jax.tree.map(jnp.asarray, p) for name, p in plans.items()}
    started = time.perf_counter()
    chunk = minatar_loop.compiled_chunk(programs, state, game, plans["all"])  # as the loop does
    seconds = {"compile": time.perf_counter() - started}
    for name, p in plans.items():  # a fresh copy of the state each time: the chunk donates it
        seconds[name] = fastest(
            lambda fresh, p=p: chunk(fresh, game, p), lambda: jax.tree.map(jnp.copy, state)
        )
    seconds["updates"] = float(np.sum(window["updates"]))
    seconds["flops_per_update"] = update_flops(programs, segment.config, state)
    seconds["diagnoses"] = float(np.sum(flags_due["diagnose"]))
    lines = []
    if top_ops:
        from benchmarks import op_profile  # noqa: PLC0415

        fresh = jax.tree.map(jnp.copy, state)
        profile = op_profile.top_operations(
            lambda: jax.block_until_ready(chunk(fresh, game, plans["all"])),
            chunk.as_text(),
            top_ops,
        )
        lines = [
            f"top {len(profile.rows)} XLA operations of the chunk with all updates due "
            f"({op_profile.HEADER}); traced operations ran during "
            f"{profile.busy_milliseconds:,.0f} ms, their self times add up to "
            f"{profile.traced_milliseconds:,.0f} ms ({1e3 * seconds['all']:,.0f} ms untraced; a "
            f"long chunk's trace holds its first part: see the calls against "
            f"{seconds['updates']:,.0f} updates)"
        ] + op_profile.format_rows(profile)
    return seconds, lines


def env_seconds(config) -> float:
    """Seconds of the environments alone over the chunk's steps (random actions, one program)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from agents.minatar_env import make_suite  # noqa: PLC0415
    from plasticity import runtime  # noqa: PLC0415

    suite = make_suite(tuple(config.games), False, float(config.env.sticky_action_prob))
    num_envs, iterations = int(config.env.num_envs), config.frames_per_game // config.env.num_envs

    def play(key):
        def one(carry, key):
            action_key, step_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_envs,), 0, suite.num_actions)
            carry, timestep = suite.step(carry, jnp.int32(0), actions, step_key)
            return carry, timestep.reward.sum()

        carry = suite.init(num_envs)
        return jax.lax.scan(one, carry, jax.random.split(key, iterations))[1].sum()

    over_seeds = jax.vmap(play) if config.num_seeds > 1 else play
    keys = jax.random.split(jax.random.key(0), config.num_seeds)
    with runtime.compiled_loop_lowering():
        compiled = jax.jit(over_seeds).lower(keys if config.num_seeds > 1 else keys[0]).compile()
    return fastest(lambda _: compiled(keys if config.num_seeds > 1 else keys[0]))


def train_seconds(config) -> float:
    """Wall seconds of a whole `minatar_loop.train` run, its programs compiled by a first run."""
    from agents import minatar_loop  # noqa: PLC0415

    minatar_loop.train(config, None, show_progress=False)
    return fastest(lambda _: minatar_loop.train(config, None, show_progress=False).done)


def main(argv: list[str]) -> None:
    del argv
    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()
    config = breakdown_config(
        FLAGS.preset,
        FLAGS.seeds,
        FLAGS.frames,
        FLAGS.batch_size,
        FLAGS.runs_per_batch,
        FLAGS.grad_norm,
    )
    config.run.cpu_products = FLAGS.cpu_products
    chunk, operations = chunk_seconds(config, FLAGS.top_ops)
    env = env_seconds(config)
    whole = train_seconds(config)
    steps = FLAGS.frames * FLAGS.seeds
    learner = chunk["all"] - chunk["no_updates"]
    rows = [
        ("env", env),
        ("acting + replay", chunk["no_updates"] - env),
        ("learner", learner),
        ("diagnostics", chunk["diagnostics"] - chunk["all"]),
        ("host", whole - chunk["diagnostics"]),
    ]
    print(runtime.hardware_line())
    print(
        f"MinAtar loop, preset {FLAGS.preset}: {FLAGS.seeds} seed(s) x {FLAGS.frames:,} steps, "
        f"{config.env.num_envs} envs, {chunk['updates']:.0f} updates of batch "
        f"{config.learner.batch_size} per seed, {chunk['diagnoses']:.0f} diagnostics; compile "
        f"{chunk['compile']:.1f} s (apart); {peer_settings.seed_mapping(config)}; "
        f"{peer_settings.products_in_words(config)}"
    )
    for name, seconds in rows:
        if name == "diagnostics" and not chunk["diagnoses"]:
            period = config.diagnostics.every_frames
            print(f"  {name:<16} {'none due':>8}    (--frames below their period, {period:,})")
            continue
        if seconds < 0:  # a difference of two timings smaller than their noise
            print(f"  {name:<16} {'~0':>8} s  (within the timing noise: {seconds:.3f} s)")
            continue
        print(
            f"  {name:<16} {seconds:8.3f} s  {seconds / whole:6.1%}  "
            f"{1e6 * seconds / steps:8.2f} us per env step"
        )
    print(
        f"  {'whole run':<16} {whole:8.3f} s  {1:6.1%}  {1e6 * whole / steps:8.2f} us per env step "
        f"-> {steps / whole:,.0f} env steps/s; learner {1e3 * learner / chunk['updates']:.3f} ms "
        f"per update of all {FLAGS.seeds} seed(s)"
    )
    if learner > 0:  # a learner row within the timing noise has no rate
        achieved = chunk["flops_per_update"] * chunk["updates"] * FLAGS.seeds / learner
        reference = timing.matmul_flops(FLAGS.matmul_size)
        print(
            f"  learner FLOP/s   {achieved / 1e9:8.1f} GFLOP/s "
            f"({chunk['flops_per_update'] / 1e6:.1f} MFLOP per update, XLA cost analysis, all "
            f"seeds) vs {FLAGS.matmul_size}^2 matmul {reference / 1e9:,.1f} GFLOP/s "
            f"({achieved / reference:.0%})"
        )
    if operations:
        print("\n".join(operations))


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "loop_breakdown")
