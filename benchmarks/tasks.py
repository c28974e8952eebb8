"""Nonstationary task sequences, generated on device.

A :class:`TaskSequence` describes an endless sequence of supervised tasks as three
pure, jittable functions over a small pytree of arrays (the task state):

* ``init(rng, data=None) -> state`` — the state of task 0;
* ``next(state, rng, task_index, data=None) -> state`` — the state of task
  ``task_index`` from the state of the task before it;
* ``batch(state, indices, data=None) -> (inputs, targets)`` — the training examples
  with the given indices (the trainer samples the indices itself, in
  ``[0, num_examples)``).

``rng`` is the sequence's key: pass the same key to ``init`` and to every ``next``
call; each task derives its randomness from ``fold_in(rng, task_index)``, so a task
is reproducible from (key, index) alone and different seeds give different tasks.
Everything is free of Python control flow on traced values, so the three functions
run inside ``lax.scan`` and under ``vmap`` over seeds.

``data`` is a :class:`TaskData` of device arrays (the dataset), by default ``sequence.data``
captured by the functions as a constant. XLA embeds captured constants in the program: fine for
small data, slow for large arrays (per compiled function on a 2-core CPU: MNIST's 188 MB ~6 s,
CIFAR-10's 614 MB ~25 s; as an argument 0.1-0.4 s). Pass ``sequence.data`` as an argument of
the jitted function and hand it down: ``jax.jit(train)(seeds, sequence.data)`` with
``sequence.batch(state, idx, data)`` inside ``train``.

Tasks (``TaskConfig.name``):

* ``label_reset`` — random-label memorization: every label redrawn uniformly at
  random for every task (task 0 included).
* ``label_fraction_reset`` — task 0 has the true labels; each following task draws,
  for every example independently with probability ``reset_fraction``, a fresh
  uniform label (which equals the old one with probability 1/C). Cumulative.
* ``class_permutation`` — every task (task 0 included) relabels class ``c`` as
  ``perm[c]`` for a fresh permutation ``perm`` of the classes.
* ``input_permutation`` — every task (task 0 included, as in Dohare et al.'s
  permuted MNIST) shuffles the pixel positions with a fresh permutation; labels are
  the true ones. For inputs ``(H, W, C)`` the H*W positions are permuted and a
  pixel's channels move together; for flat inputs ``(D,)`` the D features are.
* ``composite`` — ``input_permutation`` and ``label_reset`` together.
* ``large_offset_regression`` — tasks ``0 .. offset_tasks-1`` regress on
  ``offset + eps_0(x)``; every later task ``k`` regresses on a fresh zero-mean
  ``eps_k(x)``. ``eps`` is a random function of the input (see
  :class:`RandomFunction`), standardised on the training set to mean 0 and
  standard deviation ``target_scale`` per output, so the mean target over the
  training set is exactly ``offset`` during the offset phase and 0 after it.
  All offset tasks share ``eps_0`` (one stationary task seen for ``offset_tasks``
  task lengths).
* ``bit_flipping`` — Dohare et al.'s slowly-changing regression, a stream: see
  :func:`make_bit_flipping`.

Tasks of your own, drawn from a dataset or streams like ``bit_flipping``, join these by name
with :func:`register_task`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import bit_flipping
from benchmarks.random_functions import (
    RandomFunction,
    draw_random_function,
    evaluate_random_function,
)
from benchmarks.datasets import Dataset

PRNGKey = jax.Array
TaskState = Any  # one of the *State NamedTuples below: a pytree of arrays

CLASSIFICATION = "classification"
REGRESSION = "regression"

DATASET_TASKS = (
    "label_reset",
    "label_fraction_reset",
    "class_permutation",
    "input_permutation",
    "composite",
    "large_offset_regression",
)
STREAM_TASKS = ("bit_flipping",)
KNOWN_TASKS = DATASET_TASKS + STREAM_TASKS
# Tasks added with `register_task`: name -> build; the names of those that are streams.
_REGISTERED: dict[str, Callable[..., "TaskSequence"]] = {}
_REGISTERED_STREAMS: set[str] = set()


def register_task(name: str, build: Callable[..., "TaskSequence"], stream: bool = False) -> None:
    """Adds a task every continual launch runs by name (``--config.task.name=<name>`` once the
    module that registers it is imported, e.g. by an ``--experiment`` file).

    ``build(config, dataset, data) -> TaskSequence``: ``config`` is the `TaskConfig`,
    ``dataset`` the checked `Dataset` the config's ``data`` section loads (or a Python caller
    gives) and ``data`` its arrays on device (`TaskData`); the returned functions follow the
    module docstring's protocol (pure, jittable, a task's randomness from (key, index)). A
    build may start from a built-in task, e.g. ``make_task_sequence(dataclasses.replace(config,
    name='label_reset'), dataset)``, and change what it needs. With ``stream=True`` the task
    is a stream that reads no dataset, as ``bit_flipping``: ``build(config) -> TaskSequence``,
    and the trainer takes each task's examples in order, every one once (indices 0 to
    ``steps_per_task * batch_size - 1``). A built-in name is a ValueError; registering a name
    again replaces its build."""
    if name in KNOWN_TASKS:
        raise ValueError(f"{name!r} is a built-in task; register yours by another name")
    _REGISTERED[name] = build
    (_REGISTERED_STREAMS.add if stream else _REGISTERED_STREAMS.discard)(name)


def is_stream(name: str) -> bool:
    """Whether task ``name`` is a stream (no dataset; examples in order), built in or registered."""
    return name in STREAM_TASKS or name in _REGISTERED_STREAMS


def known_tasks() -> tuple[str, ...]:
    """Every task name: the built-in ones, then the registered ones."""
    return KNOWN_TASKS + tuple(_REGISTERED)


# Sub-streams of a task's key: e.g. the composite task's labels and permutation are independent.
_LABELS_STREAM = 0
_INPUT_PERMUTATION_STREAM = 1
_RESET_MASK_STREAM = 2
_CLASS_PERMUTATION_STREAM = 3


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Options of every task; each task reads only its own.

    Attributes:
      name: one of ``KNOWN_TASKS`` or a registered task (`register_task`).
      reset_fraction: ``label_fraction_reset``: probability that an example's label is
        redrawn at a task switch.
      offset: ``large_offset_regression``: the constant ``c`` of the offset phase.
      offset_tasks: ``large_offset_regression``: number of tasks in the offset phase.
      target_scale: ``large_offset_regression``: standard deviation of ``eps(x)``.
      regression_outputs: ``large_offset_regression``: number of target dimensions.
      target_hidden_units: ``large_offset_regression``: width of the random network
        that defines ``eps``.
      flip_period: ``bit_flipping``: examples between two bit flips (one task).
      num_bits: ``bit_flipping``: input size m.
      num_flipping_bits: ``bit_flipping``: number of slowly flipping bits f (first f).
      ltu_hidden_units: ``bit_flipping``: LTUs in the target network.
      ltu_beta: ``bit_flipping``: beta of the LTU threshold rule.
      ltu_threshold: ``bit_flipping``: that rule as the paper states it ('paper') or as the
        authors' code computes it ('reference_code'; `bit_flipping.draw_ltu_network`).
    """

    name: str = "label_reset"
    reset_fraction: float = 0.1
    offset: float = 100.0
    offset_tasks: int = 1
    target_scale: float = 1.0
    regression_outputs: int = 1
    target_hidden_units: int = 64
    flip_period: int = 10_000
    num_bits: int = 20
    num_flipping_bits: int = 15
    ltu_hidden_units: int = 100
    ltu_beta: float = 0.7
    ltu_threshold: str = "paper"


def _config_from(config: Any, overrides: Mapping[str, Any]) -> TaskConfig:
    """Builds a TaskConfig from a TaskConfig, a mapping, a ConfigDict or keywords."""
    if config is None:
        values: dict[str, Any] = {}
    elif isinstance(config, TaskConfig):
        values = dataclasses.asdict(config)
    elif hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        values = dict(config.to_dict())
    elif isinstance(config, Mapping):
        values = dict(config)
    elif isinstance(config, str):
        values = {"name": config}
    else:
        raise ValueError(
            f"task config must be a TaskConfig, mapping, ConfigDict or task name, "
            f"got {type(config).__name__}"
        )
    values.update(overrides)
    valid = {f.name for f in dataclasses.fields(TaskConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(
            f"unknown task option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    return TaskConfig(**values)


def _validate_config(config: TaskConfig) -> None:
    """Rejects option values that cannot define a task, with a one-line message."""
    if config.name not in known_tasks():
        raise ValueError(f"unknown task {config.name!r}; known tasks: {', '.join(known_tasks())}")
    checks = [
        (
            0.0 <= config.reset_fraction <= 1.0,
            f"reset_fraction must be in [0, 1], got {config.reset_fraction}",
        ),
        (config.offset_tasks >= 0, f"offset_tasks must be >= 0, got {config.offset_tasks}"),
        (config.target_scale > 0, f"target_scale must be > 0, got {config.target_scale}"),
        (
            config.regression_outputs >= 1,
            f"regression_outputs must be >= 1, got {config.regression_outputs}",
        ),
        (
            config.target_hidden_units >= 1,
            f"target_hidden_units must be >= 1, got {config.target_hidden_units}",
        ),
        (config.flip_period >= 1, f"flip_period must be >= 1, got {config.flip_period}"),
        (
            1 <= config.num_flipping_bits <= config.num_bits,
            f"num_flipping_bits must be in [1, num_bits={config.num_bits}], got {config.num_flipping_bits}",
        ),
        (
            config.ltu_hidden_units >= 1,
            f"ltu_hidden_units must be >= 1, got {config.ltu_hidden_units}",
        ),
        (0.0 <= config.ltu_beta <= 1.0, f"ltu_beta must be in [0, 1], got {config.ltu_beta}"),
        (
            config.ltu_threshold in bit_flipping.LTU_THRESHOLD_RULES,
            f"ltu_threshold must be paper or reference_code, got {config.ltu_threshold!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"task {config.name!r}: {message}")


# ---------------------------------------------------------------------------
# Data, states and the sequence
# ---------------------------------------------------------------------------


class TaskData(NamedTuple):
    """A dataset's arrays on device. Fields are None for tasks without a dataset."""

    inputs: jax.Array | None  # (N, *input_shape) float32
    labels: jax.Array | None  # (N,) int32, the true labels
    test_inputs: jax.Array | None  # (M, *input_shape) float32
    test_labels: jax.Array | None  # (M,) int32


class ClassificationTaskState(NamedTuple):
    """State of the classification tasks.

    Attributes:
      task_index: () int32.
      labels: (N,) int32 labels of the training examples in this task.
      class_permutation: (C,) int32; true class c is shown as ``class_permutation[c]``
        (the identity except in ``class_permutation``).
      input_permutation: (P,) int32; position p of a task input holds position
        ``input_permutation[p]`` of the original input (the identity except in
        ``input_permutation`` and ``composite``).
    """

    task_index: jax.Array
    labels: jax.Array
    class_permutation: jax.Array
    input_permutation: jax.Array


class RegressionTaskState(NamedTuple):
    """State of ``large_offset_regression``: targets are ``offset + target_function(x)``."""

    task_index: jax.Array  # () int32
    offset: jax.Array  # () float32, ``c`` in the offset phase, 0 after
    target_function: RandomFunction


class BitFlippingState(NamedTuple):
    """State of ``bit_flipping`` during one flip period.

    Attributes:
      task_index: () int32, the number of flips so far.
      slow_bits: (f,) float32 in {0, 1}, the flipping bits of this period.
      example_key: key from which example i's random bits are drawn (``fold_in(., i)``).
      target_network: the fixed LTU network (the same in every period).
    """

    task_index: jax.Array
    slow_bits: jax.Array
    example_key: PRNGKey
    target_network: bit_flipping.LTUNetwork


class TaskSequence(NamedTuple):
    """A nonstationary sequence of tasks; see the module docstring for the protocol.

    Attributes:
      name: task name.
      kind: ``"classification"`` (integer targets ``(B,)``, use a softmax
        cross-entropy over ``num_outputs`` logits) or ``"regression"`` (float targets
        ``(B, num_outputs)``, use a squared error).
      num_outputs: number of classes, or of regression outputs.
      input_shape: shape of one input, without the batch axis.
      num_examples: training examples per task (for ``bit_flipping``: examples per
        flip period; any int32 index is valid there and gives a distinct example).
      num_test_examples: held-out examples with meaningful targets (0 when the task
        has none: random labels, ``bit_flipping``).
      init: ``(rng, data=None) -> state`` of task 0.
      next: ``(state, rng, task_index, data=None) -> state`` of task ``task_index``.
      batch: ``(state, indices, data=None) -> (inputs, targets)`` training examples.
      test_batch: like ``batch`` on the held-out examples, or None when
        ``num_test_examples == 0``.
      data: the dataset on device, the default ``data`` of the functions above.
    """

    name: str
    kind: str
    num_outputs: int
    input_shape: tuple[int, ...]
    num_examples: int
    num_test_examples: int
    init: Callable[..., TaskState]
    next: Callable[..., TaskState]
    batch: Callable[..., tuple[jax.Array, jax.Array]]
    test_batch: Callable[..., tuple[jax.Array, jax.Array]] | None
    data: TaskData


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------


def task_key(rng: PRNGKey, task_index: jax.Array | int) -> PRNGKey:
    """The key of task ``task_index`` of the sequence keyed by ``rng``."""
    return jax.random.fold_in(rng, jnp.asarray(task_index, jnp.uint32))


def num_positions(input_shape: tuple[int, ...]) -> int:
    """Number of permuted positions: features of a flat input, else all but the channel axis."""
    if len(input_shape) <= 1:
        return int(math.prod(input_shape))
    return int(math.prod(input_shape[:-1]))


def permute_inputs(inputs: jax.Array, permutation: jax.Array) -> jax.Array:
    """Applies a position permutation to a batch ``(B, *input_shape)``.

    Flat inputs ``(B, D)`` have their features permuted; inputs ``(B, ..., C)`` have
    their positions permuted with the channels of a position kept together.
    """
    batch_size, input_shape = inputs.shape[0], inputs.shape[1:]
    if len(input_shape) <= 1:
        return jnp.take(inputs, permutation, axis=1)
    grouped = inputs.reshape(batch_size, -1, input_shape[-1])
    return jnp.take(grouped, permutation, axis=1).reshape(inputs.shape)


def task_data_from(dataset: Dataset) -> TaskData:
    """Puts a dataset's arrays on the default device."""
    return TaskData(
        jnp.asarray(dataset.x_train, jnp.float32),
        jnp.asarray(dataset.y_train, jnp.int32),
        jnp.asarray(dataset.x_test, jnp.float32),
        jnp.asarray(dataset.y_test, jnp.int32),
    )


def _check_dataset(dataset: Dataset | None, task_name: str) -> Dataset:
    """Rejects a missing or malformed dataset with a one-line message."""
    if dataset is None:
        raise ValueError(f"task {task_name!r} needs a dataset (benchmarks.datasets.load_dataset)")
    x, y = np.asarray(dataset.x_train), np.asarray(dataset.y_train)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"task {task_name!r}: dataset {dataset.name!r} has inputs {x.shape} and "
            f"labels {y.shape}; need (N, ...) and (N,) with N > 0"
        )
    if np.asarray(dataset.x_test).shape[1:] != x.shape[1:]:
        raise ValueError(
            f"task {task_name!r}: test inputs {np.asarray(dataset.x_test).shape} do not "
            f"match training inputs {x.shape}"
        )
    x_test, y_test = np.asarray(dataset.x_test), np.asarray(dataset.y_test)
    if y_test.ndim != 1 or len(x_test) != len(y_test):
        raise ValueError(
            f"task {task_name!r}: dataset {dataset.name!r} has test inputs {x_test.shape} and "
            f"test labels {y_test.shape}; need (M, ...) and (M,)"
        )
    for split, labels in (("", y), ("test ", y_test)):
        if len(labels) and (
            dataset.num_classes < 2 or labels.min() < 0 or labels.max() >= dataset.num_classes
        ):
            raise ValueError(
                f"task {task_name!r}: {split}labels must lie in [0, num_classes="
                f"{dataset.num_classes}) with num_classes >= 2, got range [{labels.min()}, "
                f"{labels.max()}]"
            )
    return dataset


def _data_or_default(data: TaskData | None, default: TaskData) -> TaskData:
    """The data passed in, or the sequence's captured data."""
    return default if data is None else data


# ---------------------------------------------------------------------------
# Classification tasks
# ---------------------------------------------------------------------------


def _identity(n: int) -> jax.Array:
    """The identity permutation of n elements."""
    return jnp.arange(n, dtype=jnp.int32)


def _classification_task(config: TaskConfig, dataset: Dataset, data: TaskData) -> TaskSequence:
    """The five classification tasks, which differ only in how a task state is drawn."""
    default_data = data
    name, num_classes = config.name, dataset.num_classes
    num_train = int(dataset.y_train.shape[0])
    input_shape = tuple(int(d) for d in dataset.x_train.shape[1:])
    positions = num_positions(input_shape)
    permutes_inputs = name in ("input_permutation", "composite")

    def fresh_state(
        rng: PRNGKey,
        task_index: jax.Array,
        true_labels: jax.Array,
        previous: ClassificationTaskState | None,
    ) -> ClassificationTaskState:
        key = task_key(rng, task_index)
        labels = true_labels
        class_permutation = _identity(num_classes)
        input_permutation = _identity(positions)
        if name in ("label_reset", "composite"):
            labels = jax.random.randint(
                jax.random.fold_in(key, _LABELS_STREAM),
                (num_train,),
                0,
                num_classes,
                dtype=jnp.int32,
            )
        if name == "class_permutation":
            class_permutation = jax.random.permutation(
                jax.random.fold_in(key, _CLASS_PERMUTATION_STREAM), num_classes
            ).astype(jnp.int32)
            labels = class_permutation[true_labels]
        if permutes_inputs:
            input_permutation = jax.random.permutation(
                jax.random.fold_in(key, _INPUT_PERMUTATION_STREAM), positions
            ).astype(jnp.int32)
        if name == "label_fraction_reset" and previous is not None:
            reset = jax.random.bernoulli(
                jax.random.fold_in(key, _RESET_MASK_STREAM), config.reset_fraction, (num_train,)
            )
            fresh = jax.random.randint(
                jax.random.fold_in(key, _LABELS_STREAM),
                (num_train,),
                0,
                num_classes,
                dtype=jnp.int32,
            )
            labels = jnp.where(reset, fresh, previous.labels)
        return ClassificationTaskState(
            jnp.asarray(task_index, jnp.int32), labels, class_permutation, input_permutation
        )

    def init(rng: PRNGKey, data: TaskData | None = None) -> ClassificationTaskState:
        """State of task 0."""
        data = _data_or_default(data, default_data)
        return fresh_state(rng, jnp.int32(0), data.labels, None)

    def next_task(
        state: ClassificationTaskState,
        rng: PRNGKey,
        task_index: jax.Array | int,
        data: TaskData | None = None,
    ) -> ClassificationTaskState:
        """State of task ``task_index`` (>= 1) from the previous task's state."""
        data = _data_or_default(data, default_data)
        return fresh_state(rng, jnp.asarray(task_index, jnp.int32), data.labels, state)

    def examples(inputs: jax.Array, state: ClassificationTaskState) -> jax.Array:
        return permute_inputs(inputs, state.input_permutation) if permutes_inputs else inputs

    def batch(
        state: ClassificationTaskState, indices: jax.Array, data: TaskData | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Training inputs ``(B, *input_shape)`` and int32 labels ``(B,)``."""
        data = _data_or_default(data, default_data)
        indices = jnp.asarray(indices, jnp.int32)
        return examples(data.inputs[indices], state), state.labels[indices]

    def test_batch(
        state: ClassificationTaskState, indices: jax.Array, data: TaskData | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Held-out inputs and their labels under this task's class/input permutation."""
        data = _data_or_default(data, default_data)
        indices = jnp.asarray(indices, jnp.int32)
        return (
            examples(data.test_inputs[indices], state),
            state.class_permutation[data.test_labels[indices]],
        )

    has_test = name in ("class_permutation", "input_permutation")
    num_test = int(dataset.y_test.shape[0]) if has_test else 0
    return TaskSequence(
        name,
        CLASSIFICATION,
        num_classes,
        input_shape,
        num_train,
        num_test,
        init,
        next_task,
        batch,
        test_batch if num_test else None,
        data,
    )


# ---------------------------------------------------------------------------
# Large-offset regression
# ---------------------------------------------------------------------------


def _offset_regression_task(config: TaskConfig, dataset: Dataset, data: TaskData) -> TaskSequence:
    """``large_offset_regression``: ``offset + eps_0(x)`` then fresh zero-mean ``eps_k(x)``."""
    default_data = data
    num_train = int(dataset.y_train.shape[0])
    input_shape = tuple(int(d) for d in dataset.x_train.shape[1:])

    def flat(inputs: jax.Array) -> jax.Array:
        return inputs.reshape(inputs.shape[0], -1)

    def state_for(rng: PRNGKey, task_index: jax.Array, inputs: jax.Array) -> RegressionTaskState:
        in_offset_phase = task_index < config.offset_tasks
        function_index = jnp.where(in_offset_phase, 0, task_index)
        function = draw_random_function(
            task_key(rng, function_index),
            flat(inputs),
            config.target_hidden_units,
            config.regression_outputs,
            config.target_scale,
        )
        offset = jnp.where(in_offset_phase, jnp.float32(config.offset), jnp.float32(0.0))
        return RegressionTaskState(jnp.asarray(task_index, jnp.int32), offset, function)

    def init(rng: PRNGKey, data: TaskData | None = None) -> RegressionTaskState:
        """State of task 0."""
        return state_for(rng, jnp.int32(0), _data_or_default(data, default_data).inputs)

    def next_task(
        state: RegressionTaskState,
        rng: PRNGKey,
        task_index: jax.Array | int,
        data: TaskData | None = None,
    ) -> RegressionTaskState:
        """State of task ``task_index``; independent of the previous state."""
        del state
        return state_for(
            rng, jnp.asarray(task_index, jnp.int32), _data_or_default(data, default_data).inputs
        )

    def targets(state: RegressionTaskState, inputs: jax.Array) -> jax.Array:
        return state.offset + evaluate_random_function(state.target_function, flat(inputs))

    def batch(
        state: RegressionTaskState, indices: jax.Array, data: TaskData | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Training inputs and float32 targets ``(B, regression_outputs)``."""
        inputs = _data_or_default(data, default_data).inputs[jnp.asarray(indices, jnp.int32)]
        return inputs, targets(state, inputs)

    def test_batch(
        state: RegressionTaskState, indices: jax.Array, data: TaskData | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Held-out inputs and their targets under this task's function."""
        inputs = _data_or_default(data, default_data).test_inputs[jnp.asarray(indices, jnp.int32)]
        return inputs, targets(state, inputs)

    num_test = int(dataset.y_test.shape[0])
    return TaskSequence(
        config.name,
        REGRESSION,
        config.regression_outputs,
        input_shape,
        num_train,
        num_test,
        init,
        next_task,
        batch,
        test_batch if num_test else None,
        data,
    )


# ---------------------------------------------------------------------------
# Bit flipping (slowly-changing regression)
# ---------------------------------------------------------------------------


def make_bit_flipping(config: TaskConfig) -> TaskSequence:
    """Dohare et al.'s slowly-changing regression ("bit-flipping") as a task sequence.

    An input is ``num_bits`` bits in {0, 1}: the first ``num_flipping_bits`` are slow
    (constant for ``flip_period`` examples; at each period boundary one of them, chosen
    uniformly, flips), the others are drawn independently for every example. The
    target is the output of a fixed random LTU network
    (:func:`benchmarks.bit_flipping.draw_ltu_network`).
    A task is one flip period; ``batch(state, indices)`` returns examples ``indices``
    of the current period, whose random bits are a pure function of
    ``(state.example_key, index)``. Defaults follow Dohare et al. (20 bits, 15 slow,
    flips every 10,000 examples, 100 LTUs, beta 0.7); the constant-one input bit of
    their description is the target network's bias and is not part of the inputs.

    With at most `bit_flipping.TABLE_FAST_BITS` random bits, a period's inputs take few values, so
    ``batch`` evaluates the target network on all of them and looks each example's target up:
    the same values as evaluating it per example (sums of +-1 terms are exact in float32), at a
    fraction of the stream's cost (Dohare et al.'s 5 random bits: 32 inputs per period).
    """
    num_bits, num_slow = config.num_bits, config.num_flipping_bits
    num_fast = num_bits - num_slow

    def split_rng(rng: PRNGKey) -> tuple[PRNGKey, PRNGKey]:
        network_key, stream_key = jax.random.split(rng)
        return network_key, stream_key

    def init(rng: PRNGKey, data: TaskData | None = None) -> BitFlippingState:
        """Period 0: random slow bits and a fresh target network."""
        del data
        network_key, stream_key = split_rng(rng)
        key = task_key(stream_key, 0)
        network = bit_flipping.draw_ltu_network(
            network_key, num_bits, config.ltu_hidden_units, config.ltu_beta, config.ltu_threshold
        )
        slow_bits = bit_flipping.fair_bits(jax.random.fold_in(key, 0), num_slow)
        return BitFlippingState(jnp.int32(0), slow_bits, jax.random.fold_in(key, 1), network)

    def next_task(
        state: BitFlippingState,
        rng: PRNGKey,
        task_index: jax.Array | int,
        data: TaskData | None = None,
    ) -> BitFlippingState:
        """Period ``task_index``: one uniformly chosen slow bit of the previous period flips."""
        del data
        _, stream_key = split_rng(rng)
        key = task_key(stream_key, task_index)
        bit = jax.random.randint(jax.random.fold_in(key, 0), (), 0, num_slow)
        slow_bits = state.slow_bits.at[bit].set(1.0 - state.slow_bits[bit])
        return BitFlippingState(
            jnp.asarray(task_index, jnp.int32),
            slow_bits,
            jax.random.fold_in(key, 1),
            state.target_network,
        )

    def batch(
        state: BitFlippingState, indices: jax.Array, data: TaskData | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Inputs ``(B, num_bits)`` in {0, 1} and targets ``(B, 1)``."""
        del data
        indices = jnp.asarray(indices, jnp.int32)
        keys = jax.vmap(lambda i: jax.random.fold_in(state.example_key, i))(indices)
        if num_fast <= bit_flipping.TABLE_FAST_BITS:
            # A period has 2**num_fast distinct inputs: the target network runs on each once, and
            # every example looks its own up. In a loop over a period's steps the state is
            # invariant, so XLA computes the table once, not at every step.
            codes = jax.vmap(lambda key: bit_flipping.fast_bits_code(key, num_fast))(keys)
            inputs = bit_flipping.period_inputs(state.slow_bits, num_fast)
            return inputs[codes], bit_flipping.ltu_targets(state.target_network, inputs)[codes]
        fast = jax.vmap(lambda key: bit_flipping.fair_bits(key, num_fast))(keys)
        slow = jnp.broadcast_to(state.slow_bits, (fast.shape[0], num_slow))
        inputs = jnp.concatenate([slow, fast], axis=1)
        return inputs, bit_flipping.ltu_targets(state.target_network, inputs)

    no_data = TaskData(None, None, None, None)
    return TaskSequence(
        config.name,
        REGRESSION,
        1,
        (num_bits,),
        config.flip_period,
        0,
        init,
        next_task,
        batch,
        None,
        no_data,
    )


# ---------------------------------------------------------------------------
# Factory and helpers
# ---------------------------------------------------------------------------


def make_task_sequence(
    config: TaskConfig | Mapping[str, Any] | Any = None,
    dataset: Dataset | None = None,
    **overrides: Any,
) -> TaskSequence:
    """Builds the task sequence named by ``config.name``.

    Args:
      config: a :class:`TaskConfig`, a mapping or ``ml_collections.ConfigDict`` with
        its fields, a task name, or None (defaults); ``overrides`` replace fields.
        Unknown fields are rejected.
      dataset: the :class:`~benchmarks.datasets.Dataset` every task except
        ``bit_flipping`` draws its examples from (ignored by ``bit_flipping``).
    """
    config = _config_from(config, overrides)
    _validate_config(config)
    if config.name in STREAM_TASKS:
        return make_bit_flipping(config)
    if config.name in _REGISTERED:
        if config.name in _REGISTERED_STREAMS:
            sequence = _REGISTERED[config.name](config)
        else:
            dataset = _check_dataset(dataset, config.name)
            sequence = _REGISTERED[config.name](config, dataset, task_data_from(dataset))
        if not isinstance(sequence, TaskSequence):
            raise ValueError(f"task {config.name!r}: its build returned no TaskSequence")
        return sequence
    dataset = _check_dataset(dataset, config.name)
    data = task_data_from(dataset)
    if config.name == "large_offset_regression":
        return _offset_regression_task(config, dataset, data)
    return _classification_task(config, dataset, data)


def task_states(
    sequence: TaskSequence, rng: PRNGKey, num_tasks: int, data: TaskData | None = None
) -> TaskState:
    """States of tasks ``0 .. num_tasks-1`` stacked along a leading axis (one ``lax.scan``)."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    first = sequence.init(rng, data)

    def step(state: TaskState, task_index: jax.Array) -> tuple[TaskState, TaskState]:
        following = sequence.next(state, rng, task_index, data)
        return following, following

    _, rest = jax.lax.scan(step, first, jnp.arange(1, num_tasks, dtype=jnp.int32))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
