r"""Where the continual trainer's time goes: compile, compiled run, diagnostics, host; and data.

  python -m benchmarks.continual_breakdown [--workload=bitflip|permuted_mnist] [--seeds=1]
      [--examples=0] [--diagnostics_every=0] [--repeats=3]

The run is the one `train_continual` runs (`benchmarks.continual_sweep.run_experiment`, no work
dir) at a peer's settings (`benchmarks.peer_settings`: loss-of-plasticity's bit flipping, or its
online permuted MNIST on random MNIST-shaped data, since nothing is downloaded). Its parts:

* ``compile``: the runner's own compile seconds, apart;
* ``compiled run``: the runner's compiled seconds without diagnostics: every step's batch,
  forward, backward and update, and the end-of-task evaluation, in one program;
* ``diagnostics``: the run with diagnostics every ``--diagnostics_every`` steps (the config's
  diagnostic names) minus the run without;
* ``host``: `run_experiment`'s wall time minus its compile and compiled-run seconds (the
  compile seconds count the runs' initial-state program too): the plan, rows, progress and
  checkpoints;
* ``data alone``: the trainer's `Trainer.draw_batches` on the runner's run keys, mapped over the
  devices and lowered (`runtime.compiled_loop_lowering`) as the runner does `train`: the task
  switches and every step's batch (bit flipping's targets come from its target network), drawn
  as training draws them, with no learner. It is printed beside the others, not subtracted from
  the run: at batch 1 both programs are made of many tiny operations that XLA fuses differently
  in each, so their times do not add up.

Each figure is the fastest of ``--repeats`` runs (noise on a shared machine only adds time).
"""

from __future__ import annotations

import time

import ml_collections
from absl import flags

from benchmarks import peer_settings, timing

WORKLOADS = ("bitflip", "permuted_mnist")


def define_flags() -> None:
    """The command line's flags, defined only when the module runs as a program, so that tests
    can import it beside other benchmarks that define flags of the same names."""
    flags.DEFINE_enum("workload", "bitflip", list(WORKLOADS), "Which peer's settings.")
    flags.DEFINE_integer(
        "seeds", 1, "Seeds (bit flipping only; permuted MNIST runs one).", lower_bound=1
    )
    flags.DEFINE_integer(
        "examples",
        0,
        "Examples per run (0: 200,000 for bit flipping, 2,000 for permuted MNIST).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "diagnostics_every",
        0,
        "Steps between diagnostics for the diagnostics row (0: no row).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "repeats", 3, "Timed runs of each part; the fastest is reported.", lower_bound=1
    )


def workload_config(workload: str, seeds: int, examples: int) -> ml_collections.ConfigDict:
    """The peer preset of ``workload`` (diagnostics off)."""
    if workload == "bitflip":
        return peer_settings.bitflip_config(seeds, examples or 200_000)
    if seeds != 1:
        raise ValueError(f"permuted_mnist runs one seed, got --seeds={seeds}")
    return peer_settings.permuted_mnist_config(examples or 2_000)


def with_diagnostics(config: ml_collections.ConfigDict, every: int) -> ml_collections.ConfigDict:
    """``config`` with its diagnostics taken every ``every`` steps, in every variant."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.diagnostics.every = every
    for name in config.variant_order:
        config.variants[name].diagnostics = {"every": every}
    return config


def trainer_kwargs(workload: str, examples: int) -> dict:
    """The runner's trainer arguments: random MNIST-shaped data for permuted MNIST (nothing is
    downloaded); none for bit flipping, a stream."""
    if workload == "permuted_mnist":
        return {"dataset": peer_settings.mnist_shaped_noise(max(examples or 2_000, 1_000))}
    return {}


def run_seconds(config, kwargs: dict, repeats: int) -> dict[str, float]:
    """Fastest compiled-run seconds, the host's seconds around them and the first compile."""
    from benchmarks import continual_sweep  # noqa: PLC0415

    compiled, runs, hosts = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = continual_sweep.run_experiment(config, None, show_progress=False, **kwargs)
        wall = time.perf_counter() - started
        compiled.append(sum(result.outputs["compile_seconds"].values()))
        runs.append(sum(result.outputs["run_seconds"].values()))
        hosts.append(wall - compiled[-1] - runs[-1])
    return dict(compile=compiled[0], run=min(runs), host=min(hosts))


def data_seconds(plan, repeats: int) -> float:
    """Fastest seconds of every run's batches drawn alone, laid out and lowered as the runner lays
    out and lowers `train`: the plan's run keys over its mesh (one device per CPU,
    ``run.runs_per_batch`` on each), every variant running every run."""
    import jax  # noqa: PLC0415

    from plasticity import mesh as mesh_lib  # noqa: PLC0415
    from plasticity import runtime  # noqa: PLC0415

    mesh = mesh_lib.make_mesh(plan.config.mesh, num_runs=plan.num_runs)
    keys = mesh_lib.shard_leading_axis(plan.run_keys(), mesh)
    seconds = 0.0
    for _, trainer in plan.variants:
        draw = mesh_lib.over_leading_axis(
            trainer.draw_batches,
            mesh=mesh,
            num_split_args=1,
            runs_per_batch=int(plan.config.run.runs_per_batch),
        )
        data = mesh_lib.replicate(trainer.sequence.data, mesh)
        with runtime.compiled_loop_lowering():
            compiled = jax.jit(draw).lower(keys, data).compile()
        seconds += timing.fastest_seconds(lambda _: compiled(keys, data), repeats)
    return seconds


def examples_of(plan) -> int:
    """Examples trained on by all of a plan's runs, over every variant."""
    return plan.num_runs * sum(
        trainer.num_tasks * trainer.steps_per_task * int(trainer.config.task.batch_size)
        for _, trainer in plan.variants
    )


def breakdown_rows(parts: dict[str, float], examples: int) -> list[str]:
    """One line per part: seconds, share of the whole and microseconds per example; a negative
    difference of two timings reads as zero within their noise."""
    whole = sum(max(seconds, 0.0) for seconds in parts.values())
    rows = []
    for name, seconds in parts.items():
        if seconds < 0:
            rows.append(f"  {name:<13} {'~0':>8} s  (within the timing noise: {seconds:.3f} s)")
            continue
        rows.append(
            f"  {name:<13} {seconds:8.3f} s {seconds / whole:7.1%} "
            f"{1e6 * seconds / examples:10.2f} us per example"
        )
    return [*rows, f"  {'whole run':<13} {whole:8.3f} s  -> {examples / whole:,.0f} examples/s"]


def report(workload: str, seeds: int, examples: int, every: int, repeats: int) -> list[str]:
    """The report's lines; a bad setting raises a ValueError."""
    from benchmarks import continual_sweep  # noqa: PLC0415
    from plasticity import runtime  # noqa: PLC0415

    if repeats < 1 or every < 0:
        raise ValueError("--repeats must be >= 1 and --diagnostics_every >= 0")
    config = workload_config(workload, seeds, examples)
    kwargs = trainer_kwargs(workload, examples)
    plain = run_seconds(config, kwargs, repeats)
    parts = {"compiled run": plain["run"]}
    if every:
        diagnosed = run_seconds(with_diagnostics(config, every), kwargs, repeats)
        parts["diagnostics"] = diagnosed["run"] - plain["run"]
    parts["host"] = plain["host"]
    plan = continual_sweep.plan_experiment(config, **kwargs)
    data = data_seconds(plan, repeats)
    total = examples_of(plan)
    return [
        runtime.hardware_line(),
        f"continual trainer, {workload} at the peer's settings: {int(config.num_seeds)} seed(s) "
        f"x {total // plan.num_runs:,} examples, batch 1; compile {plain['compile']:.1f} s (apart)",
        *breakdown_rows(parts, total),
        f"  {'data alone':<13} {data:8.3f} s {'':7} {1e6 * data / total:10.2f} us per example "
        "(a program of its own; not part of the sum)",
    ]


def main(argv) -> None:
    del argv
    from plasticity import runtime  # noqa: PLC0415

    runtime.apply_runtime_defaults()
    options = flags.FLAGS
    lines = report(  # a bad setting's ValueError is one line (`benchmarks.timing.run_main`)
        options.workload,
        options.seeds,
        options.examples,
        options.diagnostics_every,
        options.repeats,
    )
    print("\n".join(lines))


if __name__ == "__main__":
    define_flags()
    timing.run_main(main, "continual_breakdown")
