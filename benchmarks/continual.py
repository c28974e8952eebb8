"""Compiled continual-learning trainer for the nonstationary task sequences.

`make_train(config)` returns ``train(rng, hparams, data=None)``: one whole run (every task, every
step) as a single `lax.scan` — an outer scan over tasks, a scan over blocks of K steps inside
each task (diagnostics after each block) and a scan over the steps of a block. ``hparams`` maps
continuous hyper-parameters (any of ``learning_rate``, ``weight_decay``, ``l2``, ``l2_init``) to
arrays, so ``jit(vmap(vmap(train)))`` runs a grid of them × seeds as one program; names absent
from ``hparams`` take the config's values. Structural choices (network, norm, NaP, activation,
intervention, task) change the program: a sweep lists them as named *variants*, compiled once
each (`benchmarks.continual_config`).

The same pieces, split at task boundaries (`Trainer.init` and `Trainer.run_tasks`), drive the
sweep runner (`benchmarks.continual_sweep.run_experiment`), which checkpoints between chunks of
tasks. All randomness is derived from the run's key by ``fold_in`` with the task or global step
index, so a resumed run equals an uninterrupted one bit for bit on CPU.

Randomness of a run with key k: parameters from ``fold_in(k, 0)``; the task sequence from
``fold_in(k, 1)`` (so every variant of a sweep sees the same tasks for a seed); the minibatch of
global step t from an integer hash of (``fold_in(k, 2)``, t) (`benchmarks.minibatches`: drawn with
replacement, or with ``task.sampling='shuffled'`` the task's next examples in a random order of each
pass; stream tasks take their examples in order), intervention and diagnostics noise of step t from
``fold_in(fold_in(fold_in(k, 2), t), purpose)``; the diagnostics' probe batch during task i from a
hash of (``fold_in(k, 3)``, i), an intervention's after step t from (``fold_in(k, 3)``, tasks + t),
of the task that ended for one at a task boundary. Run keys are ``PRNGKey(seed)``, shared by all
grid points and variants (common random numbers).

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
period, never under a per-step ``lax.cond``, so its cost is paid only when it is due. An
intervention due with the diagnostics or at a task's end runs after them and after the task's
evaluation, so that they measure the last update, and none follows the run's last update (the
saved network is the one last evaluated), as in the RL loops. Each task
also reports the first step whose training loss was NaN/Inf, so the runner names the exact step
of a divergence.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks import datasets, tasks
from benchmarks.minibatches import sample_indices, shuffled_indices
from benchmarks.continual_config import (
    GRID_KEYS,
    build_network,
    check_config,
    diagnostics_block,
    probes_last_batch,
    steps_per_task,
    swept_keys,
    task_schedule,
    two_hot_output,
)
from plasticity import deferred, divergence, effective_lr, nap, networks, optim, schedules
from plasticity.interventions import injected_apply
from plasticity.train_state import TrainState, apply_gradients, create_train_state
from plasticity.two_hot import TwoHot


_PARAMS_STREAM, _TASKS_STREAM, _STEPS_STREAM, _PROBE_STREAM, _INITIAL_STREAM = 0, 1, 2, 3, 4

DiagnosticsFactory = Callable[..., Callable[..., dict[str, jax.Array]]]
InterventionFactory = Callable[..., tuple[Callable, Callable]]


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
    if tasks.is_stream(config.task.name):
        return None
    return _load_dataset_cached(_data_key(config))


def task_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `benchmarks.tasks.TaskConfig` fields of ``config.task``."""
    names = {f.name for f in dataclasses.fields(tasks.TaskConfig)}
    return {key: value for key, value in config.task.to_dict().items() if key in names}


def model_forward(model: nn.Module, injection: bool = False) -> Callable[..., jax.Array]:
    """``(params, extra, inputs) -> outputs`` of the network: ``model.apply``, or with plasticity
    injection `plasticity.interventions.injected_apply` (h_θ + h_θ' − h_θ'₀ once a head was
    injected; the frozen heads live in the train state's ``extra``)."""

    def forward(params, extra, inputs):
        if injection and extra is not None:
            return injected_apply(model, params, extra, inputs)
        return model.apply({"params": params}, inputs)

    return forward


def make_loss_fn(
    model: nn.Module, kind: str, injection: bool = False, two_hot: TwoHot | None = None
) -> Callable[..., tuple[jax.Array, dict]]:
    """``(params, inputs, targets, extra=None) -> (mean loss, {'loss', 'accuracy'?})``.

    Classification: softmax cross-entropy on integer labels, plus accuracy. Regression: squared
    error averaged over examples and outputs; with a ``two_hot`` output the network learns the
    cross-entropy to the targets' two-hot distributions (`plasticity.two_hot`), and the reported
    'loss' stays the squared error of its predictions, comparable with a linear output's.
    ``extra`` (the train state's) matters only with plasticity injection (`model_forward`).
    """
    forward = model_forward(model, injection)

    def loss_fn(params, inputs, targets, extra=None):
        outputs = forward(params, extra, inputs)
        if kind == tasks.CLASSIFICATION:
            loss = optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
            accuracy = jnp.mean(jnp.argmax(outputs, axis=-1) == targets)
            return loss, {"loss": loss, "accuracy": accuracy}
        if two_hot is not None:
            error = jnp.mean(jnp.square(two_hot.predict(outputs) - targets))
            return two_hot.loss(outputs, targets).mean(), {"loss": error}
        loss = jnp.mean(jnp.square(outputs - targets))
        return loss, {"loss": loss}

    return loss_fn


def _per_example_metrics(outputs: jax.Array, kind: str, targets) -> dict[str, jax.Array]:
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
    forward: Callable[[jax.Array], jax.Array],
    kind: str,
    batch_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    plan: tuple[np.ndarray, np.ndarray],
) -> dict[str, jax.Array]:
    """Mean per-example loss (and accuracy) of ``forward(inputs) -> outputs`` over the examples
    of an `eval_plan`, batch by batch."""
    indices, weights = plan

    def one(args):
        idx, w = args
        inputs, targets = batch_fn(idx)
        metrics = _per_example_metrics(forward(inputs), kind, targets)
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


def effective_lr_exponent(config: ml_collections.ConfigDict) -> float:
    """The p of η/‖W‖^p used by the built-in rows and passed to `plasticity.diagnostics`
    (`plasticity.effective_lr.configured_exponent` of the config's diagnostics section)."""
    return effective_lr.configured_exponent(
        float(config.diagnostics.effective_lr_exponent),
        config.diagnostics.options.to_dict().get("effective_lr_exponent"),
        config.optimizer.name,
    )


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------


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
        ``'health'``: ``nonfinite_loss_step`` (n,), the first update of each task whose
        training loss was NaN/Inf, counted from 1 (-1: none), and ``nonfinite_loss_value``.
      train: ``(rng, hparams, data=None) -> (carry, outputs)``: init then every task in one scan;
        outputs add ``'initial_diagnostics'``.
      draw_batches: ``(rng, data=None) -> checksum``: every training batch of a run drawn as
        ``train`` draws them, and nothing else (`benchmarks.continual_breakdown` times it).
      compiled: executables the runner compiled for this trainer, reused by later runs of the
        same plan (a resumed run in the same process compiles nothing again).
      deferred_kernels: the dense kernels whose SGD updates apply once per
        ``run.defer_dense_updates`` steps (`plasticity.deferred`), as 'layer/path'; () if none.
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
    draw_batches: Callable
    compiled: dict
    deferred_kernels: tuple[str, ...] = ()

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
    layer_schedule: schedules.ImplicitLayerSchedule | None = None,
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
      layer_schedule: a baseline's implicit per-layer schedule to replay
        (`plasticity.schedules.layer_schedule_from_metrics`; docs/algorithms.md, "Per-layer
        implicit schedule"), passed to `plasticity.optim.make_optimizer`; the same for every run.
    """
    check_config(config)
    if dataset is None:
        dataset = load_task_dataset(config)
    sequence = tasks.make_task_sequence(task_options(config), dataset)
    two_hot = two_hot_output(config.network)
    if two_hot is not None and sequence.kind != tasks.REGRESSION:
        raise ValueError(
            f"network.two_hot is a regression output; task {config.task.name!r} is "
            f"{sequence.kind}: set network.two_hot.bins=0"
        )
    bins = 1 if two_hot is None else two_hot.bins
    model = build_network(config.network, sequence.num_outputs * bins, sequence.input_shape)
    kind = sequence.kind
    num_tasks = int(config.task.num_tasks)
    steps = steps_per_task(config)
    block_steps, every = diagnostics_block(config)
    blocks_per_task = steps // block_steps
    batch_size = int(config.task.batch_size)
    stream = tasks.is_stream(config.task.name)
    shuffled = config.task.sampling == "shuffled"
    hparam_keys = swept_keys(config)
    opt_config = task_schedule(config.optimizer, num_tasks, steps)
    # The norms whose (γ, β) NaP may project without changing the function (shapes only).
    example = jax.ShapeDtypeStruct((1, *sequence.input_shape), jnp.float32)
    invariant_norms = nap.scale_invariant_norms(model, example) if opt_config.nap.enabled else ()
    injection = str(config.intervention.name) == "plasticity_injection"
    forward = model_forward(model, injection)
    loss_fn = make_loss_fn(model, kind, injection, two_hot)
    predict = (lambda outputs: outputs) if two_hot is None else two_hot.predict
    # Diagnostics see the network the parameters describe (without an injected head's terms).
    scalar_loss = lambda params, inputs, targets: loss_fn(params, inputs, targets)[0]
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    # Deferred dense updates where they are the same SGD (elsewhere every step, as asked).
    can_defer = not deferred.blockers(opt_config, hparam_keys) and not injection
    defer_window = int(config.run.defer_dense_updates) if can_defer else 1
    sites = {}
    if defer_window > 1:
        init_params = lambda: model.init(jax.random.key(0), jnp.zeros(example.shape))["params"]
        batch_example = jax.ShapeDtypeStruct((batch_size, *sequence.input_shape), jnp.float32)
        sites = deferred.find_sites(forward, jax.eval_shape(init_params), {}, batch_example)
        defer_window = defer_window if sites else 1  # no kernel large enough, fed few rows
    exponent = effective_lr_exponent(config)
    probe_size = int(config.diagnostics.probe_size)
    last_batch_probe = probes_last_batch(config.intervention)

    extra_diagnostics = None
    if every and tuple(config.diagnostics.names):
        factory = diagnostics_factory or _lazy_diagnostics_factory()
        options = config.diagnostics.options.to_dict()
        if "effective_lr" in tuple(config.diagnostics.names):
            options["effective_lr_exponent"] = exponent  # one p for the built-in and module rows
        extra_diagnostics = factory(model, scalar_loss, tuple(config.diagnostics.names), **options)

    model_init = lambda rng, inputs: model.init(rng, inputs)["params"]  # noqa: E731
    init_network = networks.with_initialization(model_init, str(config.network.initialization))
    intervention = None
    intervention_name = str(config.intervention.name)
    intervention_every = int(config.intervention.every)
    at_boundaries = bool(config.intervention.at_task_boundaries)
    if intervention_name != "none":  # the name and options are checked first, as RL does
        factory = intervention_factory or _lazy_intervention_factory()
        options = config.intervention.options.to_dict()
        if init_network is not model_init:  # fresh networks drawn as the first (not Flax's)
            options["init_fn"] = init_network
        intervention = intervention_pair(factory(intervention_name, model, **options))
        if not intervention_every and not at_boundaries:
            raise ValueError(
                f"intervention {intervention_name!r} never runs: set intervention."
                "every > 0 and/or intervention.at_task_boundaries=True"
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
        return optim.make_optimizer(
            opt_config,
            nap_invariant_norms=invariant_norms,
            layer_schedule=layer_schedule,
            **hparams,
        )

    def run_keys(rng: jax.Array) -> dict[str, jax.Array]:
        # Derived once per compiled call: every threefry call costs compile time on XLA:CPU.
        return {
            "tasks": jax.random.fold_in(rng, _TASKS_STREAM),
            "steps": jax.random.fold_in(rng, _STEPS_STREAM),
            "probe": jax.random.fold_in(rng, _PROBE_STREAM),
        }

    def probe_batch(keys, task_state, task, data):
        indices = sample_indices(keys["probe"], task, probe_size, sequence.num_examples)
        return sequence.batch(task_state, indices, data)

    def diagnostics(state, previous_params, task_state, task, key, keys, hparams, data):
        # The last update's rate (a task's next may be the restarted warm-up's); the rows'
        # 'learning_rate' is the run's grid value.
        last_update = jnp.maximum(state.step - 1, 0)
        lr = optim.optimizer_learning_rate(opt_config, last_update, hparams.get("learning_rate"))
        out = builtin_diagnostics(state.params, previous_params, lr, exponent)
        out["scheduled_learning_rate"] = lr
        if extra_diagnostics is not None:
            inputs, targets = probe_batch(keys, task_state, task, data)
            out.update(extra_diagnostics(state.params, previous_params, inputs, targets, key, lr))
        return {name: jnp.asarray(value, jnp.float32) for name, value in out.items()}

    def intervene(state: TrainState, task_state, global_step, key, keys, data) -> TrainState:
        """The intervention after update ``global_step`` on the inputs it scores units on: the
        minibatch of that update (``intervention.probe='last_batch'``, continual backprop's),
        or a probe batch drawn afresh for its step (ReDo's), not the diagnostics' per task."""
        if last_batch_probe:
            inputs, _ = training_batch(keys, global_step - 1, task_state, data)
        else:
            counter = num_tasks + global_step  # apart from `probe_batch`'s counters (the tasks)
            indices = sample_indices(keys["probe"], counter, probe_size, sequence.num_examples)
            inputs, _ = sequence.batch(task_state, indices, data)
        return intervention[1](state, inputs, key)

    def step_key(keys, global_step, purpose: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(keys["steps"], global_step), purpose)

    def evaluate(state: TrainState, task_state, plan, batch_fn, data) -> dict[str, jax.Array]:
        return evaluate_examples(
            lambda inputs: predict(forward(state.params, state.extra, inputs)),
            kind,
            lambda idx: batch_fn(task_state, idx, data),
            plan,
        )

    def init(rng: jax.Array, hparams: Mapping[str, jax.Array], data: tasks.TaskData | None = None):
        data = sequence.data if data is None else data
        tx = make_tx(hparams)
        inputs = jnp.zeros((1, *sequence.input_shape), jnp.float32)
        params = init_network(jax.random.fold_in(rng, _PARAMS_STREAM), inputs)
        extra = {}
        if intervention is not None:
            extra[intervention_name] = intervention[0](params)
        state = create_train_state(params, tx, rng, extra)
        keys = run_keys(state.rng)
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

    def training_batch(keys, global_step, task_state, data):
        """Step ``global_step``'s batch: a stream task's next examples in order, else indices
        hashed from (the run's steps key, the step), or the next of the task's shuffled walk
        (`benchmarks.minibatches`)."""
        if stream:
            offset = (global_step % steps) * batch_size
            indices = offset + jnp.arange(batch_size, dtype=jnp.int32)
        elif shuffled:
            position = (global_step % steps) * batch_size
            task = global_step // steps
            indices = shuffled_indices(
                keys["steps"], task, position, batch_size, sequence.num_examples
            )
        else:
            indices = sample_indices(keys["steps"], global_step, batch_size, sequence.num_examples)
        return sequence.batch(task_state, indices, data)

    def train_step(state, global_step, task, task_state, keys, tx, data):
        inputs, targets = training_batch(keys, global_step, task_state, data)
        (_, metrics), grads = grad_fn(state.params, inputs, targets, state.extra)
        return apply_gradients(state, grads, tx), metrics

    def deferred_window(state, global_steps, task, task_state, keys, tx, data):
        """`train_step` over a window of steps, dense kernels updated once at its end
        (`plasticity.deferred`: the same SGD, half the kernel traffic at batch 1)."""
        batch = lambda step: training_batch(keys, step, task_state, data)
        kernels, rest = deferred.split_kernels(state.params, sites)
        value_and_grad = deferred.factor_value_and_grad(loss_fn, sites)

        def step(carry, slot_and_step):
            rest, opt_state, factors = carry
            slot, global_step = slot_and_step
            (_, metrics), rest_grads, grads = value_and_grad(
                kernels, rest, factors, *batch(global_step), state.extra
            )
            updates, opt_state, coefficients = deferred.kernel_coefficients(
                tx, opt_state, kernels, rest_grads, rest
            )
            factors = deferred.record(factors, slot, grads, coefficients)
            return (optax.apply_updates(rest, updates), opt_state, factors), metrics

        window = global_steps.shape[0]
        factors = deferred.zero_factors(sites, window)
        slots = jnp.arange(window, dtype=jnp.int32)
        (rest, opt_state, factors), metrics = jax.lax.scan(
            step, (rest, state.opt_state, factors), (slots, global_steps)
        )
        params = deferred.merge(deferred.apply_factors(kernels, factors), rest)
        return state.replace(step=state.step + window, params=params, opt_state=opt_state), metrics

    def intervene_if_due(state, end, task_state, keys, data, allowed=True):
        """The periodic intervention after update `end` when `end` is a multiple of its period
        (and `allowed`, a traced bool, holds)."""
        apply = lambda s: intervene(s, task_state, end, step_key(keys, end - 1, 0), keys, data)
        if segment_steps == intervention_every:  # every segment ends on a multiple of the period
            due = allowed
        else:
            due = (end % intervention_every == 0) & allowed
        if due is True:
            return apply(state)
        # An unbatched predicate: a real branch under vmap, evaluated once per segment.
        return jax.lax.cond(due, apply, lambda s: s, state)

    def run_segment(carry, first, task, task_state, keys, tx, data, intervene_after=True):
        """`segment_steps` updates from global step `first`, then the periodic intervention if due
        (unless `intervene_after` is False: a block's last segment, whose intervention waits for
        the block's diagnostics and, at a task's end, its evaluation, so that they measure the
        last update).

        With diagnostics, the last update runs after the loop, so that only the parameters before
        it (the update ratios') are kept: carried through every step, they cost a copy of every
        weight per step (7% of permuted MNIST's batch-1 step)."""
        bound = dict(task=task, task_state=task_state, keys=keys, tx=tx, data=data)
        step_fn = functools.partial(train_step, **bound)
        window_fn = functools.partial(deferred_window, **bound)
        steps_fn = lambda s, xs: deferred.windowed_scan(step_fn, window_fn, s, xs, defer_window)
        state, _ = carry
        global_steps = first + jnp.arange(segment_steps, dtype=jnp.int32)
        if every:
            state, metrics = steps_fn(state, global_steps[:-1])
            previous_params = state.params
            state, last = step_fn(state, global_steps[-1])
            metrics = jax.tree.map(lambda m, x: jnp.concatenate([m, x[None]]), metrics, last)
        else:
            state, metrics = steps_fn(state, global_steps)
            previous_params = state.params
        if periodic_intervention and intervene_after:
            state = intervene_if_due(state, first + segment_steps, task_state, keys, data)
        return (state, previous_params), metrics

    def run_block(state, task_state, task, block, keys, hparams, tx, data):
        first = task * steps + block * block_steps
        bound = dict(task=task, task_state=task_state, keys=keys, tx=tx, data=data)
        segment = functools.partial(run_segment, **bound)
        # The intervention due at the block's end waits for its diagnostics (run_segment).
        scanned = segments_per_block - 1 if periodic_intervention else segments_per_block
        carry, parts = (state, state.params), []
        if scanned == 1:
            carry, metrics = segment(carry, first)
            parts.append(metrics)
        elif scanned:
            starts = first + segment_steps * jnp.arange(scanned, dtype=jnp.int32)
            carry, metrics = jax.lax.scan(lambda c, start: segment(c, start), carry, starts)
            parts.append(jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), metrics))
        if periodic_intervention:
            carry, metrics = segment(carry, first + scanned * segment_steps, intervene_after=False)
            parts.append(metrics)
        metrics = (
            parts[0] if len(parts) == 1 else jax.tree.map(lambda *m: jnp.concatenate(m), *parts)
        )
        state, previous_params = carry
        end, diag = first + block_steps, {}

        def take(s):
            key = step_key(keys, end - 1, 1) if extra_diagnostics is not None else None
            return diagnostics(s, previous_params, task_state, task, key, keys, hparams, data)

        if every and every <= steps:
            diag = take(state)
        elif every:
            shapes = jax.eval_shape(take, state)
            zeros = lambda s: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
            diag = jax.lax.cond(end % every == 0, take, zeros, state)
        if periodic_intervention and blocks_per_task > 1:  # the last block's: after the evaluation
            allowed = block < blocks_per_task - 1
            state = intervene_if_due(state, end, task_state, keys, data, allowed)
        return state, metrics, diag

    def run_task(carry: Carry, task: jax.Array, keys, hparams, tx, data):
        state, task_state = carry

        def switch(args):  # the boundary's intervention on the task that ended, as in RL
            state, task_state = args
            if intervention is not None and at_boundaries:
                key = step_key(keys, task * steps, 2)
                state = intervene(state, task_state, task * steps, key, keys, data)
            return state, sequence.next(task_state, keys["tasks"], task, data)

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
        evaluated = evaluate(state, task_state, train_eval, sequence.batch, data)
        row.update({f"end_{name}": value for name, value in evaluated.items()})
        if test_eval is not None:
            evaluated = evaluate(state, task_state, test_eval, sequence.test_batch, data)
            row.update({f"end_test_{name}": value for name, value in evaluated.items()})
        row["param_norm"] = global_norm(state.params)
        if periodic_intervention:  # after the task's evaluation; none after the run's last update
            allowed = task < num_tasks - 1
            state = intervene_if_due(state, (task + 1) * steps, task_state, keys, data, allowed)
        own = state.extra.get(intervention_name) if intervention is not None else None
        if isinstance(own, dict) and "num_replaced" in own:  # continual backprop's count so far
            row["units_replaced"] = own["num_replaced"]
        losses = metrics["loss"].reshape(-1)  # in step order: (blocks, block_steps) flattened
        first_bad = divergence.first_nonfinite_index(losses)
        health = {
            # The update whose loss it is, counted from 1 (its rows' step, as the RL loops say).
            "nonfinite_loss_step": jnp.where(first_bad >= 0, task * steps + first_bad + 1, -1),
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
        keys = run_keys(carry.state.rng)
        return jax.lax.scan(
            lambda c, t: run_task(c, t, keys, hparams, tx, data),
            carry,
            jnp.asarray(task_indices, jnp.int32),
        )

    def draw_batches(rng: jax.Array, data: tasks.TaskData | None = None) -> jax.Array:
        """Draws every training batch of a run as `train` does (the task switches, then each
        step's batch), with no network: what the data alone costs. ``rng`` stands for the train
        state's key. Returns the sum of every input and target, so that nothing is left out."""
        data = sequence.data if data is None else data
        keys = run_keys(rng)

        def task_fn(task_state, task):
            task_state = jax.lax.cond(
                task > 0,
                lambda ts: sequence.next(ts, keys["tasks"], task, data),
                lambda ts: ts,
                task_state,
            )

            def step_fn(total, global_step):
                inputs, targets = training_batch(keys, global_step, task_state, data)
                total += jnp.sum(inputs, dtype=jnp.float32) + jnp.sum(targets, dtype=jnp.float32)
                return total, None

            first = task * steps
            total, _ = jax.lax.scan(
                step_fn, jnp.float32(0), first + jnp.arange(steps, dtype=jnp.int32)
            )
            return task_state, total

        task_state = sequence.init(keys["tasks"], data)
        _, totals = jax.lax.scan(task_fn, task_state, jnp.arange(num_tasks, dtype=jnp.int32))
        return jnp.sum(totals)

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
        draw_batches,
        {},
        tuple("/".join(key[:-1]) for key in sites) if defer_window > 1 else (),
    )


def make_train(config: ml_collections.ConfigDict, **kwargs) -> Callable:
    """``train(rng, hparams=None, data=None) -> (final Carry, outputs)`` for one variant config.

    ``jax.jit(jax.vmap(jax.vmap(train, (0, None)), (None, 0)))(keys, grid)`` runs a grid of
    hyper-parameters × seeds in one program; keyword arguments go to `make_trainer`.
    """
    return make_trainer(config, **kwargs).train
