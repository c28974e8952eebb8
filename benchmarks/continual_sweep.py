"""The continual sweep runner: every variant × grid point × seed of a config, on the run harness.

`run_experiment` runs the variants of a sweep (`benchmarks.continual_config`) one after another,
each over all its runs (grid points × seeds laid out on one axis, spread over the ``seed`` axis of
the mesh ``config.mesh``, which may span several processes) in chunks of tasks: one compiled call
per chunk (`benchmarks.continual.Trainer.run_tasks`). Everything else is `plasticity.run.Run`'s:
after a chunk its rows are logged and a checkpoint is written; a relaunch resumes from the newest
checkpoint that loads, bit-identical on CPU; a NaN/Inf loss or end-of-task metric stops the
sweep with a one-line `plasticity.divergence.DivergenceError` before that chunk's rows or
checkpoint are written (``run.stop_on_divergence``; off, the rows carry nulls); a stop request
ends it after a checkpoint. In a multi-process job each process fetches the chunk's outputs with
an all-gather, only process 0 writes files and every process takes part in the checkpoints.

Rows (``metrics.jsonl``; see `plasticity.workdir`): 'task' rows at the end of every task and
'diagnostics' rows every ``diagnostics.every`` steps (and at step 0), each carrying ``step``,
``seed``, ``variant``, ``task``, ``task_name`` and the run's grid point; TensorBoard scalars are
seed means tagged ``<variant>[/<grid point>]/<event>/<field>``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from benchmarks import datasets
from benchmarks.continual import Trainer, make_trainer
from benchmarks.continual_config import (
    DIVERGENCE_METRICS,
    GRID_KEYS,
    RESUME_FREE_FIELDS,
    check_mesh_spec,
    grid_points,
    record_probes,
    recorded_defaults,
    swept_keys,
    tasks_per_chunk,
    variant_configs,
)
from plasticity import config_tools, distributed, divergence, runtime
from plasticity import mesh as mesh_lib
from plasticity import workdir as workdir_lib
from plasticity.run import INDEX_FIELDS, Run, RunResult

NAME = "train_continual"


@dataclasses.dataclass
class ExperimentPlan:
    """Everything a sweep runs, validated before anything is written or compiled.

    Runs are laid out on one axis: run r is grid point ``r // num_seeds`` with seed
    ``config.seed + r % num_seeds``.
    """

    config: ml_collections.ConfigDict
    variants: list[tuple[str, Trainer]]
    grid: list[dict[str, float]]
    num_seeds: int
    # A dataset given in Python (``dataset=``), which the config does not name: its
    # `datasets.fingerprint`, recorded with the config so a relaunch on other data is refused.
    provided_data: dict[str, Any] | None = None

    @property
    def num_runs(self) -> int:
        return len(self.grid) * self.num_seeds

    def seed_of(self, run: int) -> int:
        return int(self.config.seed) + run % self.num_seeds

    def point_of(self, run: int) -> dict[str, float]:
        return self.grid[run // self.num_seeds]

    def run_keys(self) -> np.ndarray:
        """(R, 2) uint32 keys, one per run (seed s gives ``PRNGKey(s)``)."""
        return np.stack(
            [np.asarray(jax.random.PRNGKey(self.seed_of(r))) for r in range(self.num_runs)]
        )

    def run_hparams(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """{name: (R,) float32} of the swept hyper-parameters."""
        return {
            key: np.asarray([self.point_of(r)[key] for r in range(self.num_runs)], np.float32)
            for key in keys
        }

    def tasks_before(self, variant_index: int) -> int:
        return sum(trainer.num_tasks for _, trainer in self.variants[:variant_index])

    @property
    def total_tasks(self) -> int:
        return self.tasks_before(len(self.variants))


def plan_experiment(config: ml_collections.ConfigDict, **trainer_kwargs) -> ExperimentPlan:
    """Validates the sweep, loads its data and builds every variant's trainer (no compiling)."""
    if int(config.num_seeds) < 1:
        raise ValueError(f"num_seeds must be >= 1, got {config.num_seeds}")
    check_mesh_spec(config.mesh)
    if int(config.run.runs_per_batch) < 0:
        raise ValueError(f"run.runs_per_batch must be >= 0, got {config.run.runs_per_batch}")
    if int(config.run.checkpoints_to_keep) < 1:
        raise ValueError(
            f"run.checkpoints_to_keep must be >= 1, got {config.run.checkpoints_to_keep}"
        )
    grid = grid_points(config)
    config_tools.check_some_intervention_named(
        [variant.intervention for _, variant in variant_configs(config)],
        ("every", "at_task_boundaries"),
    )
    variants = []
    for name, variant in variant_configs(config):
        try:
            variants.append((name, make_trainer(variant, **trainer_kwargs)))
        except ValueError as error:
            raise type(error)(f"variant {name!r}: {error}") from error
    provided = trainer_kwargs.get("dataset")
    provided = datasets.fingerprint(provided) if provided is not None else None
    plan = ExperimentPlan(config, variants, grid, int(config.num_seeds), provided)
    check_memory(plan)
    return plan


def check_memory(plan: ExperimentPlan) -> None:
    """One-line ValueError, before anything is allocated, when the runs of a variant that share
    one memory (their parameters, optimizer and task states; `runtime.runs_in_one_memory` on the
    config's mesh) and its data cannot fit."""
    try:
        mesh = mesh_lib.make_mesh(plan.config.mesh, num_runs=plan.num_runs)
    except ValueError:  # refused in one line by `run_experiment`'s own checks
        mesh = None
    shared = runtime.runs_in_one_memory(plan.num_runs, mesh)
    key = jax.random.PRNGKey(0)
    for name, trainer in plan.variants:
        hparams = {k: 0.0 for k in trainer.hparam_keys}
        shapes = jax.eval_shape(lambda k, t=trainer, h=hparams: t.init(k, h)[0], key)
        per_run = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
        data = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(trainer.sequence.data))
        runtime.check_fits(per_run * shared + data, f"the {plan.num_runs} runs of variant {name!r}")


def _hparam_label(point: Mapping[str, float], keys: Sequence[str]) -> str:
    return ",".join(f"{key}={point[key]:g}" for key in keys)


def _boundary_and_periodic_steps(
    config: ml_collections.ConfigDict, task: int, steps_per_task: int
) -> tuple[list[int], list[int]]:
    """([the task's start] when ``at_task_boundaries`` and it is not the first task, [the
    updates of the task whose count is a multiple of ``every``, but the run's last]): where the
    trainer applies ``config.intervention``, as `continual.make_trainer` runs it (nothing trains
    after the last update, so the saved network stays the one the last evaluation scored, as in
    the RL loops)."""
    if str(config.intervention.name) == "none":
        return [], []
    start, every = task * steps_per_task, int(config.intervention.every)
    boundary = [start] if task > 0 and bool(config.intervention.at_task_boundaries) else []
    if every <= 0:
        return boundary, []
    end = start + steps_per_task
    if task == int(config.task.num_tasks) - 1:
        end -= 1
    return boundary, list(range((start // every + 1) * every, end + 1, every))


def intervention_steps(
    config: ml_collections.ConfigDict, task: int, steps_per_task: int
) -> list[int]:
    """Global steps at which the trainer applies ``config.intervention`` during ``task``: at its
    start when ``at_task_boundaries`` (every task but the first, before its first update), then
    after every update whose count is a multiple of ``every``."""
    boundary, periodic = _boundary_and_periodic_steps(config, task, steps_per_task)
    return boundary + periodic


# A periodic intervention applied more often in a task gets one row there, not one per
# application (noisy updates after every update would write more rows than everything else).
MAX_INTERVENTION_ROWS_PER_TASK = 16


def intervention_events(
    config: ml_collections.ConfigDict, task: int, steps_per_task: int
) -> list[tuple[int, dict[str, Any]]]:
    """(step, fields) of ``task``'s 'intervention' rows: one per application (`intervention_steps`)
    with the intervention's name; a periodic one that can apply more than
    MAX_INTERVENTION_ROWS_PER_TASK times in a task has a single row a task, at its last
    application there, with ``applications`` (the task's count) and ``every`` (every task, so
    that all tasks' rows have one form where the period does not divide them)."""
    boundary, periodic = _boundary_and_periodic_steps(config, task, steps_per_task)
    name = str(config.intervention.name)
    events = [(step, {"name": name}) for step in boundary]
    every = int(config.intervention.every)
    most_in_a_task = -(-steps_per_task // every) if every > 0 else 0
    if periodic and most_in_a_task > MAX_INTERVENTION_ROWS_PER_TASK:
        summary = {"name": name, "applications": len(periodic), "every": every}
        return events + [(periodic[-1], summary)]
    return events + [(step, {"name": name}) for step in periodic]


def chunk_rows(
    plan: ExperimentPlan,
    variant: str,
    trainer: Trainer,
    first_task: int,
    outputs: Mapping[str, Any],
    initial: Mapping[str, np.ndarray] | None,
) -> list[dict[str, Any]]:
    """metrics.jsonl rows of one chunk (host arrays with a leading run axis).

    Values stay NumPy scalars (or small arrays, written as JSON lists) until `WorkDir` writes them.
    """
    rows = []
    task_name = trainer.config.task.name
    swept = swept_keys(plan.config)
    # What the variant trains with where the grid does not sweep (a variant may set its own rate).
    own = {key: float(trainer.config.optimizer[key]) for key in GRID_KEYS if key not in swept}

    def base(event: str, run: int, step: int, task: int) -> dict[str, Any]:
        point = plan.point_of(run)
        return {
            "event": event,
            "step": step,
            "seed": plan.seed_of(run),
            "variant": variant,
            "task": task,
            **{key: point[key] if key in swept else own[key] for key in GRID_KEYS},
            "task_name": task_name,
        }

    if initial:
        for run in range(plan.num_runs):
            rows.append(
                {
                    **base("diagnostics", run, 0, 0),
                    **{key: value[run] for key, value in initial.items()},
                }
            )
    num = next(iter(outputs["task"].values())).shape[1]
    for offset in range(num):
        task = first_task + offset
        for block, step in trainer.diagnostics_steps(task):
            for run in range(plan.num_runs):
                rows.append(
                    {
                        **base("diagnostics", run, step, task),
                        **{
                            key: value[run, offset, block]
                            for key, value in outputs["diagnostics"].items()
                        },
                    }
                )
        for step, fields in intervention_events(trainer.config, task, trainer.steps_per_task):
            rows.extend(
                {**base("intervention", run, step, task), **fields} for run in range(plan.num_runs)
            )
        end_step = (task + 1) * trainer.steps_per_task
        for run in range(plan.num_runs):
            rows.append(
                {
                    **base("task", run, end_step, task),
                    **{key: value[run, offset] for key, value in outputs["task"].items()},
                }
            )
    return rows


def _run_label(plan: ExperimentPlan, variant: str, run: int) -> str:
    """'variant 'x', seed 3, learning_rate=0.01': where a run sits in the sweep (for messages)."""
    point = _hparam_label(plan.point_of(run), swept_keys(plan.config))
    return f"variant {variant!r}, seed {plan.seed_of(run)}" + (f", {point}" if point else "")


def find_divergence(
    plan: ExperimentPlan,
    variant: str,
    trainer: Trainer,
    first_task: int,
    outputs: Mapping[str, Any],
) -> tuple[int, str, float, str] | None:
    """(step, metric, value, run label) of the earliest NaN/Inf of a chunk, or None.

    Training losses are checked at every step (the compiled program reports the first bad one);
    the end-of-task metrics of DIVERGENCE_METRICS at the end of each task.
    """
    found = []
    health = outputs["health"]
    for run, offset in zip(*np.nonzero(health["nonfinite_loss_step"] >= 0)):
        found.append(
            (
                int(health["nonfinite_loss_step"][run, offset]),
                "loss",
                float(health["nonfinite_loss_value"][run, offset]),
                int(run),
            )
        )
    for name in DIVERGENCE_METRICS:
        if name in outputs["task"]:
            values = np.asarray(outputs["task"][name], np.float64)
            for run, offset in zip(*np.nonzero(~np.isfinite(values))):
                step = (first_task + int(offset) + 1) * trainer.steps_per_task
                found.append((step, name, float(values[run, offset]), int(run)))
    if not found:
        return None
    step, metric, value, run = min(found, key=lambda item: (item[0], item[3]))
    return step, metric, value, _run_label(plan, variant, run)


def _tag_prefix(plan: ExperimentPlan) -> Callable[[Mapping[str, Any]], str]:
    swept = swept_keys(plan.config)

    def prefix(row: Mapping[str, Any]) -> str:
        point = _hparam_label(row, swept)
        return f"{row['variant']}/{point}" if point else str(row["variant"])

    return prefix


def check_mesh_fits_runs(mesh, plan: ExperimentPlan) -> None:
    """One-line ValueError unless the mesh's ``seed`` axis splits the sweep's runs evenly (and,
    in a multi-process job, spans every process's devices): `plasticity.mesh.check_seed_split`."""
    runs = f"the {plan.num_runs} runs (num_seeds={plan.num_seeds} x {len(plan.grid)} grid point(s))"
    mesh_lib.check_seed_split(mesh, plan.config.mesh, plan.num_runs, runs)


def run_experiment(
    config: ml_collections.ConfigDict,
    workdir: str | Path | None,
    *,
    plan: ExperimentPlan | None = None,
    name: str = NAME,
    show_progress: bool | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_after_checkpoints: int | None = None,
    signal_name: Callable[[], str | None] | None = None,
    **trainer_kwargs,
) -> RunResult:
    """Runs (or resumes) every variant × grid point × seed of a sweep (see the module docstring).

    ``stop_after_checkpoints`` ends the call after that many chunks (time slices, tests);
    ``should_stop`` is asked after every chunk's checkpoint but the last (a collective in a
    multi-process job). The result's ``outputs`` hold ``final_carries`` ({variant: final run
    states}, for variants finished in this call), ``compile_seconds`` and ``run_seconds`` per
    variant and a ``summary`` line per variant.
    """
    plan = plan or plan_experiment(config, **trainer_kwargs)
    mesh = mesh_lib.make_mesh(config.mesh, num_runs=plan.num_runs)
    check_mesh_fits_runs(mesh, plan)  # before the work dir is written
    total = sum(t.num_tasks * t.steps_per_task for _, t in plan.variants)
    show = bool(config.run.progress) if show_progress is None else show_progress
    where = [name] + ([Path(workdir).name] if workdir else [])  # as the RL launchers' bars
    # The device layout of several devices, named as one (a bare '[seed:2]' read as a seed).
    layout = f" [mesh {mesh_lib.format_mesh(mesh)}]" if mesh.size > 1 else ""
    label = " ".join(where) + layout
    recorded = record_probes(config.to_dict())
    if plan.provided_data is not None:
        recorded["data"]["provided"] = plan.provided_data
    harness = Run(
        name,
        workdir,
        recorded,
        total=total,
        unit="step",
        x_key="step",
        resume_free=RESUME_FREE_FIELDS,
        keep_checkpoints=int(config.run.checkpoints_to_keep),
        tensorboard=bool(config.run.tensorboard),
        show_progress=show,
        should_stop=should_stop,
        stop_after_checkpoints=stop_after_checkpoints,
        tag_prefix=_tag_prefix(plan),
        index_fields=INDEX_FIELDS + GRID_KEYS,
        description=label,
        signal_name=signal_name,
        budget_hint="lower --config.task.num_tasks or --config.task.steps_per_task for a shorter run",
        defaults=recorded_defaults(),
        layout=f"mesh {mesh_lib.format_mesh(mesh)}",
    )
    harness.budget_after = min(t.steps_per_task for _, t in plan.variants)
    for variant_name, trainer in plan.variants:
        if trainer.deferred_kernels:
            harness.message(
                f"{variant_name}: SGD updates of {', '.join(trainer.deferred_kernels)} applied once "
                f"per {config.run.defer_dense_updates} steps (plasticity.deferred)"
            )
    with harness as run:
        return _run_sweep(plan, mesh, run)


def resume_fields(plan: ExperimentPlan, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A 'resume' row's variant, task and step, counted as that variant's rows count them."""
    index = min(int(meta["variant_index"]), len(plan.variants) - 1)
    steps = plan.variants[index][1].steps_per_task
    return {
        "variant": meta["variant"],
        "task": meta["next_task"],
        "step": meta["next_task"] * steps,
    }


def _steps_before(plan: ExperimentPlan, variant_index: int, next_task: int) -> int:
    done = sum(t.num_tasks * t.steps_per_task for _, t in plan.variants[:variant_index])
    if variant_index < len(plan.variants):
        done += next_task * plan.variants[variant_index][1].steps_per_task
    return done


def _run_sweep(plan: ExperimentPlan, mesh, run: Run) -> RunResult:
    """The chunk loop of `run_experiment` inside an open harness."""
    keys = mesh_lib.shard_leading_axis(plan.run_keys(), mesh)
    per_batch = int(plan.config.run.runs_per_batch)
    mesh_key = (tuple(mesh.axis_names), tuple(d.id for d in mesh.devices.flat))
    over_runs = functools.partial(
        mesh_lib.over_leading_axis, mesh=mesh, num_split_args=2, runs_per_batch=per_batch
    )
    final_carries, compile_seconds, run_seconds, summary = {}, {}, {}, []

    def hparams_of(trainer: Trainer):
        return mesh_lib.shard_leading_axis(plan.run_hparams(trainer.hparam_keys), mesh)

    def data_of(trainer: Trainer):
        return mesh_lib.replicate(trainer.sequence.data, mesh)

    def initial(name: str, trainer: Trainer):
        """(initial run states, step-0 diagnostics) of a variant's runs, on the mesh; compiling
        them counts in the variant's compile seconds."""
        args = (keys, hparams_of(trainer), data_of(trainer))
        cache_key = ("init", mesh_key, per_batch)
        if cache_key not in trainer.compiled:
            tic = time.perf_counter()
            trainer.compiled[cache_key] = jax.jit(over_runs(trainer.init)).lower(*args).compile()
            compile_seconds[name] = compile_seconds.get(name, 0.0) + time.perf_counter() - tic
        return trainer.compiled[cache_key](*args)

    def saved_variant(meta) -> int:
        """The variant whose runs a checkpoint holds: the one it resumes, or for a checkpoint
        written at a variant's end (task 0 of the next) the finished one."""
        index = int(meta["variant_index"])
        return index - 1 if int(meta["next_task"]) == 0 and index > 0 else index

    restored = run.restore(
        lambda meta: initial(*plan.variants[saved_variant(meta)])[0],
        resume_row=lambda meta: resume_fields(plan, meta),
    )
    if run.result.already_complete:
        run.result.outputs["summary"] = summary_lines(_rows(run), plan)
        return run.result
    variant_index, next_task = 0, 0
    if restored is not None:
        variant_index = int(restored.metadata["variant_index"])
        next_task = int(restored.metadata["next_task"])
    for index in range(variant_index, len(plan.variants)):
        name, trainer = plan.variants[index]
        hparams, data = hparams_of(trainer), data_of(trainer)
        resumed = index == variant_index and restored is not None and next_task > 0
        start_task = next_task if resumed else 0
        # A variant's bar fields replace the last one's: no score (acc or loss) until it has one.
        run.show(variant=name, task=f"{start_task}/{trainer.num_tasks}", acc=None, loss=None)
        if resumed:
            carry, initial_diagnostics = restored.tree, None
        else:
            carry, initial_diagnostics = initial(name, trainer)
        chunk = tasks_per_chunk(trainer.config, trainer.num_tasks)
        run_fn = jax.jit(over_runs(trainer.run_tasks))
        compile_seconds.setdefault(name, 0.0)
        run_seconds.setdefault(name, 0.0)
        for first in range(start_task, trainer.num_tasks, chunk):
            task_indices = np.arange(first, min(first + chunk, trainer.num_tasks), dtype=np.int32)
            cache_key = ("run_tasks", mesh_key, per_batch, len(task_indices))
            if cache_key not in trainer.compiled:
                run.show(variant=name, task=f"{first}/{trainer.num_tasks}")
                with run.phase("compiling"), runtime.compiled_loop_lowering():
                    tic = time.perf_counter()
                    lowered = run_fn.lower(carry, hparams, task_indices, data)
                    trainer.compiled[cache_key] = lowered.compile()
                    compile_seconds[name] += time.perf_counter() - tic
            tic = time.perf_counter()
            carry, outputs = trainer.compiled[cache_key](carry, hparams, task_indices, data)
            outputs = distributed.fetch(outputs)  # an all-gather when runs span processes
            run_seconds[name] += time.perf_counter() - tic
            diverged = find_divergence(plan, name, trainer, first, outputs)
            if diverged is not None and plan.config.run.stop_on_divergence:
                step, metric, value, where = diverged
                raise divergence.DivergenceError(step, metric, value, where, run.kept())
            fetched = distributed.fetch(initial_diagnostics) if initial_diagnostics else None
            run.log(chunk_rows(plan, name, trainer, first, outputs, fetched))
            initial_diagnostics = None
            next_task = int(task_indices[-1]) + 1
            finished = index == len(plan.variants) - 1 and next_task >= trainer.num_tasks
            position = (index, next_task)
            if next_task >= trainer.num_tasks and not finished:
                position = (index + 1, 0)  # a relaunch starts the next variant
            run.save(
                carry,
                {
                    "variant_index": position[0],
                    "variant": plan.variants[position[0]][0],
                    "next_task": position[1],
                },
                done=_steps_before(plan, *position) if not finished else run.total,
                finished=finished,
            )
            last = outputs["task"]
            score_name = "acc" if "end_accuracy" in last else "loss"
            score = last.get("end_accuracy", last["end_loss"])[:, -1].mean()
            run.advance(
                len(task_indices) * trainer.steps_per_task,
                variant=name,
                task=f"{next_task}/{trainer.num_tasks}",
                **{"acc": None, "loss": None, score_name: float(score)},
            )
            if not finished and run.stop_requested():
                return run.stop(
                    final_carries=final_carries,
                    compile_seconds=compile_seconds,
                    run_seconds=run_seconds,
                )
        final_carries[name] = carry
        summary.append(f"{name}: final task {score_name} {float(score):.4f} (mean over runs)")
    return run.finish(
        final_carries=final_carries,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        summary=summary_lines(_rows(run), plan) if run.path is not None else summary,
    )


def _rows(run: Run) -> list[dict]:
    return workdir_lib.read_metrics(run.path) if run.path is not None else []


def summary_lines(rows: Sequence[dict], plan: ExperimentPlan) -> list[str]:
    """'<variant>: final task acc 0.9125 (mean over seeds)' for every variant (and grid point,
    'no_norm, l2=0.0001: ...', where the sweep has several) whose last task ended, from the work
    dir's 'task' rows: the whole sweep's, whichever launch trained it."""
    swept = [key for key in GRID_KEYS if len({point[key] for point in plan.grid}) > 1]
    points = list(dict.fromkeys(tuple(point[key] for key in swept) for point in plan.grid))
    lines = []
    for name, trainer in plan.variants:
        for values_of_point in points:  # one empty point when the grid sweeps nothing
            final = [
                row
                for row in rows
                if row.get("event") == "task"
                and row.get("variant") == name
                and row.get("task") == trainer.num_tasks - 1
                and all(map(_same_value, (row.get(key) for key in swept), values_of_point))
            ]
            key = "end_accuracy" if any("end_accuracy" in row for row in final) else "end_loss"
            values = [row[key] for row in final if isinstance(row.get(key), (int, float))]
            if values:
                label = "acc" if key == "end_accuracy" else "loss"
                point = (f"{key}={value:g}" for key, value in zip(swept, values_of_point))
                where = ", ".join([name, *point])
                lines.append(f"{where}: final task {label} {np.mean(values):.4f} (mean over seeds)")
    return lines


def _same_value(logged: Any, value: float) -> bool:
    """Whether a row's logged grid value is the grid point's (to float32 rounding)."""
    return isinstance(logged, (int, float)) and math.isclose(logged, value, rel_tol=1e-6)
