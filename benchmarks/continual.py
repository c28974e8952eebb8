"""Compiled continual-learning trainer for the nonstationary task sequences, and its sweep runner.

`make_train(config)` returns ``train(rng, hparams, data=None)``: one whole run (every task, every
step) as a single `lax.scan` — an outer scan over tasks, a scan over blocks of K steps inside
each task (diagnostics after each block) and a scan over the steps of a block. ``hparams`` maps
continuous hyper-parameters (any of ``learning_rate``, ``weight_decay``, ``l2``, ``l2_init``) to
arrays, so ``jit(vmap(vmap(train)))`` runs a grid of them × seeds as one program; names absent
from ``hparams`` take the config's values. Structural choices (network, norm, NaP, activation,
intervention, task) change the program: a sweep lists them as named *variants*, compiled once
each.

The same pieces, split at task boundaries (`Trainer.init` and `Trainer.run_tasks`), drive
`run_experiment`, which runs every variant over all seeds and grid points in blocks of tasks
("chunks"), writes the work dir (`plasticity.workdir`: config.json, metrics.jsonl, TensorBoard
events) and checkpoints after every chunk, so relaunching on the same work dir resumes. All
randomness is derived from the run's key by ``fold_in`` with the task or global step index, so
a resumed run equals an uninterrupted one bit for bit on CPU.

Randomness of a run with key k: parameters from ``fold_in(k, 0)``; the task sequence from
``fold_in(k, 1)`` (so every variant of a sweep sees the same tasks for a seed); the minibatch
of global step t from an integer hash of (``fold_in(k, 2)``, t) (`sample_indices`; stream tasks
take their examples in order instead), intervention and diagnostics noise of step t from
``fold_in(fold_in(fold_in(k, 2), t), purpose)``; the probe batch of diagnostics and
interventions during task i from a hash of (``fold_in(k, 3)``, i). Run keys are
``PRNGKey(seed)``, shared by all grid points and variants (common random numbers).

Configs: `default_config` lists every field. Sweep-level fields (``seed``, ``num_seeds``,
``grid``, ``variants``, ``variant_order``, ``run``, ``mesh``) shape the sweep; a variant
overrides any other field. A resumed run must keep ``run.tasks_per_chunk`` (it is part of the
config check), which is what makes it bit-identical: the same compiled chunks run in the same
order.

Per task the trainer reports the online loss/accuracy (training batches, before each update,
averaged over the task), loss/accuracy at the end of the task on the task's training examples
(and held-out ones when the task has them) and the parameter norm; every K steps the per-layer
weight norm, effective learning rate and relative update size, plus the diagnostics named in
``config.diagnostics.names`` (computed by `plasticity.diagnostics`).

The effective learning rate is η/‖W‖^p with one p for the built-in rows and for
`plasticity.diagnostics` (which receives it as its ``effective_lr_exponent`` option):
``diagnostics.effective_lr_exponent``, or when 0, by optimizer: p = 2 for SGD and momentum (exact
for a scale-invariant layer, whose direction moves by an angle ∝ η‖∇‖/‖W‖ with ‖∇‖ ∝ 1/‖W‖) and
p = 1 for Adam and RMSProp (their steps have a fixed size, so the angle is ∝ η/‖W‖).

Control flow stays real under ``vmap`` over runs: everything periodic (diagnostics every K steps,
interventions every N steps) sits at the end of an inner ``lax.scan`` whose length divides the
period, never under a per-step ``lax.cond``, so its cost is paid only when it is due.

Safety: the runner stops at the first NaN/Inf in a run's loss (the compiled program reports the
exact step) or end-of-task metrics, with a one-line `plasticity.divergence.DivergenceError`,
before that chunk's rows or checkpoint are written (``run.stop_on_divergence``; off, the rows
carry nulls and the sweep goes on); and it returns early, after a checkpoint, when its
``should_stop`` callback (`plasticity.preemption.PreemptionGuard`) says a SIGTERM arrived. In a
multi-process job (`plasticity.distributed`) runs are spread over every process's devices, each
process fetches the chunk's outputs with an all-gather, only process 0 writes files and every
process takes part in the Orbax checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks import datasets, tasks
from plasticity import (
    checkpointing,
    distributed,
    divergence,
    effective_lr,
    layers,
    mesh as mesh_lib,
    nap,
    networks,
    optim,
    progress as progress_lib,
    schedules,
    workdir as workdir_lib,
)
from plasticity.train_state import TrainState, apply_gradients, create_train_state

GRID_KEYS = ("learning_rate", "weight_decay", "l2", "l2_init")
NETWORKS = ("mlp", "cnn", "resnet")
# Fields a variant may not override: they define the sweep itself, not one arm of it.
SWEEP_FIELDS = ("variants", "variant_order", "grid", "seed", "num_seeds", "run", "mesh")
DEFAULT_VARIANT = "default"
# Fields a relaunch may change without changing the results (up to float rounding for the mesh).
RESUME_FREE_FIELDS = (
    "run.progress",
    "run.tensorboard",
    "run.checkpoints_to_keep",
    "run.runs_per_batch",
    "run.stop_on_divergence",
    "data.data_dir",
    "mesh",
)
# Per-task metrics whose NaN/Inf means the run diverged (diagnostics may be non-finite legitimately,
# e.g. an effective learning rate of a zero kernel).
DIVERGENCE_METRICS = ("online_loss", "end_loss", "end_test_loss", "param_norm")
# Interventions that need the trainer to call something other than `model.apply`.
UNSUPPORTED_INTERVENTIONS = ("plasticity_injection",)

_PARAMS_STREAM, _TASKS_STREAM, _STEPS_STREAM, _PROBE_STREAM, _INITIAL_STREAM = 0, 1, 2, 3, 4

DiagnosticsFactory = Callable[..., Callable[..., dict[str, jax.Array]]]
InterventionFactory = Callable[..., tuple[Callable, Callable]]


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """Every field the trainer and runner read, with defaults (a small digits label-reset run).

    data: which dataset (`benchmarks.datasets.load_dataset` arguments; 0 = no subsetting).
    task: the sequence (`benchmarks.tasks.TaskConfig` fields) plus ``num_tasks``,
      ``steps_per_task`` (0 for stream tasks: derived) and ``batch_size``.
    network: ``name`` ∈ NETWORKS and the builder's sizes; ``norm``, ``activation``.
    optimizer: `plasticity.optim.default_optimizer_config` (NaP under ``optimizer.nap``).
    grid: values of learning_rate / weight_decay / l2 / l2_init to sweep inside one program.
    variants, variant_order: named structural overrides and the order to run them in.
    diagnostics: ``every`` K steps (0 = off), extra ``names`` for `plasticity.diagnostics` with
      its ``options``, ``probe_size`` examples of the current task, the effective-lr exponent p
      of η/‖W‖^p (0 = by optimizer: 2 for SGD and momentum, 1 for Adam and RMSProp; the same p
      goes to `plasticity.diagnostics`, see `effective_lr_exponent`).
    intervention: ``name`` for `plasticity.interventions` ('none' = off), ``every`` N steps
      and/or ``at_task_boundaries``, its ``options``.
    eval: end-of-task evaluation on up to ``max_examples`` examples, in batches.
    run: ``tasks_per_chunk`` per compiled call and checkpoint (0 = about 10 chunks);
      ``runs_per_batch``: 0 vectorizes all runs of a device with vmap (GPU/TPU), k > 0 runs them k
      at a time in a loop (1 is fastest on CPUs, whose batched matrix products are slow); how
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
    config.task = dict(num_tasks=10, steps_per_task=200, batch_size=128, **task_defaults)
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
        name="none", every=0, at_task_boundaries=False, options=ml_collections.ConfigDict()
    )
    config.eval = dict(max_examples=2048, batch_size=512)
    config.run = dict(
        tasks_per_chunk=0,
        runs_per_batch=0,
        checkpoints_to_keep=2,
        tensorboard=True,
        progress=True,
        stop_on_divergence=True,
    )
    config.mesh = "auto"
    return config


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, ml_collections.ConfigDict):
        return config.to_dict()
    return copy.deepcopy(dict(config))


def _merge(base: dict[str, Any], overrides: Mapping[str, Any], where: str) -> None:
    """Deep-merges `overrides` into `base`, refusing fields `base` does not have."""
    for key, value in overrides.items():
        if key not in base:
            raise ValueError(
                f"{where}: unknown config field {key!r}; known: {', '.join(sorted(base))}"
            )
        if isinstance(base[key], dict) and isinstance(value, Mapping) and base[key]:
            _merge(base[key], value, f"{where}.{key}")
        else:
            base[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value


def variant_configs(
    config: ml_collections.ConfigDict,
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """[(name, resolved config)] for the variants of the sweep, in ``variant_order``.

    A variant is a nested dict of overrides of the base config (e.g.
    ``{'network': {'norm': 'layernorm'}, 'optimizer': {'nap': {'enabled': True}}}``).
    ``variant_order`` lists the names to run, in order (ConfigDict sorts its keys, so the order
    has to be stated); empty runs them all in name order. With no variants the base config is
    the single variant ``'default'``.
    """
    base = _as_dict(config)
    variants = base.get("variants") or {}
    order = tuple(base.get("variant_order") or ())
    if not variants:
        if order and order != (DEFAULT_VARIANT,):
            raise ValueError(f"variant_order {order} names variants, but the config defines none")
        return [(DEFAULT_VARIANT, ml_collections.ConfigDict(base))]
    unknown = [name for name in order if name not in variants]
    if unknown or len(set(order)) != len(order):
        raise ValueError(
            f"variant_order {order} must list distinct variants among {', '.join(sorted(variants))}"
        )
    resolved = []
    for name in order or sorted(variants):
        overrides = variants[name]
        if not isinstance(overrides, Mapping):
            raise ValueError(
                f"variant {name!r} must be a dict of config overrides, got {overrides!r}"
            )
        reserved = sorted(set(overrides) & set(SWEEP_FIELDS))
        if reserved:
            raise ValueError(
                f"variant {name!r} overrides sweep-level field(s) {', '.join(reserved)}"
            )
        merged = copy.deepcopy(base)
        _merge(merged, overrides, f"variant {name!r}")
        resolved.append((str(name), ml_collections.ConfigDict(merged)))
    return resolved


def grid_points(config: ml_collections.ConfigDict) -> list[dict[str, float]]:
    """Every point of the hyper-parameter grid (Cartesian product of the non-empty axes), each a
    dict with all of GRID_KEYS (axes not swept take the optimizer config's value)."""
    axes = {
        key: tuple(float(v) for v in config.grid[key]) for key in GRID_KEYS if config.grid.get(key)
    }
    for key, values in axes.items():
        if any(not math.isfinite(v) or v < 0 for v in values) or (
            key == "learning_rate" and any(v <= 0 for v in values)
        ):
            raise ValueError(
                f"grid.{key} values must be finite and >= 0 (learning rates > 0), got {values}"
            )
    fixed = {key: float(config.optimizer[key]) for key in GRID_KEYS}
    return [{**fixed, **dict(zip(axes, combo))} for combo in itertools.product(*axes.values())]


def swept_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The GRID_KEYS with a non-empty grid axis: the names `train`'s ``hparams`` holds."""
    return tuple(key for key in GRID_KEYS if config.grid.get(key))


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


def check_config(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for structural mistakes in one (resolved variant) config."""
    task, network, opt = config.task, config.network, config.optimizer
    if task.name not in tasks.KNOWN_TASKS:
        raise ValueError(f"unknown task {task.name!r}; known tasks: {', '.join(tasks.KNOWN_TASKS)}")
    if network.name not in NETWORKS:
        raise ValueError(f"unknown network {network.name!r}; known networks: {', '.join(NETWORKS)}")
    layers.check_norm(network.norm)
    layers.check_activation(network.activation)
    if opt.name not in optim.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt.name!r}; known: {', '.join(optim.OPTIMIZERS)}")
    if opt.schedule.name not in schedules.SCHEDULES:
        raise ValueError(
            f"unknown schedule {opt.schedule.name!r}; known: {', '.join(schedules.SCHEDULES)}"
        )
    nap.check_nap_config(network.norm, opt.nap.enabled)
    if opt.nap.enabled:
        nap.check_gamma_beta(opt.nap.gamma_beta)
    for name, value in (
        ("task.num_tasks", task.num_tasks),
        ("task.batch_size", task.batch_size),
        ("eval.max_examples", config.eval.max_examples),
        ("eval.batch_size", config.eval.batch_size),
        ("diagnostics.probe_size", config.diagnostics.probe_size),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if config.intervention.every < 0:
        raise ValueError(f"intervention.every must be >= 0, got {config.intervention.every}")
    diagnostics_block(config)


# ---------------------------------------------------------------------------
# Data, network and loss
# ---------------------------------------------------------------------------


def _data_key(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.data.to_dict(), sort_keys=True)


@functools.lru_cache(maxsize=8)
def _load_dataset_cached(data_key: str) -> datasets.Dataset:
    data = json.loads(data_key)
    return datasets.load_dataset(
        data["name"],
        data["data_dir"] or None,
        source=data["source"],
        max_train_examples=data["max_train_examples"] or None,
        max_test_examples=data["max_test_examples"] or None,
        cifar100_label_mode=data["cifar100_label_mode"],
        digits_test_fraction=data["digits_test_fraction"],
    )


def load_task_dataset(config: ml_collections.ConfigDict) -> datasets.Dataset | None:
    """The dataset the config's task draws from (None for stream tasks, which need none).

    Raises `datasets.DatasetNotFoundError` (a one-line ValueError) when files are missing.
    """
    if config.task.name in tasks.STREAM_TASKS:
        return None
    return _load_dataset_cached(_data_key(config))


def task_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `benchmarks.tasks.TaskConfig` fields of ``config.task``."""
    names = {f.name for f in dataclasses.fields(tasks.TaskConfig)}
    return {key: value for key, value in config.task.to_dict().items() if key in names}


def build_network(
    network: ml_collections.ConfigDict, num_outputs: int, input_shape: Sequence[int]
) -> nn.Module:
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


def make_loss_fn(model: nn.Module, kind: str) -> Callable[..., tuple[jax.Array, dict]]:
    """``(params, inputs, targets) -> (mean loss, {'loss', 'accuracy'?})``.

    Classification: softmax cross-entropy on integer labels, plus accuracy. Regression: squared
    error averaged over examples and outputs.
    """

    def loss_fn(params, inputs, targets):
        outputs = model.apply({"params": params}, inputs)
        if kind == tasks.CLASSIFICATION:
            loss = optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
            accuracy = jnp.mean(jnp.argmax(outputs, axis=-1) == targets)
            return loss, {"loss": loss, "accuracy": accuracy}
        loss = jnp.mean(jnp.square(outputs - targets))
        return loss, {"loss": loss}

    return loss_fn


def _per_example_metrics(
    model: nn.Module, kind: str, params, inputs, targets
) -> dict[str, jax.Array]:
    outputs = model.apply({"params": params}, inputs)
    if kind == tasks.CLASSIFICATION:
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(outputs, targets),
            "accuracy": (jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32),
        }
    return {"loss": jnp.mean(jnp.square(outputs - targets).reshape(outputs.shape[0], -1), axis=1)}


def eval_plan(count: int, max_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (batches, batch): the first min(count, max_examples) examples,
    padded to whole batches with repeats of weight 0."""
    count = min(count, max_examples)
    batch_size = min(batch_size, count)
    num_batches = -(-count // batch_size)
    positions = np.arange(num_batches * batch_size)
    return (
        (positions % count).reshape(num_batches, batch_size).astype(np.int32),
        (positions < count).reshape(num_batches, batch_size).astype(np.float32),
    )


def evaluate_examples(
    model: nn.Module,
    kind: str,
    params: Any,
    batch_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    plan: tuple[np.ndarray, np.ndarray],
) -> dict[str, jax.Array]:
    """Mean per-example loss (and accuracy) over the examples of an `eval_plan`, batch by batch."""
    indices, weights = plan

    def one(args):
        idx, w = args
        inputs, targets = batch_fn(idx)
        metrics = _per_example_metrics(model, kind, params, inputs, targets)
        return {name: jnp.sum(value * w) for name, value in metrics.items()}

    sums = jax.lax.map(one, (jnp.asarray(indices), jnp.asarray(weights)))
    return {name: jnp.sum(value) / float(weights.sum()) for name, value in sums.items()}


def short_layer_name(layer: str) -> str:
    """'hidden_0/linear' → 'hidden_0': the layer names the diagnostics module uses too."""
    return layer[: -len("/linear")] if layer.endswith("/linear") else layer


def global_norm(params: Any) -> jax.Array:
    """Frobenius norm of all parameters together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params)))


def builtin_diagnostics(
    params: Any, previous_params: Any, learning_rate: jax.Array, exponent: float
) -> dict[str, jax.Array]:
    """Per-layer 'weight_norm/', 'effective_lr/' (η/‖W‖^p), 'update_ratio/' and 'param_norm'."""
    out: dict[str, jax.Array] = {}
    for layer, value in effective_lr.layer_weight_norms(params).items():
        out[f"weight_norm/{short_layer_name(layer)}"] = value
    for layer, value in effective_lr.effective_learning_rates(
        params, learning_rate, exponent
    ).items():
        out[f"effective_lr/{short_layer_name(layer)}"] = value
    for layer, value in effective_lr.relative_update_norms(previous_params, params).items():
        out[f"update_ratio/{short_layer_name(layer)}"] = value
    out["param_norm"] = global_norm(params)
    return out


def default_lr_exponent(optimizer_name: str) -> float:
    """p of η/‖W‖^p: 2 for SGD-like updates, 1 for Adam-like (normalized) updates."""
    return 2.0 if optimizer_name in ("sgd", "momentum") else 1.0


def effective_lr_exponent(config: ml_collections.ConfigDict) -> float:
    """The p of η/‖W‖^p used by the built-in rows and passed to `plasticity.diagnostics`.

    ``diagnostics.effective_lr_exponent``, else ``diagnostics.options.effective_lr_exponent``,
    else `default_lr_exponent` of the optimizer; both set and different is a one-line error.
    """
    own = float(config.diagnostics.effective_lr_exponent)
    option = config.diagnostics.options.to_dict().get("effective_lr_exponent")
    if own and option is not None and float(option) != own:
        raise ValueError(
            f"diagnostics.effective_lr_exponent ({own:g}) and "
            f"diagnostics.options.effective_lr_exponent ({float(option):g}) disagree; "
            f"set only one"
        )
    if own:
        return own
    return float(option) if option is not None else default_lr_exponent(config.optimizer.name)


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------


def _mix32(x: jax.Array) -> jax.Array:
    """lowbias32 (C. Wellons): a cheap, well-mixing bijection of uint32."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def sample_indices(
    key: jax.Array, counter: jax.Array | int, size: int, num_examples: int
) -> jax.Array:
    """`size` indices uniform in [0, num_examples), a pure function of (key, counter).

    A counter-based integer hash of (raw key words, counter, lane) instead of threefry: adequate
    for picking minibatch examples (modulo bias < num_examples / 2^32) and far cheaper to compile
    on XLA:CPU, where every threefry call in a program adds a fraction of a second.
    """
    words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    words = words.astype(jnp.uint32).reshape(-1)
    counter_hash = _mix32(jnp.asarray(counter).astype(jnp.uint32) ^ _mix32(words[0]))
    seed = _mix32(counter_hash + words[1] * jnp.uint32(0x9E3779B9))
    lanes = jnp.arange(size, dtype=jnp.uint32)
    hashed = _mix32(_mix32(seed ^ (lanes * jnp.uint32(0x85EBCA6B))) + lanes)
    return (hashed % jnp.uint32(num_examples)).astype(jnp.int32)


class Carry(NamedTuple):
    """What a run carries across tasks: the train state and the current task's state."""

    state: TrainState
    task_state: Any


class Trainer(NamedTuple):
    """A compiled-once description of one variant; functions are pure and vmappable.

    Attributes:
      config: the resolved config of the variant.
      sequence: the task sequence; ``sequence.data`` is the default ``data`` argument.
      model: the Flax network.
      num_tasks, steps_per_task, block_steps: run shape (diagnostics after every block whose end
        is a multiple of ``diagnostics_every``; 0 = no diagnostics).
      hparam_keys: the swept axes, which the runner passes in ``hparams`` (``train`` accepts any
        subset of GRID_KEYS there; absent ones take the config's values).
      init: ``(rng, hparams, data) -> (Carry, diagnostics at step 0)``.
      run_tasks: ``(carry, hparams, task_indices, data) -> (carry, outputs)`` for consecutive
        tasks ``task_indices`` (an int32 array; unbatched under vmap); outputs hold
        ``'task'``: {metric: (n,)}, ``'diagnostics'``: {key: (n, blocks per task)} and
        ``'health'``: ``nonfinite_loss_step`` (n,), the first step of each task whose training
        loss was NaN/Inf (-1: none), and ``nonfinite_loss_value`` (that loss).
      train: ``(rng, hparams, data=None) -> (carry, outputs)``: init then every task in one scan;
        outputs add ``'initial_diagnostics'``.
      compiled: executables the runner compiled for this trainer, reused by later runs of the
        same plan (a resumed run in the same process compiles nothing again).
    """

    config: ml_collections.ConfigDict
    sequence: tasks.TaskSequence
    model: nn.Module
    num_tasks: int
    steps_per_task: int
    block_steps: int
    diagnostics_every: int
    hparam_keys: tuple[str, ...]
    init: Callable
    run_tasks: Callable
    train: Callable
    compiled: dict

    @property
    def blocks_per_task(self) -> int:
        return self.steps_per_task // self.block_steps

    def diagnostics_steps(self, task: int) -> list[tuple[int, int]]:
        """[(block index, global step after it)] of the blocks of `task` that take diagnostics."""
        if not self.diagnostics_every:
            return []
        start = task * self.steps_per_task
        ends = [(b, start + (b + 1) * self.block_steps) for b in range(self.blocks_per_task)]
        return [(b, step) for b, step in ends if step % self.diagnostics_every == 0]


def intervention_pair(intervention: Any) -> tuple[Callable, Callable]:
    """(init, apply) of an intervention given as an object with those attributes or a pair."""
    if hasattr(intervention, "init") and hasattr(intervention, "apply"):
        return intervention.init, intervention.apply
    init, apply = intervention
    return init, apply


def _lazy_diagnostics_factory() -> DiagnosticsFactory:
    try:
        from plasticity.diagnostics import make_diagnostics_fn  # noqa: PLC0415 - optional plug-in
    except ImportError as error:
        raise ValueError(
            f"diagnostics.names needs plasticity.diagnostics.make_diagnostics_fn, "
            f"which cannot be imported ({error}); set diagnostics.names=()"
        ) from error
    return make_diagnostics_fn


def _lazy_intervention_factory() -> InterventionFactory:
    try:
        from plasticity.interventions import make_intervention  # noqa: PLC0415 - optional plug-in
    except ImportError as error:
        raise ValueError(
            f"intervention.name needs plasticity.interventions.make_intervention, "
            f"which cannot be imported ({error}); set intervention.name='none'"
        ) from error
    return make_intervention


def make_trainer(
    config: ml_collections.ConfigDict,
    *,
    dataset: datasets.Dataset | None = None,
    diagnostics_factory: DiagnosticsFactory | None = None,
    intervention_factory: InterventionFactory | None = None,
) -> Trainer:
    """Builds the pure functions of one (resolved variant) config; compiles nothing.

    Args:
      config: a config with every field of `default_config` (variants are ignored here: pass one
        of `variant_configs(config)`).
      dataset: the dataset to draw from (default: `load_task_dataset(config)`).
      diagnostics_factory: ``make_diagnostics_fn(model, loss_fn, names, **options)``; default
        `plasticity.diagnostics.make_diagnostics_fn`, imported only when names are configured.
      intervention_factory: ``make_intervention(name, model, **options) -> (init, apply)``;
        default `plasticity.interventions.make_intervention`, imported only when one is set.
    """
    check_config(config)
    if dataset is None:
        dataset = load_task_dataset(config)
    sequence = tasks.make_task_sequence(task_options(config), dataset)
    model = build_network(config.network, sequence.num_outputs, sequence.input_shape)
    kind = sequence.kind
    num_tasks = int(config.task.num_tasks)
    steps = steps_per_task(config)
    block_steps, every = diagnostics_block(config)
    blocks_per_task = steps // block_steps
    batch_size = int(config.task.batch_size)
    stream = config.task.name in tasks.STREAM_TASKS
    hparam_keys = swept_keys(config)
    opt_config = config.optimizer
    # The norms whose (γ, β) NaP may project without changing the function (shapes only).
    example = jax.ShapeDtypeStruct((1, *sequence.input_shape), jnp.float32)
    invariant_norms = nap.scale_invariant_norms(model, example) if opt_config.nap.enabled else ()
    loss_fn = make_loss_fn(model, kind)
    scalar_loss = lambda params, inputs, targets: loss_fn(params, inputs, targets)[0]
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    exponent = effective_lr_exponent(config)
    probe_size = int(config.diagnostics.probe_size)

    extra_diagnostics = None
    if every and tuple(config.diagnostics.names):
        factory = diagnostics_factory or _lazy_diagnostics_factory()
        options = config.diagnostics.options.to_dict()
        if "effective_lr" in tuple(config.diagnostics.names):
            options["effective_lr_exponent"] = exponent  # one p for the built-in and module rows
        extra_diagnostics = factory(model, scalar_loss, tuple(config.diagnostics.names), **options)

    intervention = None
    intervention_name = str(config.intervention.name)
    intervention_every = int(config.intervention.every)
    at_boundaries = bool(config.intervention.at_task_boundaries)
    if intervention_name != "none":
        if not intervention_every and not at_boundaries:
            raise ValueError(
                f"intervention {intervention_name!r} never runs: set intervention.every "
                f"> 0 and/or intervention.at_task_boundaries=True"
            )
        if intervention_name in UNSUPPORTED_INTERVENTIONS:
            raise ValueError(
                f"intervention {intervention_name!r} changes how the network computes its "
                f"outputs, which this trainer does not support"
            )
        factory = intervention_factory or _lazy_intervention_factory()
        intervention = intervention_pair(
            factory(intervention_name, model, **config.intervention.options.to_dict())
        )

    # Periodic interventions run after segments of `segment_steps` updates: a length dividing both
    # the diagnostics block and the period, so every multiple of the period ends a segment.
    periodic_intervention = intervention is not None and intervention_every > 0
    segment_steps = (
        math.gcd(block_steps, intervention_every) if periodic_intervention else block_steps
    )
    segments_per_block = block_steps // segment_steps

    max_eval, eval_batch = int(config.eval.max_examples), int(config.eval.batch_size)
    train_eval = eval_plan(sequence.num_examples, max_eval, eval_batch)
    test_eval = (
        eval_plan(sequence.num_test_examples, max_eval, eval_batch)
        if sequence.test_batch is not None
        else None
    )

    def make_tx(hparams: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        unknown = sorted(set(hparams) - set(GRID_KEYS))
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter(s) {', '.join(unknown)} in hparams; "
                f"known: {', '.join(GRID_KEYS)}"
            )
        return optim.make_optimizer(opt_config, nap_invariant_norms=invariant_norms, **hparams)

    def run_keys(state: TrainState) -> dict[str, jax.Array]:
        # Derived once per compiled call: every threefry call costs compile time on XLA:CPU.
        return {
            "tasks": jax.random.fold_in(state.rng, _TASKS_STREAM),
            "steps": jax.random.fold_in(state.rng, _STEPS_STREAM),
            "probe": jax.random.fold_in(state.rng, _PROBE_STREAM),
        }

    def probe_batch(keys, task_state, task, data):
        indices = sample_indices(keys["probe"], task, probe_size, sequence.num_examples)
        return sequence.batch(task_state, indices, data)

    def learning_rate_now(state: TrainState, hparams) -> jax.Array:
        return optim.optimizer_learning_rate(opt_config, state.step, hparams.get("learning_rate"))

    def diagnostics(state, previous_params, task_state, task, key, keys, hparams, data):
        lr = learning_rate_now(state, hparams)
        out = builtin_diagnostics(state.params, previous_params, lr, exponent)
        if extra_diagnostics is not None:
            inputs, targets = probe_batch(keys, task_state, task, data)
            out.update(extra_diagnostics(state.params, previous_params, inputs, targets, key, lr))
        return {name: jnp.asarray(value, jnp.float32) for name, value in out.items()}

    def intervene(state: TrainState, task_state, task, key, keys, data) -> TrainState:
        inputs, _ = probe_batch(keys, task_state, task, data)
        return intervention[1](state, inputs, key)

    def step_key(keys, global_step, purpose: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(keys["steps"], global_step), purpose)

    def evaluate(params, task_state, plan, batch_fn, data) -> dict[str, jax.Array]:
        return evaluate_examples(
            model, kind, params, lambda idx: batch_fn(task_state, idx, data), plan
        )

    def init(rng: jax.Array, hparams: Mapping[str, jax.Array], data: tasks.TaskData | None = None):
        data = sequence.data if data is None else data
        tx = make_tx(hparams)
        inputs = jnp.zeros((1, *sequence.input_shape), jnp.float32)
        params = model.init(jax.random.fold_in(rng, _PARAMS_STREAM), inputs)["params"]
        extra = {}
        if intervention is not None:
            extra[intervention_name] = intervention[0](params)
        state = create_train_state(params, tx, rng, extra)
        keys = run_keys(state)
        task_state = sequence.init(keys["tasks"], data)
        initial = {}
        if every:
            initial = diagnostics(
                state,
                state.params,
                task_state,
                jnp.int32(0),
                jax.random.fold_in(rng, _INITIAL_STREAM),
                keys,
                hparams,
                data,
            )
        return Carry(state, task_state), initial

    def train_step(carry, global_step, task, task_state, keys, tx, data):
        state, _ = carry
        if stream:
            offset = (global_step % steps) * batch_size
            indices = offset + jnp.arange(batch_size, dtype=jnp.int32)
        else:
            indices = sample_indices(keys["steps"], global_step, batch_size, sequence.num_examples)
        inputs, targets = sequence.batch(task_state, indices, data)
        (_, metrics), grads = grad_fn(state.params, inputs, targets)
        previous_params = state.params
        state = apply_gradients(state, grads, tx)
        return (state, previous_params), metrics

    def run_segment(carry, first, task, task_state, keys, tx, data):
        """`segment_steps` updates from global step `first`, then the periodic intervention if due."""
        step_fn = functools.partial(
            train_step, task=task, task_state=task_state, keys=keys, tx=tx, data=data
        )
        (state, previous_params), metrics = jax.lax.scan(
            step_fn, carry, first + jnp.arange(segment_steps, dtype=jnp.int32)
        )
        if periodic_intervention:
            end = first + segment_steps
            apply = lambda s: intervene(s, task_state, task, step_key(keys, end - 1, 0), keys, data)
            if (
                segment_steps == intervention_every
            ):  # every segment ends on a multiple of the period
                state = apply(state)
            else:  # an unbatched predicate: a real branch under vmap, evaluated once per segment
                state = jax.lax.cond(end % intervention_every == 0, apply, lambda s: s, state)
        return (state, previous_params), metrics

    def run_block(state, task_state, task, block, keys, hparams, tx, data):
        first = task * steps + block * block_steps
        segment = functools.partial(
            run_segment, task=task, task_state=task_state, keys=keys, tx=tx, data=data
        )
        if segments_per_block == 1:
            (state, previous_params), metrics = segment((state, state.params), first)
        else:
            (state, previous_params), metrics = jax.lax.scan(
                lambda carry, s: segment(carry, first + s * segment_steps),
                (state, state.params),
                jnp.arange(segments_per_block, dtype=jnp.int32),
            )
            metrics = jax.tree.map(lambda x: x.reshape((block_steps,) + x.shape[2:]), metrics)
        if not every:
            return state, metrics, {}
        end = first + block_steps

        def take(s):
            key = step_key(keys, end - 1, 1) if extra_diagnostics is not None else None
            return diagnostics(s, previous_params, task_state, task, key, keys, hparams, data)

        if every <= steps:
            return state, metrics, take(state)
        shapes = jax.eval_shape(take, state)
        zeros = lambda s: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return state, metrics, jax.lax.cond(end % every == 0, take, zeros, state)

    def run_task(carry: Carry, task: jax.Array, keys, hparams, tx, data):
        state, task_state = carry

        def switch(args):
            state, task_state = args
            task_state = sequence.next(task_state, keys["tasks"], task, data)
            if intervention is not None and at_boundaries:
                state = intervene(
                    state, task_state, task, step_key(keys, task * steps, 2), keys, data
                )
            return state, task_state

        state, task_state = jax.lax.cond(task > 0, switch, lambda args: args, (state, task_state))

        def block_fn(state, block):
            state, metrics, diag = run_block(
                state, task_state, task, block, keys, hparams, tx, data
            )
            return state, (metrics, diag)

        state, (metrics, diag) = jax.lax.scan(
            block_fn, state, jnp.arange(blocks_per_task, dtype=jnp.int32)
        )
        row = {f"online_{name}": jnp.mean(value) for name, value in metrics.items()}
        row.update(
            {
                f"end_{name}": value
                for name, value in evaluate(
                    state.params, task_state, train_eval, sequence.batch, data
                ).items()
            }
        )
        if test_eval is not None:
            row.update(
                {
                    f"end_test_{name}": value
                    for name, value in evaluate(
                        state.params, task_state, test_eval, sequence.test_batch, data
                    ).items()
                }
            )
        row["param_norm"] = global_norm(state.params)
        losses = metrics["loss"].reshape(-1)  # in step order: (blocks, block_steps) flattened
        first_bad = divergence.first_nonfinite_index(losses)
        health = {
            "nonfinite_loss_step": jnp.where(first_bad >= 0, task * steps + first_bad, -1),
            "nonfinite_loss_value": losses[jnp.maximum(first_bad, 0)],
        }
        return Carry(state, task_state), {"task": row, "diagnostics": diag, "health": health}

    def run_tasks(
        carry: Carry,
        hparams: Mapping[str, jax.Array],
        task_indices: jax.Array,
        data: tasks.TaskData | None = None,
    ):
        data = sequence.data if data is None else data
        tx = make_tx(hparams)
        keys = run_keys(carry.state)
        return jax.lax.scan(
            lambda c, t: run_task(c, t, keys, hparams, tx, data),
            carry,
            jnp.asarray(task_indices, jnp.int32),
        )

    def train(
        rng: jax.Array,
        hparams: Mapping[str, jax.Array] | None = None,
        data: tasks.TaskData | None = None,
    ):
        hparams = {} if hparams is None else hparams
        carry, initial = init(rng, hparams, data)
        carry, outputs = run_tasks(carry, hparams, jnp.arange(num_tasks, dtype=jnp.int32), data)
        return carry, {**outputs, "initial_diagnostics": initial}

    return Trainer(
        config,
        sequence,
        model,
        num_tasks,
        steps,
        block_steps,
        every,
        hparam_keys,
        init,
        run_tasks,
        train,
        {},
    )


def make_train(config: ml_collections.ConfigDict, **kwargs) -> Callable:
    """``train(rng, hparams=None, data=None) -> (final Carry, outputs)`` for one variant config.

    ``jax.jit(jax.vmap(jax.vmap(train, (0, None)), (None, 0)))(keys, grid)`` runs a grid of
    hyper-parameters × seeds in one program; keyword arguments go to `make_trainer`.
    """
    return make_trainer(config, **kwargs).train


# ---------------------------------------------------------------------------
# The sweep runner
# ---------------------------------------------------------------------------


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
    variants = []
    for name, variant in variant_configs(config):
        try:
            variants.append((name, make_trainer(variant, **trainer_kwargs)))
        except ValueError as error:
            raise type(error)(f"variant {name!r}: {error}") from error
    return ExperimentPlan(config, variants, grid, int(config.num_seeds))


def tasks_per_chunk(config: ml_collections.ConfigDict, num_tasks: int) -> int:
    """Tasks per compiled call (and per checkpoint): ``run.tasks_per_chunk``, or by default the
    largest divisor of the task count giving at least 10 chunks (equal chunks: one compilation)."""
    chosen = int(config.run.tasks_per_chunk)
    if chosen < 0:
        raise ValueError(f"run.tasks_per_chunk must be >= 0, got {chosen}")
    if chosen:
        return min(num_tasks, chosen)
    return mesh_lib.largest_divisor_at_most(num_tasks, max(1, -(-num_tasks // 10)))


def _hparam_label(point: Mapping[str, float], keys: Sequence[str]) -> str:
    return ",".join(f"{key}={point[key]:g}" for key in keys)


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

    def base(event: str, run: int, step: int, task: int) -> dict[str, Any]:
        return {
            "event": event,
            "step": step,
            "seed": plan.seed_of(run),
            "variant": variant,
            "task": task,
            **plan.point_of(run),
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
        end_step = (task + 1) * trainer.steps_per_task
        for run in range(plan.num_runs):
            rows.append(
                {
                    **base("task", run, end_step, task),
                    **{key: value[run, offset] for key, value in outputs["task"].items()},
                }
            )
    return rows


def _tensorboard_scalars(
    plan: ExperimentPlan, variant: str, rows: Sequence[Mapping[str, Any]]
) -> dict[int, dict[str, float]]:
    """{step: {tag: mean over seeds}} with tags '<variant>[/<grid point>]/<event>/<metric>'."""
    swept = [key for key in GRID_KEYS if plan.config.grid.get(key)]
    sums: dict[tuple[int, str], list[float]] = {}
    skip = {"event", "step", "seed", "variant", "task", "task_name", *GRID_KEYS}
    for row in rows:
        point = _hparam_label(row, swept)
        prefix = f"{variant}/{point}" if point else variant
        for key, value in row.items():
            if key not in skip and value is not None and np.ndim(value) == 0:
                sums.setdefault((row["step"], f"{prefix}/{row['event']}/{key}"), []).append(value)
    scalars: dict[int, dict[str, float]] = {}
    for (step, tag), values in sums.items():
        scalars.setdefault(step, {})[tag] = float(np.mean(values))
    return scalars


@dataclasses.dataclass
class ExperimentResult:
    """What `run_experiment` did: whether every variant is done, final run states, and whether it
    stopped early because `should_stop` asked (``preempted``; a checkpoint holds where it stood)."""

    completed: bool
    workdir: Path
    final_carries: dict[str, Any]
    compile_seconds: dict[str, float]
    run_seconds: dict[str, float]
    preempted: bool = False


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


def _resume_point(
    checkpointer: checkpointing.Checkpointer, plan: ExperimentPlan
) -> tuple[int, int, int, int | None]:
    """(variant index, next task, metrics bytes, checkpoint step) to continue from."""
    step = checkpointer.latest_step()
    if step is None:
        return 0, 0, 0, None
    meta = checkpointer.restore_metadata(step)
    names = [name for name, _ in plan.variants]
    if meta.get("variant") not in names or names.index(meta["variant"]) != meta["variant_index"]:
        raise ValueError(
            f"checkpoint {step} in {checkpointer.directory} is of variant "
            f"{meta.get('variant')!r}, which this config does not have at position "
            f"{meta.get('variant_index')}; use a new --workdir"
        )
    return int(meta["variant_index"]), int(meta["next_task"]), int(meta["metrics_bytes"]), step


def _kept_checkpoint(checkpointer: checkpointing.Checkpointer) -> str:
    """Which checkpoint a stopped run keeps, for its error message."""
    step = checkpointer.latest_step()
    if step is None:
        return divergence.kept_checkpoint_text(checkpointer.directory, None)
    meta = checkpointer.restore_metadata(step)
    return divergence.kept_checkpoint_text(
        checkpointer.directory, step, f"variant {meta['variant']!r}, {meta['next_task']} tasks done"
    )


def run_experiment(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    max_chunks: int | None = None,
    plan: ExperimentPlan | None = None,
    show_progress: bool | None = None,
    should_stop: Callable[[], bool] | None = None,
    **trainer_kwargs,
) -> ExperimentResult:
    """Runs (or resumes) every variant × grid point × seed of a sweep, writing the work dir.

    Variants run one after another; each runs in chunks of tasks, one compiled call per chunk
    over all its runs (laid out over the ``seed`` axis of the mesh ``config.mesh``, which may span
    several processes). After a chunk its metrics rows are appended and a checkpoint (run states
    + where the sweep stands + metrics file size) is written; a relaunch restores the latest
    checkpoint, truncates the metrics file to the size recorded there and continues.
    `max_chunks` stops after that many chunks (time-sliced jobs and tests); `should_stop` is
    asked after every chunk's checkpoint but the last (e.g. `PreemptionGuard.should_stop`, a
    collective in a multi-process job) and a True ends the call there with ``preempted`` set. A
    NaN/Inf loss or end-of-task metric raises `plasticity.divergence.DivergenceError` (one line:
    step, metric, run, last checkpoint kept) before the chunk's rows or checkpoint are written,
    unless ``run.stop_on_divergence`` is off.
    """
    plan = plan or plan_experiment(config, **trainer_kwargs)
    workdir = Path(workdir)
    writer = workdir_lib.WorkDir(workdir, tensorboard=bool(config.run.tensorboard))
    writer.check_or_write_config(config.to_dict(), ignore=RESUME_FREE_FIELDS)
    checkpointer = checkpointing.Checkpointer(
        writer.checkpoint_dir, max_to_keep=int(config.run.checkpoints_to_keep)
    )
    variant_index, next_task, metrics_bytes, _ = _resume_point(checkpointer, plan)
    writer.truncate_metrics(metrics_bytes)
    if (
        variant_index < len(plan.variants)
        and next_task >= plan.variants[variant_index][1].num_tasks
    ):
        variant_index, next_task = variant_index + 1, 0

    mesh = mesh_lib.make_mesh(config.mesh, num_runs=plan.num_runs)
    keys = mesh_lib.shard_leading_axis(plan.run_keys(), mesh)
    show = bool(config.run.progress) if show_progress is None else show_progress
    total_steps = sum(t.num_tasks * t.steps_per_task for _, t in plan.variants)
    done_steps = sum(t.num_tasks * t.steps_per_task for _, t in plan.variants[:variant_index])
    if variant_index < len(plan.variants):
        done_steps += next_task * plan.variants[variant_index][1].steps_per_task
    bar = progress_lib.Progress(
        total_steps,
        f"{workdir.name} [{mesh_lib.format_mesh(mesh)}]",
        initial=done_steps,
        disable=None if show else True,
    )
    result = ExperimentResult(False, workdir, {}, {}, {})
    chunks_done = 0
    try:
        for index in range(variant_index, len(plan.variants)):
            name, trainer = plan.variants[index]
            start_task = next_task if index == variant_index else 0
            hparams = mesh_lib.shard_leading_axis(plan.run_hparams(trainer.hparam_keys), mesh)
            data = mesh_lib.replicate(trainer.sequence.data, mesh)
            mesh_key = (tuple(mesh.axis_names), tuple(d.id for d in mesh.devices.flat))
            # Every run-indexed array (keys, grid values, carries, outputs) is split over 'seed'.
            per_batch = int(config.run.runs_per_batch)
            over_runs = functools.partial(
                mesh_lib.over_leading_axis, mesh=mesh, num_split_args=2, runs_per_batch=per_batch
            )
            init_fn = trainer.compiled.setdefault(
                ("init", mesh_key, per_batch), jax.jit(over_runs(trainer.init))
            )
            carry, initial = init_fn(keys, hparams, data)
            if start_task > 0:
                step = plan.tasks_before(index) + start_task
                carry, _ = checkpointer.restore(carry, step)
                initial = None
            chunk = tasks_per_chunk(trainer.config, trainer.num_tasks)
            run_fn = jax.jit(over_runs(trainer.run_tasks))
            result.compile_seconds[name] = 0.0
            result.run_seconds[name] = 0.0
            for first in range(start_task, trainer.num_tasks, chunk):
                if max_chunks is not None and chunks_done >= max_chunks:
                    return result
                task_indices = np.arange(
                    first, min(first + chunk, trainer.num_tasks), dtype=np.int32
                )
                cache_key = ("run_tasks", mesh_key, per_batch, len(task_indices))
                if cache_key not in trainer.compiled:
                    bar.set_postfix(
                        variant=name, task=f"{first}/{trainer.num_tasks}", status="compiling"
                    )
                    tic = time.perf_counter()
                    trainer.compiled[cache_key] = run_fn.lower(
                        carry, hparams, task_indices, data
                    ).compile()
                    result.compile_seconds[name] += time.perf_counter() - tic
                    bar.reset_clock()
                tic = time.perf_counter()
                carry, outputs = trainer.compiled[cache_key](carry, hparams, task_indices, data)
                outputs = distributed.fetch(
                    outputs
                )  # an all-gather when runs span several processes
                result.run_seconds[name] += time.perf_counter() - tic
                diverged = find_divergence(plan, name, trainer, first, outputs)
                if diverged is not None and config.run.stop_on_divergence:
                    step, metric, value, label = diverged
                    raise divergence.DivergenceError(
                        step, metric, value, label, _kept_checkpoint(checkpointer)
                    )
                rows = chunk_rows(
                    plan,
                    name,
                    trainer,
                    first,
                    outputs,
                    distributed.fetch(initial) if initial else None,
                )
                initial = None
                metrics_bytes = writer.append_metrics(rows)
                for step, scalars in sorted(_tensorboard_scalars(plan, name, rows).items()):
                    writer.write_scalars(step, scalars)
                writer.flush()
                next_task = int(task_indices[-1]) + 1
                checkpointer.save(
                    plan.tasks_before(index) + next_task,
                    carry,
                    {
                        "variant_index": index,
                        "variant": name,
                        "next_task": next_task,
                        "metrics_bytes": metrics_bytes,
                    },
                )
                chunks_done += 1
                last = outputs["task"]
                score = last.get("end_accuracy", last["end_loss"])[:, -1].mean()
                bar.advance(
                    len(task_indices) * trainer.steps_per_task,
                    variant=name,
                    task=f"{next_task}/{trainer.num_tasks}",
                    **{("acc" if "end_accuracy" in last else "loss"): float(score)},
                )
                finished = index == len(plan.variants) - 1 and next_task >= trainer.num_tasks
                if not finished and should_stop is not None and should_stop():
                    result.preempted = True
                    return result
            result.final_carries[name] = carry
        result.completed = True
        return result
    finally:
        bar.close()
        writer.close()
        checkpointer.close()
