"""Cost of the compiled diagnostics: training with diagnostics every K steps against none.

  python -m benchmarks.diagnostics_cost [--steps=2000] [--every=100] [--repeats=5]
      [--names=default] [--probe_size=256] [--seeds=1]
  python -m benchmarks.diagnostics_cost --loop=minatar|atari [--frames=...] [--every_frames=0]
      [--repeats=5]

``--loop=minatar`` and ``--loop=atari`` time the RL trainers users run (`agents.minatar_loop.train`
and `agents.atari_loop.train` with the agent preset's diagnostics, at the preset's period
``diagnostics.every_frames``) against the same run with diagnostics off: each arm is run once to
compile, then timed ``--repeats`` times, interleaved; the ratio must stay ≤ 1.1 (the target of
diagnostics on by default). Where the preset's period is longer than the run (Atari: 250,000
frames against the default run of 8,192), no diagnostics would be due, so they run every half run
instead, more often than the preset's: the ratio then bounds their cost from above. The number of
diagnostics a run takes is printed.

The workload is the testbed's default continual-learning scale: random-label memorization with an
MLP 64 → 3×256 → 10 (Dense → LayerNorm → ReLU), Adam 1e-3, batch 128. Both programs are one
`lax.scan` over blocks of K steps (an inner scan of K updates); the diagnostics program also runs
`make_diagnostics_fn(...)` on a fixed probe batch after every block, which is how a vmapped
trainer should schedule them (a `lax.cond` under vmap would run them every step). Prints compile
times apart, the median time per run over interleaved repeats, and the ratio (target ≤ 1.2× for
the default diagnostics every 100 steps: the median over back-to-back pairs), with the hardware.
"""

from __future__ import annotations

import os

# XLA:CPU runs SVD / eigh through LAPACK from SciPy's OpenBLAS, whose own thread pool fights XLA's
# threads (and anything else on the machine): measured ~10× slower per call on a busy 2-core host.
# One BLAS thread is the setting to run the diagnostics with; export another value to compare.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import timing  # noqa: E402
from plasticity import diagnostics, networks, runtime  # noqa: E402


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_integer("steps", 2000, "Optimizer steps per run.", lower_bound=1)
    flags.DEFINE_integer("every", 100, "Diagnostics period K in steps.", lower_bound=1)
    flags.DEFINE_integer("repeats", 5, "Timed repeats per arm (median reported).", lower_bound=1)
    flags.DEFINE_list(
        "names", ["default"], "Diagnostics to run ('default' = DEFAULT_DIAGNOSTICS, 'all' = all)."
    )
    flags.DEFINE_integer(
        "probe_size", 256, "Examples in the diagnostics probe batch.", lower_bound=1
    )
    flags.DEFINE_integer("seeds", 1, "Seeds vmapped in one program.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
    flags.DEFINE_integer("width", 256, "Hidden width of the 3-layer MLP.", lower_bound=1)
    flags.DEFINE_enum(
        "loop", "continual", ["continual", "minatar", "atari"], "Which trainer to measure."
    )
    flags.DEFINE_integer(
        "frames", 0, "RL loops: frames per timed run (0: the loop's own).", lower_bound=0
    )
    flags.DEFINE_integer(
        "every_frames",
        0,
        "RL loops: diagnostics period in frames (0: the preset's, or half the run where the "
        "preset's is longer than the run).",
        lower_bound=0,
    )


NUM_EXAMPLES, INPUT_DIM, NUM_CLASSES = 1797, 64, 10


def resolve_names(names: list[str]) -> tuple[str, ...]:
    """'default' and 'all' expand to the library's lists; anything else is passed through."""
    if names == ["default"]:
        return diagnostics.DEFAULT_DIAGNOSTICS
    if names == ["all"]:
        return diagnostics.ALL_DIAGNOSTICS
    return diagnostics.check_names([n for n in names if n])


def make_runner(
    names: tuple[str, ...],
    steps: int,
    every: int,
    batch_size: int,
    width: int,
    probe_size: int,
    seeds: int,
):
    """A jitted run(params, opt_state, data) over `seeds` vmapped seeds, and its arguments."""
    if steps % every:
        raise ValueError(f"--every ({every}) must divide --steps ({steps}).")
    model = networks.MLP((width,) * 3, NUM_CLASSES, "layernorm")
    tx = optax.adam(1e-3)

    def loss_fn(params, inputs, targets):
        logits = model.apply({"params": params}, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    diagnose = diagnostics.make_diagnostics_fn(model, loss_fn, names) if names else None

    def run(params, opt_state, inputs, labels, rng):
        probe_x, probe_y = inputs[:probe_size], labels[:probe_size]

        def update(carry, step):
            params, opt_state = carry
            index = (step * batch_size + jnp.arange(batch_size)) % NUM_EXAMPLES
            grads = jax.grad(loss_fn)(params, inputs[index], labels[index])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        def block(carry, start):
            previous = carry[0]
            carry, _ = jax.lax.scan(update, carry, start + jnp.arange(every))
            if diagnose is None:
                return carry, jnp.zeros([])
            metrics = diagnose(
                carry[0], previous, probe_x, probe_y, jax.random.fold_in(rng, start), 1e-3
            )
            return carry, metrics

        carry, metrics = jax.lax.scan(block, (params, opt_state), jnp.arange(0, steps, every))
        return carry[0], metrics

    data_rng = np.random.default_rng(0)
    inputs = jnp.asarray(data_rng.standard_normal((NUM_EXAMPLES, INPUT_DIM)), jnp.float32)
    labels = jnp.asarray(data_rng.integers(0, NUM_CLASSES, NUM_EXAMPLES), jnp.int32)
    keys = jax.random.split(jax.random.key(0), seeds)
    params = jax.vmap(lambda k: model.init(k, inputs[:1])["params"])(keys)
    opt_state = jax.vmap(tx.init)(params)
    runner = jax.jit(jax.vmap(run, in_axes=(0, 0, None, None, 0)))
    return runner, (params, opt_state, inputs, labels, keys)


def _time(fn, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def rl_config(loop: str):
    """The agent preset of ``loop`` at the size timed here (its own diagnostics period)."""
    from agents import configs  # noqa: PLC0415

    if loop == "minatar":
        config = configs.get_config("dqn", "minatar")
        config.games, config.frames_per_game = ("breakout",), FLAGS.frames or 50_000
        config.checkpoint_every_frames = config.frames_per_game
    else:
        config = configs.get_config("dqn", "atari")
        config.games, config.frames_per_game = ("pong",), FLAGS.frames or 8_192
        config.replay.capacity = 4_096
        config.checkpoint_every_frames = config.frames_per_game
        config.evaluation.update(dict(every_frames=10**9, episodes=1, max_frames=160))
    config.evaluation.fresh_reference = False
    return config


def rl_main() -> None:
    """Times an RL trainer with its preset's diagnostics against none (module docstring)."""
    from agents import atari_loop, minatar_loop  # noqa: PLC0415

    train = {"minatar": minatar_loop.train, "atari": atari_loop.train}[FLAGS.loop]
    configs = {"diagnostics": rl_config(FLAGS.loop)}
    configs["none"] = rl_config(FLAGS.loop)
    configs["none"].diagnostics.every_frames = 0
    preset_every = configs["diagnostics"].diagnostics.every_frames
    if preset_every <= 0 and not FLAGS.every_frames:
        raise ValueError(f"the {FLAGS.loop} preset has diagnostics off (every_frames=0)")
    frames = configs["none"].frames_per_game
    # A period longer than the run would time two identical arms: then half the run.
    shortened = not FLAGS.every_frames and preset_every > frames
    every = FLAGS.every_frames or (max(frames // 2, 1) if shortened else preset_every)
    configs["diagnostics"].diagnostics.every_frames = every
    taken = frames // every  # as `plasticity.run.due_mask` counts them
    if not taken:
        raise ValueError(
            f"no diagnostics are due in a run of {frames:,} frames with --every_frames={every:,}"
        )
    times = {arm: [] for arm in configs}
    for repeat in range(FLAGS.repeats + 1):  # the first repeat compiles
        for arm, config in configs.items():
            start = time.perf_counter()
            train(config, None, show_progress=False)
            if repeat:
                times[arm].append(time.perf_counter() - start)
    print(f"hardware: {runtime.hardware_line()}")
    period = (
        f"half the run, the preset's {preset_every:,} being longer than it"
        if shortened
        else ("the preset's" if every == preset_every else f"the preset's is {preset_every:,}")
    )
    print(
        f"workload: {FLAGS.loop} DQN preset, {frames:,} frames a run; diagnostics every "
        f"{every:,} frames ({period}), {taken} a run: "
        f"{', '.join(configs['diagnostics'].diagnostics.names)}"
    )
    for arm, values in times.items():
        median = float(np.median(values))
        print(f"{arm:>11}: {median:8.2f} s per run ({frames / median:8.0f} frames/s)")
    ratio = float(np.median(np.array(times["diagnostics"]) / np.array(times["none"])))
    verdict = "within" if ratio <= 1.1 else "ABOVE"
    print(
        f"ratio diagnostics/none (median of {FLAGS.repeats} back-to-back pairs): {ratio:.3f}× "
        f"({verdict} the 1.1× target"
        + (
            f"; diagnostics {preset_every / every:,.0f}× as often as the preset's: an upper bound)"
            if shortened
            else ")"
        )
    )


def main(argv):
    del argv
    runtime.apply_runtime_defaults()  # the launchers' settings: devices, random bits, threads
    if FLAGS.loop != "continual":
        rl_main()
        return
    names = resolve_names(FLAGS.names)
    steps, every = FLAGS.steps, FLAGS.every
    arms = {"none": (), "diagnostics": names}
    runners = {}
    for arm, arm_names in arms.items():
        runner, args = make_runner(
            arm_names,
            steps,
            every,
            FLAGS.batch_size,
            FLAGS.width,
            FLAGS.probe_size,
            FLAGS.seeds,
        )
        start = time.perf_counter()
        compiled = runner.lower(*args).compile()
        print(f"compile {arm:>11}: {time.perf_counter() - start:6.2f} s")
        _time(compiled, args)  # warm-up
        runners[arm] = (compiled, args)
    times = {arm: [] for arm in arms}
    for _ in range(FLAGS.repeats):  # interleaved, so machine noise hits both arms alike
        for arm, (compiled, args) in runners.items():
            times[arm].append(_time(compiled, args))
    medians = {arm: float(np.median(t)) for arm, t in times.items()}
    print(f"hardware: {runtime.hardware_line()}")
    print(
        f"workload: MLP {INPUT_DIM}→3×{FLAGS.width}→{NUM_CLASSES} LayerNorm, Adam, batch "
        f"{FLAGS.batch_size}, {steps} steps × {FLAGS.seeds} seed(s); diagnostics every {every} "
        f"steps on {FLAGS.probe_size} probe examples: {', '.join(names)}"
    )
    for arm, median in medians.items():
        rate = steps * FLAGS.seeds / median
        print(f"{arm:>11}: {median * 1e3:8.1f} ms per run ({rate:8.0f} steps/s)")
    # Pairs timed back to back share the machine's state: their ratios are steadier than the
    # ratio of the medians on a busy host.
    ratio = float(np.median(np.array(times["diagnostics"]) / np.array(times["none"])))
    verdict = "within" if ratio <= 1.2 else "ABOVE"
    print(
        f"ratio diagnostics/none (median of {FLAGS.repeats} back-to-back pairs): {ratio:.3f}× "
        f"({verdict} the 1.2× target)"
    )


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "diagnostics_cost")
