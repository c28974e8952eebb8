r"""The project at its peers' exact settings, through the code users run: figures to set beside them.

  python -m benchmarks.peers --workload=minatar_purejaxrl [--seeds=1] [--steps=200000]
      [--runs_per_batch=0] [--cpu_products=auto|xla|ynnpack]
  python -m benchmarks.peers --workload=atari_cleanrl [--steps=4096] [--game=Breakout]
  python -m benchmarks.peers --workload=bitflip_lop [--seeds=1] [--examples=1000000]
  python -m benchmarks.peers --workload=permuted_mnist_lop [--examples=2000] [--data_dir=DIR]
      [--defer_dense_updates=16]
  python -m benchmarks.peers --workload=... --peer_command="CMD" [--rounds=2]

Each workload prints the hardware line and the project's throughput (compile apart); run the peer's
command (below) right before and after on the same machine, quiet (``cat /proc/loadavg``), and
report the ratio. ``--peer_command`` does that in one run: it alternates the peer and the project,
starting and ending with the peer (``--rounds`` project runs), and prints each project run's ratio
to the faster of the two peer runs beside it, the pairing that flatters the project least. Given
several times (a peer's variants, such as CleanRL with torch's default threads and with one), each
peer turn runs every command and keeps the fastest figure. Each project turn reports the median of
``--repeats`` runs (MinAtar, bit flipping, permuted MNIST) where a peer command usually times one;
``--repeats=1`` makes the two turns alike. A command runs in a shell (its own checkout and venv:
``cd ~/purejaxrl && ~/peer-venv/bin/python time_dqn.py``) and must print its figure in the
workload's unit: the last ``<number> env steps/s`` (MinAtar, all seeds together), ``agent steps/s``
(Atari) or ``examples/s`` (bit flipping all seeds together, permuted MNIST) in its output is read.
Peers run from their own checkouts, never from this repository; the adaptations a current software
stack needs are listed with each. On a GPU, give both processes a share of its memory
(``XLA_PYTHON_CLIENT_MEM_FRACTION=0.3``): the project's process holds the card while a JAX peer's
runs, and each would otherwise preallocate 75% of it. The configs are in
`benchmarks.peer_settings`; the measured tables are in BUILD_NOTES.md ("Peers", "On a GPU").

* ``minatar_purejaxrl``: PureJaxRL's ``purejaxrl/dqn.py`` (CleanRL's DQN in JAX) on Breakout-MinAtar:
  10 envs, MLP 120-84, Adam 2.5e-4, batch 128, one update every 10 env steps (one per loop
  iteration), buffer 10k, learning from 10k steps, target copied every 500 steps, epsilon 1 -> 0.05
  over 250k steps, squared TD loss, no sticky actions. The project runs `agents.minatar_loop.train`
  (wall time, with its evaluation episode and host work; diagnostics and the per-update gradient
  norm off as the peer has neither, ``--diagnostics`` keeps both). Its seeds run as the project
  runs them by default: spread over the devices, and on CPUs one at a time on each, which is
  6-26% faster here than vmapping them (BUILD_NOTES.md); ``--runs_per_batch=0`` vmaps them as the
  peer does. The peer: in a
  checkout of luchris429/purejaxrl with ``flashbax`` installed, time
  ``jax.jit(jax.vmap(make_train(config)))`` on ``jax.random.split(key, SEEDS)`` with the config
  above and ``ENV_NAME='Breakout-MinAtar'`` (compile apart). gymnax 1.0 returns (obs, state,
  reward, terminated, truncated, info) where the file unpacks five values: wrap its ``LogWrapper``
  so that ``done = terminated | truncated``; jax 0.10 has no ``jax.tree_map``: alias
  ``jax.tree.map``; the file imports ``wandb``: stub it.
* ``atari_cleanrl``: CleanRL's ``cleanrl/dqn_atari.py`` (PyTorch): Breakout, one env, Nature CNN,
  Adam 1e-4, batch 32, one update every 4 agent steps, target every 1,000 steps, squared TD loss,
  epsilon to 0.01. The project runs `agents.atari_loop.train` with a 10k replay, learning from 1,000
  agent steps, and reports agent steps/s over its log intervals once learning runs (the first, which
  compiles the update, left out). The peer: ``python cleanrl/dqn_atari.py --env-id
  BreakoutNoFrameskip-v4 --learning-starts 1000 --buffer-size 10000``, timing the steps after
  learning starts. With gymnasium 1.x: ``gymnasium.register_envs(ale_py)``; alias
  ``GrayScaleObservation`` to ``GrayscaleObservation`` and ``FrameStack(env, 4)`` to
  ``FrameStackObservation(env, stack_size=4)``; give ``SyncVectorEnv`` same-step autoreset and the
  0.29 ``final_info`` layout the file reads. Compare with torch's default threads and with
  ``torch.set_num_threads(1)``, and take the peer's faster figure.
* ``bitflip_lop``: loss-of-plasticity's slowly-changing regression (``lop/slowly_changing_regression``,
  backprop, ``cfg/sgd/bp/relu.json`` at step size 0.01): 20 bits, 15 flipping one at a time every
  10,000 examples, a target of 100 LTUs, learner 20-5-1 ReLU, SGD, batch 1. The project runs the
  continual sweep (`benchmarks.continual_sweep.run_experiment`, what ``scripts.train_continual``
  runs) on the same task, seeds vmapped. The peer: generate its data with
  ``generate_problem_data`` and run ``expr.expr`` on that config, timing the per-example loop.
* ``permuted_mnist_lop``: loss-of-plasticity's online permuted MNIST (``lop/permuted_mnist``,
  ``cfg/bp/std_net.json``): 784-2000-2000-2000-10 ReLU, SGD 0.003, batch 1. The project runs the
  continual sweep on the same network; without ``--data_dir`` on random MNIST-shaped data (batch-1
  throughput does not depend on the pixels, and nothing is downloaded), with the config's
  deferred dense updates (16 steps; ``--defer_dense_updates=0`` applies every update at its step).
  It also measures this machine's copy bandwidth and prints the memory bound of per-step updates:
  each step must read every weight twice (forward, backward) and write it once (update). The peer:
  ``online_expr.online_expr`` on that config (with random data of MNIST's shapes in place of its
  pickle, and ``to_log`` off, which halves its speed when on), timing the per-example loop.
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple

from absl import flags

from benchmarks import peer_settings, side_by_side, timing

# Each workload and the unit of its figure, which a peer's output must name too.
UNITS = {
    "minatar_purejaxrl": "env steps/s",
    "atari_cleanrl": "agent steps/s",
    "bitflip_lop": "examples/s",
    "permuted_mnist_lop": "examples/s",
}
WORKLOADS = tuple(UNITS)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the benchmark's flags; called only when it runs as a program, so that importing
    it (the tests do) defines no global flags that could clash with another benchmark's."""
    flags.DEFINE_enum("workload", "minatar_purejaxrl", list(WORKLOADS), "Peer settings.")
    flags.DEFINE_integer("seeds", 1, "Seeds trained together.", lower_bound=1)
    flags.DEFINE_integer(
        "runs_per_batch",
        None,
        "MinAtar: seeds each device vmaps at once (0: all, as the peer does; unset: the project's "
        "default, one at a time on CPUs).",
        lower_bound=0,
    )
    peer_settings.define_cpu_products_flag()
    flags.DEFINE_integer(
        "steps",
        0,
        "Env steps per seed (MinAtar; default 200,000) or agent steps (Atari; 4,096).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "examples",
        0,
        "Examples per seed (bit flipping: 1,000,000; permuted MNIST: 2,000).",
        lower_bound=0,
    )
    flags.DEFINE_string("game", "Breakout", "Atari game of atari_cleanrl.")
    flags.DEFINE_string(
        "data_dir",
        None,
        "MNIST IDX files for permuted_mnist_lop (default: random MNIST-shaped data).",
    )
    flags.DEFINE_bool(
        "diagnostics",
        False,
        "minatar_purejaxrl: keep the preset's diagnostics and gradient norm on.",
    )
    flags.DEFINE_integer(
        "defer_dense_updates",
        None,
        "bitflip_lop, permuted_mnist_lop: the trainer's run.defer_dense_updates (K > 1 applies the "
        "SGD kernel updates once per K steps, the same SGD; see plasticity.deferred; unset: the "
        "config's, 16 for permuted MNIST as in dohare:paper; 0: every update at its step).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "repeats", 3, "Timed runs after the compiling one (median).", lower_bound=1
    )
    flags.DEFINE_multi_string(
        "peer_command",
        [],
        "Shell command that runs the peer at the workload's settings and prints its figure in the "
        "workload's unit; with it, peer and project runs alternate (see the module docstring). "
        "Repeat it for the peer's variants (torch threads, say): each peer turn runs them all and "
        "keeps the fastest.",
    )
    flags.DEFINE_integer(
        "rounds", 2, "With --peer_command: project runs, each between two peer runs.", lower_bound=1
    )


class Measurement(NamedTuple):
    """A project run's figure (in its workload's `UNITS`) and the line that reports it."""

    figure: float
    line: str


def timed_runs(run_once: Callable[[], float]) -> tuple[float, int]:
    """(median seconds, runs timed) of --repeats calls of ``run_once`` after a compiling one;
    ``run_once`` returns the seconds it counts (wall time, or a trainer's own run time)."""
    import numpy as np  # noqa: PLC0415

    seconds = [run_once() for _ in range(FLAGS.repeats + 1)][1:]
    return float(np.median(seconds)), len(seconds)


def minatar_purejaxrl() -> Measurement:
    from agents import minatar_loop  # noqa: PLC0415

    steps = FLAGS.steps or 200_000
    config = peer_settings.purejaxrl_config(
        FLAGS.seeds, steps, FLAGS.diagnostics, FLAGS.runs_per_batch
    )
    config.run.cpu_products = FLAGS.cpu_products

    def run_once() -> float:
        started = time.perf_counter()
        minatar_loop.train(config, None, show_progress=False)
        return time.perf_counter() - started

    best, runs = timed_runs(run_once)
    total = steps * FLAGS.seeds
    line = (
        f"minatar_purejaxrl: project {FLAGS.seeds} seed(s) x {steps:,} steps: {best:.2f} s "
        f"(median of {runs}, wall time with evaluation and host work) -> {total / best:,.0f} env "
        f"steps/s total ({total / best / FLAGS.seeds:,.0f} per seed); diagnostics and gradient "
        f"norm {'on' if FLAGS.diagnostics else 'off'}; {peer_settings.seed_mapping(config)}; "
        f"{peer_settings.products_in_words(config)}"
    )
    return Measurement(total / best, line)


def atari_cleanrl() -> Measurement:
    import statistics  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from agents import atari_loop  # noqa: PLC0415
    from plasticity import workdir  # noqa: PLC0415

    steps = FLAGS.steps or 4_096
    config = peer_settings.cleanrl_config(FLAGS.game, steps)
    with tempfile.TemporaryDirectory() as directory:
        atari_loop.train(config, directory, show_progress=False)
        rows = [row for row in workdir.read_metrics(directory) if row["event"] == "train"]
    # Rows while filling the replay (no updates yet) are left out, as in the peer's figure, which
    # counts steps after learning starts; so is the first with updates (it compiles the update).
    skip = config.env.frame_skip
    rates = [row["frames_per_second"] / skip for row in rows if row.get("updates_per_second")][1:]
    if not rates:
        raise ValueError("no log interval with learning: raise --steps")
    line = (
        f"atari_cleanrl: project {FLAGS.game}, 1 env, Nature CNN, batch 32, one update per 4 "
        f"agent steps: {statistics.median(rates):,.1f} agent steps/s with learning on (median of "
        f"{len(rates)} log intervals of {config.log_every_frames // skip:,} agent steps)"
    )
    return Measurement(statistics.median(rates), line)


def sweep_rate(config, dataset=None) -> tuple[float, int, float]:
    """(median run seconds, runs timed, compile seconds) of a continual sweep of one variant
    through `benchmarks.continual_sweep.run_experiment`, the trainer ``train_continual`` runs."""
    from benchmarks import continual_sweep  # noqa: PLC0415

    compiled = []

    def run_once() -> float:
        kwargs = {} if dataset is None else {"dataset": dataset}
        result = continual_sweep.run_experiment(config, None, show_progress=False, **kwargs)
        compiled.append(sum(result.outputs["compile_seconds"].values()))
        return sum(result.outputs["run_seconds"].values())

    best, runs = timed_runs(run_once)
    return best, runs, compiled[0]


def bitflip_lop() -> Measurement:
    examples = FLAGS.examples or 1_000_000
    config = peer_settings.bitflip_config(FLAGS.seeds, examples)
    if FLAGS.defer_dense_updates is not None:
        config.run.defer_dense_updates = FLAGS.defer_dense_updates
    task = config.variants["bit_flipping/backprop"].task
    examples = task.num_tasks * task.flip_period
    best, runs, compile_seconds = sweep_rate(config)
    total = examples * FLAGS.seeds
    line = (
        f"bitflip_lop: project {FLAGS.seeds} seed(s) x {examples:,} examples: {best:.2f} s "
        f"(median of {runs}; compile {compile_seconds:.1f} s apart) -> {total / best:,.0f} "
        f"examples/s total ({total / best / FLAGS.seeds:,.0f} per seed)"
    )
    return Measurement(total / best, line)


def copy_bandwidth(megabytes: float = 512) -> float:
    """Bytes/s this machine's memory moves (read + write) in a NumPy copy of `megabytes` into
    another array: the fastest of 5. At 512 MB both arrays are far beyond any cache."""
    import numpy as np  # noqa: PLC0415

    source = np.ones(int(megabytes * 2**20) // 4, np.float32)
    target = np.empty_like(source)
    return 2 * source.nbytes / timing.fastest_seconds(lambda _: np.copyto(target, source), 5)


def update_bandwidth(nbytes: int) -> float:
    """Bytes/s (read + write) of an in-place update of one array of `nbytes`, the way SGD rewrites
    its weights: from the cache where the cache holds them (a large L3), else from memory."""
    import numpy as np  # noqa: PLC0415

    weights = np.ones(nbytes // 4, np.float32)
    seconds = timing.fastest_seconds(lambda _: np.add(weights, 0.0, out=weights), 5)
    return 2 * weights.nbytes / seconds


def permuted_mnist_lop() -> Measurement:
    examples = FLAGS.examples or 2_000
    config = peer_settings.permuted_mnist_config(examples)
    if FLAGS.defer_dense_updates is not None:
        config.run.defer_dense_updates = FLAGS.defer_dense_updates
    window = int(config.run.defer_dense_updates)
    dataset = None if FLAGS.data_dir else peer_settings.mnist_shaped_noise(max(examples, 1_000))
    if FLAGS.data_dir:
        config.data.data_dir = FLAGS.data_dir
    best, runs, compile_seconds = sweep_rate(config, dataset)
    sizes = (784, 2000, 2000, 2000, 10)
    weight_bytes = 4 * sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    bandwidth, in_cache = copy_bandwidth(), update_bandwidth(weight_bytes)
    # Each step reads every weight twice (forward, backward) and writes it once (update).
    bound, cache_bound = bandwidth / (3 * weight_bytes), in_cache / (3 * weight_bytes)
    rate = examples / best
    deferred = (
        f"; dense updates deferred over {window} steps (plasticity.deferred): "
        f"{2 + 2 / window:.2f} passes a step"
        if window > 1
        else ""
    )
    line = (
        f"permuted_mnist_lop: project 784-3x2000-10, SGD, batch 1, {examples:,} examples: "
        f"{best:.2f} s (median of {runs}; compile {compile_seconds:.1f} s apart) -> {rate:,.1f} "
        f"examples/s; memory bound {bound:,.1f} examples/s ({bandwidth / 1e9:.1f} GB/s copy "
        f"bandwidth / 3 passes over {weight_bytes / 1e6:.1f} MB of weights): {rate / bound:.2f}x "
        f"the bound; at the weights' size (in-place update, {in_cache / 1e9:.1f} GB/s) "
        f"{cache_bound:,.1f}: {rate / cache_bound:.2f}x{deferred}; data "
        f"{'from ' + FLAGS.data_dir if FLAGS.data_dir else 'random, MNIST-shaped'}"
    )
    return Measurement(rate, line)


def main(argv) -> None:
    del argv
    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()  # as the launchers: the same random-bit layout and threads
    workloads = {
        "minatar_purejaxrl": minatar_purejaxrl,
        "atari_cleanrl": atari_cleanrl,
        "bitflip_lop": bitflip_lop,
        "permuted_mnist_lop": permuted_mnist_lop,
    }
    measure, unit = workloads[FLAGS.workload], UNITS[FLAGS.workload]

    def run_project_once() -> float:
        measurement = measure()
        print(f"{measurement.line}  [load {os.getloadavg()[0]:.2f}]", flush=True)
        return measurement.figure

    def run_peer_once() -> float:
        figures = []
        for number, command in enumerate(FLAGS.peer_command, 1):
            figures.append(side_by_side.run_peer(command, unit))
            variant = f" (command {number})" if len(FLAGS.peer_command) > 1 else ""
            print(
                f"peer{variant}: {figures[-1]:,.1f} {unit}  [load {os.getloadavg()[0]:.2f}]",
                flush=True,
            )
        return max(figures)

    print(runtime.hardware_line(), flush=True)
    # A ValueError (a bad setting, missing files, a failed peer) ends the run with one line
    # (`benchmarks.timing.run_main`).
    if not FLAGS.peer_command:
        run_project_once()
    else:
        peers, projects = side_by_side.alternate(run_peer_once, run_project_once, FLAGS.rounds)
        print(side_by_side.ratio_line(peers, projects, unit))


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "peers")
