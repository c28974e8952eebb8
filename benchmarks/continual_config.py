"""Configs of the continual trainer (`benchmarks.continual`): every field, sweeps and checks.

`default_config` lists every field the trainer and its sweep runner read. Sweep-level fields
(``seed``, ``num_seeds``, ``grid``, ``variants``, ``variant_order``, ``run``, ``mesh``) shape the
sweep; a variant overrides any other field (`plasticity.config_tools.resolve_variants`, the one
sweep format of every launcher). A resumed run must keep ``run.tasks_per_chunk`` (it is part of
the config check), which is what makes it bit-identical: the same compiled chunks run in the same
order. `check_config` is the one validation path of a resolved variant: one-line ValueErrors
before anything is built; `build_network` builds the network its ``network`` fields describe.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import flax.linen
import ml_collections

from benchmarks import datasets, minibatches, tasks
from plasticity import config_tools, diagnostics, layers, nap, networks, optim, two_hot
from plasticity import mesh as mesh_lib

GRID_KEYS = ("learning_rate", "weight_decay", "l2", "l2_init")
NETWORKS = ("mlp", "cnn", "resnet")
# The size fields each network's builder reads (positive integers).
NETWORK_SIZES = {
    "mlp": ("hidden_sizes",),
    "cnn": ("channels", "dense_sizes"),
    "resnet": ("width", "stage_sizes"),
}
# Fields a variant may not override: they define the sweep itself, not one arm of it.
SWEEP_FIELDS = ("variants", "variant_order", "grid", "seed", "num_seeds", "run", "mesh")
DEFAULT_VARIANT = config_tools.DEFAULT_VARIANT
# Fields a relaunch may change without changing the results (up to float rounding for the mesh
# and deferred dense updates).
RESUME_FREE_FIELDS = (
    "run.progress",
    "run.tensorboard",
    "run.checkpoints_to_keep",
    "run.runs_per_batch",
    "run.defer_dense_updates",
    "run.stop_on_divergence",
    "data.data_dir",
    "mesh",
)
# The inputs an intervention scores units on (``intervention.probe``, `default_config`).
INTERVENTION_PROBES = ("auto", "fresh", "last_batch")
# Per-task metrics whose NaN/Inf means the run diverged (diagnostics may be non-finite legitimately,
# e.g. an effective learning rate of a zero kernel).
DIVERGENCE_METRICS = ("online_loss", "end_loss", "end_test_loss", "param_norm")


def default_config() -> ml_collections.ConfigDict:
    """Every field the trainer and runner read, with defaults (a small digits label-reset run).

    data: which dataset (`benchmarks.datasets.load_dataset` arguments; 0 = no subsetting).
    task: the sequence (`benchmarks.tasks.TaskConfig` fields) plus ``num_tasks``,
      ``steps_per_task`` (0 for bit flipping: its flip period), ``batch_size`` and ``sampling`` of a
      dataset task's minibatches: 'uniform' (with replacement) or 'shuffled' (each pass over the
      task's examples in a fresh random order; `benchmarks.minibatches`). Stream tasks take
      their examples in order either way.
    network: ``name`` ∈ NETWORKS and the builder's sizes; ``norm``, ``activation``; ``two_hot``:
      regression targets as two-hot distributions over ``bins`` values on [``low``, ``high``]
      (`plasticity.two_hot`; the Disentangling paper's output for large targets; 0 bins: off).
    optimizer: `plasticity.optim.default_optimizer_config` (NaP under ``optimizer.nap``); a
      schedule's ``total_steps`` 0 spans the run and ``cosine_restarts`` without boundaries
      restarts at every task (`task_schedule`).
    grid: values of learning_rate / weight_decay / l2 / l2_init to sweep inside one program.
    variants, variant_order: named structural overrides and the order to run them in.
    diagnostics: ``every`` K steps (0 = off), extra ``names`` for `plasticity.diagnostics` with
      its ``options``, ``probe_size`` examples of the current task, the effective-lr exponent p
      of η/‖W‖^p (0 = by optimizer: 2 for SGD and momentum, 1 for Adam and RMSProp; the same p
      goes to `plasticity.diagnostics`, see `effective_lr_exponent`).
    intervention: ``name`` for `plasticity.interventions` ('none' = off), ``every`` N steps
      (after update N, 2N, ..., but not after the run's last) and/or ``at_task_boundaries``, its
      ``options``, and the inputs it scores units on (``probe``, `INTERVENTION_PROBES`): 'fresh'
      (``diagnostics.probe_size`` examples of the current task drawn for each call, as ReDo's
      paper does), 'last_batch' (the minibatch of the update just made, as continual
      backprop's authors do; at batch 1 far cheaper than a probe batch at every step) or
      'auto' (the default: 'last_batch' for cbp, 'fresh' for every other intervention).
    eval: end-of-task evaluation on up to ``max_examples`` examples, in batches.
    run: ``tasks_per_chunk`` per compiled call and checkpoint (0 = about 10 chunks);
      ``runs_per_batch``: 0 vectorizes all runs of a device with vmap (GPU/TPU), k > 0 runs them k
      at a time in a loop (1 is fastest on CPUs, whose batched matrix products are slow);
      ``defer_dense_updates``: K > 1 applies SGD variants' large dense-kernel updates (weight
      decay and L2 included) once per K steps from their factors (`plasticity.deferred`: the
      same SGD to float rounding, about half the memory traffic at batch 1; other optimizers
      update every step); how
      many checkpoints to keep, TensorBoard and progress bar switches; ``stop_on_divergence``: a
      NaN/Inf loss or parameter norm stops the sweep with a one-line error (off: keep going,
      writing nulls).
    mesh: 'auto' or e.g. 'seed:4' (see `plasticity.mesh`); runs spread over the ``seed`` axis.
    """
    task_defaults = dataclasses.asdict(tasks.TaskConfig())
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_seeds = 1
    config.data = dict(
        name="digits",
        data_dir="",
        source="files",
        max_train_examples=0,
        max_test_examples=0,
        digits_test_fraction=0.0,
        cifar100_label_mode="fine",
    )
    config.task = dict(
        num_tasks=10, steps_per_task=200, batch_size=128, sampling="uniform", **task_defaults
    )
    config.network = dict(
        name="mlp",
        hidden_sizes=(256, 256, 256),
        channels=(32, 64),
        dense_sizes=(128,),
        stage_sizes=(2, 2, 2, 2),
        width=64,
        small_images=True,
        norm="none",
        activation="relu",
        # How plain layers start (`plasticity.networks.initialize`): Flax's 'lecun_normal',
        # 'fan_in_uniform' or 'kaiming_uniform' (Dohare et al.'s code, for ReLU networks).
        initialization="lecun_normal",
        # Regression through ``bins`` logits per target over [low, high] (`plasticity.two_hot`);
        # 0 bins: one linear output per target.
        two_hot=dict(bins=0, low=-10.0, high=10.0),
    )
    config.optimizer = optim.default_optimizer_config()
    config.grid = {key: () for key in GRID_KEYS}
    config.variants = ml_collections.ConfigDict()
    config.variant_order = ()
    config.diagnostics = dict(
        every=100,
        names=(),
        probe_size=256,
        effective_lr_exponent=0.0,
        options=ml_collections.ConfigDict(),
    )
    config.intervention = dict(
        name="none",
        every=0,
        at_task_boundaries=False,
        options=ml_collections.ConfigDict(),
        probe="auto",
    )
    config.eval = dict(max_examples=2048, batch_size=512)
    config.run = dict(
        tasks_per_chunk=0,
        runs_per_batch=0,
        defer_dense_updates=0,
        checkpoints_to_keep=2,
        tensorboard=True,
        progress=True,
        stop_on_divergence=True,
    )
    config.mesh = "auto"
    return config


def variant_configs(
    config: ml_collections.ConfigDict,
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """[(name, resolved config)] for the variants of the sweep, in ``variant_order``
    (`plasticity.config_tools.resolve_variants`; a variant may not override `SWEEP_FIELDS`).

    A variant is a nested dict of overrides of the base config (e.g.
    ``{'network': {'norm': 'layernorm'}, 'optimizer': {'nap': {'enabled': True}}}``).
    ``variant_order`` lists the names to run, in order (ConfigDict sorts its keys, so the order
    has to be stated); empty runs them all in name order. With no variants the base config is
    the single variant ``'default'``.
    """
    return config_tools.resolve_variants(config, reserved=SWEEP_FIELDS)


def grid_points(config: ml_collections.ConfigDict) -> list[dict[str, float]]:
    """Every point of the hyper-parameter grid (Cartesian product of the non-empty axes), each a
    dict with all of GRID_KEYS (axes not swept take the optimizer config's value)."""
    axes = {key: grid_axis(config, key) for key in GRID_KEYS if config.grid.get(key)}
    for key, values in axes.items():
        if any(not math.isfinite(v) or v < 0 for v in values) or (
            key == "learning_rate" and any(v <= 0 for v in values)
        ):
            raise ValueError(
                f"grid.{key} values must be finite and >= 0 (learning rates > 0), got {values}"
            )
        if len(set(values)) != len(values):
            raise ValueError(
                f"grid.{key} lists a value twice, got {values}: each point would train twice"
            )
    fixed = {key: float(config.optimizer[key]) for key in GRID_KEYS}
    return [{**fixed, **dict(zip(axes, combo))} for combo in itertools.product(*axes.values())]


def grid_axis(config: ml_collections.ConfigDict, key: str) -> tuple[float, ...]:
    """The values of ``grid.<key>`` as floats; a one-line ValueError naming the field for a
    value that is no number."""
    values = config.grid[key]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"grid.{key} must be a sequence of numbers, got {values!r}") from None


def swept_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The GRID_KEYS with a non-empty grid axis: the names `train`'s ``hparams`` holds."""
    return tuple(key for key in GRID_KEYS if config.grid.get(key))


def task_schedule(
    optimizer: ml_collections.ConfigDict, num_tasks: int, steps: int
) -> ml_collections.ConfigDict:
    """``optimizer`` with its learning-rate schedule fitted to the task layout where the config
    leaves it open (`plasticity.optim.fit_open_schedule`): ``schedule.total_steps`` 0 spans the
    whole run (``num_tasks`` × ``steps`` per task), and ``cosine_restarts`` without boundaries
    restarts at every task start. One-line ValueError naming the section when the fitted
    schedule cannot be built (a warm-up as long as a task or the run)."""
    total = int(num_tasks) * int(steps)
    fitted = optim.fit_open_schedule(optimizer, total, range(int(steps), total, int(steps)))
    optim.check_schedule_builds(fitted)
    return fitted


def steps_per_task(config: ml_collections.ConfigDict) -> int:
    """Optimizer steps per task. A stream task (bit flipping) has ``flip_period / batch_size``:
    every example of a flip period is seen exactly once, in order."""
    task = config.task
    if task.name in tasks.STREAM_TASKS:
        if task.flip_period % task.batch_size:
            raise ValueError(
                f"task.flip_period ({task.flip_period}) must be a multiple of "
                f"task.batch_size ({task.batch_size}) for stream task {task.name!r}"
            )
        derived = task.flip_period // task.batch_size
        if task.steps_per_task not in (0, derived):
            raise ValueError(
                f"task {task.name!r} has flip_period/batch_size = {derived} steps per "
                f"task; set task.steps_per_task to 0 or {derived}, not "
                f"{task.steps_per_task}"
            )
        return derived
    if task.steps_per_task < 1:
        raise ValueError(f"task.steps_per_task must be >= 1, got {task.steps_per_task}")
    return int(task.steps_per_task)


def diagnostics_block(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(block length in steps, diagnostics period K in steps; 0 = off).

    K must divide the steps per task or be a multiple of them; diagnostics are taken after
    every K-th update of a run (counted over the whole run).
    """
    steps, every = steps_per_task(config), int(config.diagnostics.every)
    if every < 0:
        raise ValueError(f"diagnostics.every must be >= 0, got {every}")
    if every == 0:
        return steps, 0
    if every <= steps:
        if steps % every:
            raise ValueError(
                f"diagnostics.every ({every}) must divide task.steps_per_task ({steps}) "
                f"or be a multiple of it"
            )
        return every, every
    if every % steps:
        raise ValueError(
            f"diagnostics.every ({every}) must divide task.steps_per_task ({steps}) "
            f"or be a multiple of it"
        )
    return steps, every


def build_network(
    network: ml_collections.ConfigDict, num_outputs: int, input_shape: Sequence[int]
) -> flax.linen.Module:
    """The network of ``config.network`` with `num_outputs` outputs."""
    common = dict(num_outputs=num_outputs, norm=network.norm, activation=network.activation)
    if network.name == "mlp":
        return networks.MLP(hidden_sizes=tuple(network.hidden_sizes), **common)
    if len(input_shape) != 3:
        raise ValueError(
            f"network {network.name!r} needs image inputs (H, W, C), the task gives "
            f"{tuple(input_shape)}; use network.name='mlp'"
        )
    if network.name == "cnn":
        networks.check_pooled_convs_fit("network.channels", input_shape, len(network.channels))
        return networks.SmallCNN(
            channels=tuple(network.channels), dense_sizes=tuple(network.dense_sizes), **common
        )
    if network.name == "resnet":
        return networks.ResNet(
            stage_sizes=tuple(network.stage_sizes),
            width=network.width,
            small_images=network.small_images,
            **common,
        )
    raise ValueError(f"unknown network {network.name!r}; known networks: {', '.join(NETWORKS)}")


def check_config(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for structural mistakes in one (resolved variant) config."""
    task, network, opt = config.task, config.network, config.optimizer
    if task.name not in tasks.known_tasks():
        known = ", ".join(tasks.known_tasks())
        raise ValueError(f"unknown task {task.name!r}; known tasks: {known}")
    if network.name not in NETWORKS:
        raise ValueError(f"unknown network {network.name!r}; known networks: {', '.join(NETWORKS)}")
    if task.sampling not in minibatches.SAMPLINGS:
        raise ValueError(
            f"task.sampling must be one of {', '.join(minibatches.SAMPLINGS)}, got "
            f"{task.sampling!r}"
        )
    layers.check_norm(network.norm)
    layers.check_activation(network.activation)
    networks.check_initialization(network.initialization)
    optim.check_optimizer_config(opt)
    diagnostics.make_options(**config.diagnostics.options.to_dict())  # even if no name reads them
    nap.check_nap_config(network.norm, opt.nap.enabled)
    two_hot_output(network)
    for name, value in (
        ("task.num_tasks", task.num_tasks),
        ("task.batch_size", task.batch_size),
        ("eval.max_examples", config.eval.max_examples),
        ("eval.batch_size", config.eval.batch_size),
        ("diagnostics.probe_size", config.diagnostics.probe_size),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    # Global steps (and the keys drawn from them, counted past the tasks') are int32.
    counted = int(task.num_tasks) * (steps_per_task(config) + 1)
    if counted >= 2**31:
        raise ValueError(
            f"task.num_tasks x task.steps_per_task counts {counted:,} steps and keys, more than "
            f"the trainer's int32 step holds ({2**31 - 1:,}); lower either"
        )
    if int(config.run.defer_dense_updates) < 0:
        raise ValueError(
            f"run.defer_dense_updates must be >= 0, got {config.run.defer_dense_updates}"
        )
    if config.intervention.every < 0:
        raise ValueError(f"intervention.every must be >= 0, got {config.intervention.every}")
    if config.intervention.probe not in INTERVENTION_PROBES:
        raise ValueError(
            f"intervention.probe must be one of {', '.join(INTERVENTION_PROBES)}, got "
            f"{config.intervention.probe!r}"
        )
    if config.intervention.name == "cbp":
        from plasticity.interventions import check_cbp_activation  # noqa: PLC0415 - a plug-in

        check_cbp_activation(config.intervention.options.to_dict(), network.activation)
    if int(config.run.tasks_per_chunk) < 0:
        raise ValueError(f"run.tasks_per_chunk must be >= 0, got {config.run.tasks_per_chunk}")
    for field in NETWORK_SIZES[network.name]:
        if field in network:
            config_tools.check_layer_sizes(f"network.{field}", network[field])
    config_tools.check_range(
        "diagnostics.effective_lr_exponent", config.diagnostics.effective_lr_exponent, 0.0
    )
    config_tools.check_range("seed", config.seed, 0.0)
    diagnostics_block(config)


def resolved_probe(name: str, probe: str) -> str:
    """The probe ('fresh' or 'last_batch') intervention ``name`` runs with under ``probe``."""
    last_batch = probe == "last_batch" or (probe == "auto" and name == "cbp")
    return "last_batch" if last_batch else "fresh"


def probes_last_batch(intervention: ml_collections.ConfigDict) -> bool:
    """Whether the intervention scores units on the last update's minibatch (``probe``)."""
    return resolved_probe(str(intervention.name), str(intervention.probe)) == "last_batch"


def record_probes(recorded: dict) -> dict:
    """``recorded`` (a config dict for ``config.json``) with each intervention's probe resolved
    as it runs: the top level's, and a variant's where its own intervention runs with another.
    A work dir written before ``intervention.probe`` existed scored every intervention on fresh
    probe batches; compared against 'fresh' (`recorded_defaults`), it resumes where its runs
    score so, and a continual-backprop run is refused unless relaunched with probe='fresh'."""
    top = recorded["intervention"]
    chosen = str(top["probe"])  # what a variant without its own probe inherits
    top["probe"] = resolved_probe(str(top["name"]), chosen)
    for override in (recorded.get("variants") or {}).values():
        own = override.get("intervention") if isinstance(override, dict) else None
        if isinstance(own, dict):
            probe = resolved_probe(str(own.get("name", top["name"])), own.get("probe", chosen))
            if probe != top["probe"]:
                own["probe"] = probe
    return recorded


def recorded_defaults() -> dict:
    """`default_config` as a dict for comparing a relaunch with a work dir written before some
    field existed: its value there is what that code computed (``intervention.probe``: every
    intervention then scored units on fresh probe batches)."""
    defaults = default_config().to_dict()
    defaults["intervention"]["probe"] = "fresh"
    return defaults


def unused_data_dir(variants: Sequence[tuple[str, ml_collections.ConfigDict]]) -> str | None:
    """The note a launch gets when it names a data dir that none of its variants reads (its
    tasks are streams, or its dataset needs no files): a mistyped path or a forgotten
    ``--config.data.name`` would otherwise pass unnoticed."""
    given = {variant.data.data_dir for _, variant in variants if variant.data.data_dir}
    if not given:
        return None
    read = [
        variant
        for _, variant in variants
        if not tasks.is_stream(variant.task.name)
        and datasets.canonical_name(variant.data.name) not in datasets.FILELESS_DATASETS
    ]
    if read:
        return None
    names = sorted({variant.data.name for _, variant in variants})
    return (
        f"data dir {', '.join(sorted(given))} is unused: the tasks read no files (dataset "
        f"{', '.join(names)}); --config.data.name=mnist, fashion_mnist, cifar10 or cifar100 "
        "reads them"
    )


def two_hot_output(network: ml_collections.ConfigDict) -> two_hot.TwoHot | None:
    """The two-hot output of ``network.two_hot`` (None with 0 bins); a one-line ValueError for
    fewer than 2 bins or an empty interval."""
    settings = network.two_hot
    if int(settings.bins) == 0:
        return None
    return two_hot.TwoHot.on(settings.low, settings.high, settings.bins)


def check_mesh_spec(spec: str) -> None:
    """One-line ValueError for a mesh this trainer cannot use: it spreads runs over ``seed`` only.

    Its batches are small (a data-parallel split would cost more in all-reduces than it saves),
    so a ``data`` axis larger than 1 would only repeat every run on several devices.
    """
    axes = mesh_lib.parse_mesh_spec(spec)
    wasted = {name: size for name, size in axes.items() if name != mesh_lib.SEED_AXIS and size != 1}
    if wasted:
        raise ValueError(
            f"mesh {spec!r}: the continual trainer spreads runs over the "
            f"'{mesh_lib.SEED_AXIS}' axis only; axis "
            f"{', '.join(repr(name) for name in wasted)} would repeat every run on "
            f"several devices; use e.g. 'seed:8' or 'auto'"
        )


def tasks_per_chunk(config: ml_collections.ConfigDict, num_tasks: int) -> int:
    """Tasks per compiled call (and per checkpoint): ``run.tasks_per_chunk``, or by default the
    largest divisor of the task count giving at least 10 chunks (equal chunks: one compilation)."""
    chosen = int(config.run.tasks_per_chunk)
    if chosen < 0:
        raise ValueError(f"run.tasks_per_chunk must be >= 0, got {chosen}")
    if chosen:
        return min(num_tasks, chosen)
    return mesh_lib.largest_divisor_at_most(num_tasks, max(1, -(-num_tasks // 10)))
