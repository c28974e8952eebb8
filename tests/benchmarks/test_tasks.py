"""Tests of the nonstationary task sequences.

Each task is compiled once (a module-level cache): one jitted, vmapped probe over the
keys (seed 0, seed 1, seed 0 again) returns the states of the first tasks and every
training (and held-out) example of each, which the property tests then inspect with
NumPy.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from benchmarks import bit_flipping, datasets, random_functions, tasks

NUM_TASKS = 4
NUM_STREAM_TASKS = 6
STREAM_BATCH = 256
RESET_FRACTION = 0.25
OFFSET = 100.0
OFFSET_TASKS = 2
TARGET_SCALE = 1.0

TASK_OPTIONS = {
    "label_reset": {},
    "label_fraction_reset": {"reset_fraction": RESET_FRACTION},
    "class_permutation": {},
    "input_permutation": {},
    "composite": {},
    "large_offset_regression": {
        "offset": OFFSET,
        "offset_tasks": OFFSET_TASKS,
        "target_scale": TARGET_SCALE,
    },
    "bit_flipping": {"flip_period": 1000},
}


@functools.lru_cache(maxsize=None)
def dataset() -> datasets.Dataset:
    return datasets.load_dataset("digits", digits_test_fraction=0.2)


@functools.lru_cache(maxsize=None)
def sequence(name: str) -> tasks.TaskSequence:
    return tasks.make_task_sequence(name, dataset(), **TASK_OPTIONS[name])


def keys() -> jax.Array:
    """Seed 0, seed 1, seed 0 again."""
    return jnp.stack([jax.random.key(0), jax.random.key(1), jax.random.key(0)])


def to_numpy(tree: Any) -> Any:
    """Pytree of NumPy arrays; typed keys become their raw key data."""

    def convert(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf)

    return jax.tree.map(convert, tree)


class Probe(NamedTuple):
    states: Any  # leading axes: (task,) or (seed, task)
    inputs: np.ndarray  # (..., task, example, *input_shape)
    targets: np.ndarray
    test_inputs: np.ndarray | None
    test_targets: np.ndarray | None


def make_probe(name: str):
    """rng -> states of the first tasks and all their training / held-out examples."""
    seq = sequence(name)
    stream = name == "bit_flipping"
    num_tasks = NUM_STREAM_TASKS if stream else NUM_TASKS
    indices = jnp.arange(STREAM_BATCH if stream else seq.num_examples)
    test_indices = jnp.arange(seq.num_test_examples)

    def probe(rng):
        states = tasks.task_states(seq, rng, num_tasks)
        inputs, targets = jax.vmap(lambda s: seq.batch(s, indices))(states)
        if seq.test_batch is None:
            return Probe(states, inputs, targets, None, None)
        test_inputs, test_targets = jax.vmap(lambda s: seq.test_batch(s, test_indices))(states)
        return Probe(states, inputs, targets, test_inputs, test_targets)

    return probe


@functools.lru_cache(maxsize=None)
def vmapped(name: str) -> Probe:
    """The probe of every key in ``keys()``, computed by one jit(vmap(...))."""
    return to_numpy(jax.jit(jax.vmap(make_probe(name)))(keys()))


def seed(probe: Probe, index: int) -> Probe:
    return jax.tree.map(lambda a: a[index], probe)


# ---------------------------------------------------------------------------
# Generic properties of every task
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", tasks.KNOWN_TASKS)
def test_same_seed_identical_different_seeds_differ(name):
    probe = vmapped(name)
    same = jax.tree.map(lambda a: np.array_equal(a[0], a[2]), probe)
    assert all(jax.tree.leaves(same))
    assert not (
        np.array_equal(probe.targets[0], probe.targets[1])
        and np.array_equal(probe.inputs[0], probe.inputs[1])
    )


@pytest.mark.parametrize("name", tasks.KNOWN_TASKS)
def test_vmap_over_two_keys_equals_two_calls(name):
    single = jax.jit(make_probe(name))
    for index in (0, 1):
        alone = to_numpy(single(keys()[index]))
        jax.tree.map(assert_same, alone, seed(vmapped(name), index))


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Integers and bits exactly; floats up to reduction order (vmap may reorder sums)."""
    if np.issubdtype(actual.dtype, np.floating):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)
    else:
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("name", tasks.KNOWN_TASKS)
def test_metadata_and_shapes(name):
    seq, probe = sequence(name), seed(vmapped(name), 0)
    num_tasks = probe.targets.shape[0]
    np.testing.assert_array_equal(probe.states.task_index, np.arange(num_tasks))
    assert probe.inputs.shape[2:] == seq.input_shape
    if seq.kind == tasks.CLASSIFICATION:
        assert probe.targets.dtype == np.int32 and probe.targets.ndim == 2
        assert probe.targets.min() >= 0 and probe.targets.max() < seq.num_outputs
        assert seq.input_shape == (8, 8, 1) and seq.num_outputs == 10
    else:
        assert probe.targets.dtype == np.float32 and probe.targets.shape[-1] == seq.num_outputs
    assert (seq.test_batch is None) == (seq.num_test_examples == 0)


# ---------------------------------------------------------------------------
# Label tasks
# ---------------------------------------------------------------------------


def binomial_bound(p: float, n: int, sigmas: float = 5.0) -> float:
    return sigmas * np.sqrt(p * (1 - p) / n)


def assert_uniform_counts(labels: np.ndarray, num_classes: int) -> None:
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    expected = labels.size / num_classes
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts


def test_label_reset_redraws_every_label():
    probe, ds = seed(vmapped("label_reset"), 0), dataset()
    n, c = len(ds.y_train), ds.num_classes
    for t in range(1, NUM_TASKS):
        changed = np.mean(probe.targets[t] != probe.targets[t - 1])
        assert abs(changed - (1 - 1 / c)) < binomial_bound(1 - 1 / c, n)
    assert abs(np.mean(probe.targets[0] == ds.y_train) - 1 / c) < binomial_bound(1 / c, n)
    assert_uniform_counts(probe.targets, c)
    np.testing.assert_array_equal(probe.inputs[0], ds.x_train)


def test_label_fraction_reset_is_cumulative_with_fraction_f():
    probe, ds = seed(vmapped("label_fraction_reset"), 0), dataset()
    n, c, f = len(ds.y_train), ds.num_classes, RESET_FRACTION
    np.testing.assert_array_equal(probe.targets[0], ds.y_train)
    changed_labels = []
    for t in range(1, NUM_TASKS):
        changed = probe.targets[t] != probe.targets[t - 1]
        # A reset example keeps its label with probability 1/C.
        assert abs(changed.mean() - f * (1 - 1 / c)) < binomial_bound(f * (1 - 1 / c), n)
        changed_labels.append(probe.targets[t][changed])
    # Cumulative: after 3 switches a label is still the true one with probability
    # (1-f)^3 + (1-(1-f)^3)/C, not 1 - f(1-1/C) as it would be if each task restarted.
    kept = (1 - f) ** 3
    p_true = kept + (1 - kept) / c
    assert abs(np.mean(probe.targets[3] == ds.y_train) - p_true) < binomial_bound(p_true, n)
    assert_uniform_counts(np.concatenate(changed_labels), c)
    np.testing.assert_array_equal(probe.inputs[2], ds.x_train)


def test_class_permutation_maps_each_class_consistently():
    probe, ds = seed(vmapped("class_permutation"), 0), dataset()
    mappings = []
    for t in range(NUM_TASKS):
        permutation = probe.states.class_permutation[t]
        np.testing.assert_array_equal(np.sort(permutation), np.arange(ds.num_classes))
        for true_class in range(ds.num_classes):
            shown = np.unique(probe.targets[t][ds.y_train == true_class])
            np.testing.assert_array_equal(shown, [permutation[true_class]])
        np.testing.assert_array_equal(probe.test_targets[t], permutation[ds.y_test])
        mappings.append(tuple(permutation))
    assert len(set(mappings)) == NUM_TASKS
    np.testing.assert_array_equal(probe.inputs[1], ds.x_train)
    np.testing.assert_array_equal(probe.test_inputs[1], ds.x_test)


def permuted_reference(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """NumPy reference: pixel position p of the result is position permutation[p] of the input."""
    n, h, w, c = images.shape
    return images.reshape(n, h * w, c)[:, permutation, :].reshape(n, h, w, c)


@pytest.mark.parametrize("name", ["input_permutation", "composite"])
def test_input_permutation_is_a_fresh_bijection_per_task(name):
    probe, ds = seed(vmapped(name), 0), dataset()
    permutations = probe.states.input_permutation
    for t in range(NUM_TASKS):
        np.testing.assert_array_equal(np.sort(permutations[t]), np.arange(64))
        np.testing.assert_array_equal(
            probe.inputs[t], permuted_reference(ds.x_train, permutations[t])
        )
        if probe.test_inputs is not None:
            np.testing.assert_array_equal(
                probe.test_inputs[t], permuted_reference(ds.x_test, permutations[t])
            )
    assert len({tuple(p) for p in permutations}) == NUM_TASKS
    assert not np.array_equal(permutations[0], np.arange(64))
    # Same key -> same permutation (seed 2 is seed 0 again); another key -> another one.
    np.testing.assert_array_equal(vmapped(name).states.input_permutation[2], permutations)
    assert not np.array_equal(vmapped(name).states.input_permutation[1][0], permutations[0])


def test_input_permutation_keeps_true_labels():
    probe, ds = seed(vmapped("input_permutation"), 0), dataset()
    for t in range(NUM_TASKS):
        np.testing.assert_array_equal(probe.targets[t], ds.y_train)
        np.testing.assert_array_equal(probe.test_targets[t], ds.y_test)


def test_composite_also_resets_labels():
    probe, ds = seed(vmapped("composite"), 0), dataset()
    n, c = len(ds.y_train), ds.num_classes
    for t in range(1, NUM_TASKS):
        changed = np.mean(probe.targets[t] != probe.targets[t - 1])
        assert abs(changed - (1 - 1 / c)) < binomial_bound(1 - 1 / c, n)
    assert_uniform_counts(probe.targets, c)
    assert sequence("composite").test_batch is None


def test_permute_inputs_moves_channels_together_and_permutes_flat_features():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    permutation = rng.permutation(6)
    np.testing.assert_array_equal(
        tasks.permute_inputs(jnp.asarray(images), jnp.asarray(permutation)),
        permuted_reference(images, permutation),
    )
    flat = rng.normal(size=(2, 5)).astype(np.float32)
    flat_permutation = rng.permutation(5)
    np.testing.assert_array_equal(
        tasks.permute_inputs(jnp.asarray(flat), jnp.asarray(flat_permutation)),
        flat[:, flat_permutation],
    )
    assert tasks.num_positions((8, 8, 3)) == 64 and tasks.num_positions((40,)) == 40


# ---------------------------------------------------------------------------
# Large-offset regression
# ---------------------------------------------------------------------------


def test_offset_phase_targets_are_offset_plus_small_fixed_function():
    probe = seed(vmapped("large_offset_regression"), 0)
    for t in range(OFFSET_TASKS):
        targets = probe.targets[t][:, 0]
        assert targets.mean() == pytest.approx(OFFSET, abs=1e-3)
        assert (targets - OFFSET).std() == pytest.approx(TARGET_SCALE, rel=1e-3)
        assert probe.states.offset[t] == OFFSET
    np.testing.assert_allclose(probe.targets[1], probe.targets[0], rtol=0, atol=1e-4)
    held_out = probe.test_targets[0][:, 0]
    assert abs(held_out.mean() - OFFSET) < 0.5 and held_out.std() < 2 * TARGET_SCALE


def test_fine_tuning_targets_are_fresh_and_zero_mean():
    probe = seed(vmapped("large_offset_regression"), 0)
    fine_tuning = probe.targets[OFFSET_TASKS:, :, 0]
    for targets in fine_tuning:
        assert targets.mean() == pytest.approx(0.0, abs=1e-4)
        assert targets.std() == pytest.approx(TARGET_SCALE, rel=1e-3)
    assert np.all(probe.states.offset[OFFSET_TASKS:] == 0.0)
    correlation = np.corrcoef(fine_tuning[0], fine_tuning[1])[0, 1]
    offset_residual = probe.targets[0, :, 0] - OFFSET
    assert abs(correlation) < 0.9
    assert abs(np.corrcoef(offset_residual, fine_tuning[0])[0, 1]) < 0.9


def test_offset_targets_match_a_numpy_reference():
    probe, ds = seed(vmapped("large_offset_regression"), 0), dataset()
    fn = jax.tree.map(lambda a: a[0], probe.states.target_function)
    z = (ds.x_train.reshape(len(ds.x_train), -1) - fn.input_mean) / fn.input_std
    raw = np.tanh(z @ fn.w1 + fn.b1) @ fn.w2
    expected = OFFSET + fn.scale * (raw - fn.output_mean) / fn.output_std
    np.testing.assert_allclose(probe.targets[0], expected, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------
# Bit flipping
# ---------------------------------------------------------------------------


def test_exactly_one_slow_bit_flips_per_period():
    probe = seed(vmapped("bit_flipping"), 0)
    slow = probe.states.slow_bits
    assert slow.shape == (NUM_STREAM_TASKS, 15) and set(np.unique(slow)) <= {0.0, 1.0}
    flips = np.abs(np.diff(slow, axis=0)).sum(axis=1)
    np.testing.assert_array_equal(flips, np.ones(NUM_STREAM_TASKS - 1))
    for t in range(NUM_STREAM_TASKS):
        np.testing.assert_array_equal(
            probe.inputs[t][:, :15], np.broadcast_to(slow[t], (STREAM_BATCH, 15))
        )


def test_fast_bits_vary_per_example_and_period():
    probe = seed(vmapped("bit_flipping"), 0)
    fast = probe.inputs[:, :, 15:]
    assert fast.shape == (NUM_STREAM_TASKS, STREAM_BATCH, 5) and set(np.unique(fast)) == {0.0, 1.0}
    assert np.all(
        np.abs(fast.mean(axis=(0, 1)) - 0.5) < binomial_bound(0.5, fast.shape[0] * fast.shape[1])
    )
    assert len({row.tobytes() for row in fast[0]}) > 16
    assert not np.array_equal(fast[0], fast[1])


def ltu_reference(network: Any, inputs: np.ndarray) -> np.ndarray:
    hidden = (inputs @ network.input_weights + network.input_bias > network.thresholds).astype(
        np.float32
    )
    return hidden @ network.output_weights + network.output_bias


def test_targets_are_a_fixed_ltu_function_of_the_inputs():
    probe = seed(vmapped("bit_flipping"), 0)
    network = jax.tree.map(lambda a: a[0], probe.states.target_network)
    for leaf in jax.tree.leaves(probe.states.target_network):
        assert np.all(leaf == leaf[0])  # the same network in every period
    for weights in (
        network.input_weights,
        network.input_bias,
        network.output_weights,
        network.output_bias,
    ):
        assert set(np.unique(weights)) <= {-1.0, 1.0}
    assert network.input_weights.shape == (20, 100)
    negatives = (network.input_weights < 0).sum(axis=0) + (network.input_bias < 0)
    np.testing.assert_allclose(network.thresholds, 21 * 0.7 - negatives, rtol=1e-6)
    inputs, targets = probe.inputs.reshape(-1, 20), probe.targets.reshape(-1, 1)
    np.testing.assert_array_equal(targets, ltu_reference(network, inputs))
    seen: dict[bytes, float] = {}
    for x, y in zip(inputs, targets[:, 0]):
        assert seen.setdefault(x.tobytes(), y) == y
    assert len(seen) < len(inputs)  # repeated inputs were checked
    assert np.std(vmapped("bit_flipping").targets) > 0
    other = jax.tree.map(lambda a: a[1, 0], vmapped("bit_flipping").states.target_network)
    assert not np.array_equal(other.input_weights, network.input_weights)


def period_examples(num_bits: int, task_index: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """Inputs, targets and target network of 2,000 examples of period ``task_index``."""
    sequence = tasks.make_task_sequence("bit_flipping", num_bits=num_bits, flip_period=1000)
    state = sequence.init(jax.random.key(5))
    for task in range(1, task_index + 1):
        state = sequence.next(state, jax.random.key(6), task)
    inputs, targets = sequence.batch(state, jnp.arange(2000))
    return np.asarray(inputs), np.asarray(targets), state.target_network


@pytest.mark.parametrize("num_bits", [15, 20, 23, 25])
def test_the_period_table_gives_the_per_example_stream(num_bits, monkeypatch):
    """0, 5 and 8 random bits go through the period's table, 10 through the network per example
    (`TABLE_FAST_BITS`); forcing the per-example path gives the same examples, bit for bit."""
    for task_index in (0, 2):
        inputs, targets, network = period_examples(num_bits, task_index)
        np.testing.assert_array_equal(targets, ltu_reference(network, inputs))
        with monkeypatch.context() as patch:
            patch.setattr(bit_flipping, "TABLE_FAST_BITS", -1)
            per_example = period_examples(num_bits, task_index)
        np.testing.assert_array_equal(inputs, per_example[0])
        np.testing.assert_array_equal(targets, per_example[1])
    distinct = len({row.tobytes() for row in inputs[:, 15:]})
    assert distinct == 2 ** (num_bits - 15) if num_bits <= 20 else distinct > 200


# ---------------------------------------------------------------------------
# Data passed explicitly, configuration, errors
# ---------------------------------------------------------------------------


def test_batch_with_data_passed_as_jit_argument_equals_captured_data():
    seq, probe = sequence("input_permutation"), seed(vmapped("input_permutation"), 0)
    state = jax.tree.map(lambda a: jnp.asarray(a[1]), probe.states)
    indices = jnp.array([5, 0, 17, 5])

    @jax.jit
    def fetch(data, state, indices):
        return seq.batch(state, indices, data)

    inputs, labels = fetch(seq.data, state, indices)
    np.testing.assert_array_equal(inputs, probe.inputs[1][np.asarray(indices)])
    np.testing.assert_array_equal(labels, probe.targets[1][np.asarray(indices)])


def test_config_forms_are_equivalent():
    expected = tasks.TaskConfig(name="label_fraction_reset", reset_fraction=0.5)
    forms = [
        tasks._config_from(expected, {}),
        tasks._config_from({"name": "label_fraction_reset", "reset_fraction": 0.5}, {}),
        tasks._config_from(
            ml_collections.ConfigDict({"name": "label_fraction_reset", "reset_fraction": 0.5}), {}
        ),
        tasks._config_from("label_fraction_reset", {"reset_fraction": 0.5}),
        tasks._config_from(None, {"name": "label_fraction_reset", "reset_fraction": 0.5}),
    ]
    assert all(form == expected for form in forms)
    seq = tasks.make_task_sequence(
        ml_collections.ConfigDict({"name": "bit_flipping", "flip_period": 7})
    )
    assert (seq.num_examples, seq.input_shape, seq.kind, seq.num_outputs) == (
        7,
        (20,),
        "regression",
        1,
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "label_shuffle"}, "known tasks: label_reset, label_fraction_reset"),
        ({"name": "label_reset", "reset_fraction": 2.0}, "reset_fraction must be in"),
        (
            {"name": "label_reset", "flip_periodd": 3},
            "unknown task option.*flip_periodd.*valid options",
        ),
        ({"name": "bit_flipping", "num_flipping_bits": 21}, "num_flipping_bits must be in"),
        ({"name": "large_offset_regression", "offset_tasks": -1}, "offset_tasks must be"),
    ],
)
def test_bad_configs_are_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        tasks.make_task_sequence(kwargs, dataset())
    assert "\n" not in str(info.value)


def test_dataset_tasks_need_a_valid_dataset():
    with pytest.raises(ValueError, match="needs a dataset"):
        tasks.make_task_sequence("label_reset")
    bad = dataset()._replace(num_classes=5)
    with pytest.raises(ValueError, match="labels must lie in"):
        tasks.make_task_sequence("label_reset", bad)
    with pytest.raises(ValueError, match="num_tasks"):
        tasks.task_states(sequence("label_reset"), jax.random.key(0), 0)


def test_a_test_split_with_labels_out_of_range_or_other_counts_is_refused():
    """The held-out split is checked as the training split is: out-of-range labels would be
    clamped by the gather and give test accuracies of wrong labels."""
    good = dataset()
    out_of_range = good._replace(y_test=good.y_test + 20)
    with pytest.raises(ValueError, match=r"test labels must lie in \[0, num_classes=10\)"):
        tasks.make_task_sequence("class_permutation", out_of_range)
    fewer_labels = good._replace(y_test=good.y_test[:-1])
    with pytest.raises(ValueError, match="test inputs .* and test labels"):
        tasks.make_task_sequence("class_permutation", fewer_labels)
    no_test = good._replace(x_test=good.x_test[:0], y_test=good.y_test[:0])
    assert tasks.make_task_sequence("class_permutation", no_test).num_test_examples == 0


def test_every_slow_bit_flips_with_the_same_probability():
    """The bit that flips at a period boundary is drawn uniformly from the f slow bits, the last
    one included: 60 flips of 3 bits give each 20 +- 5 sigma."""
    seq = tasks.make_task_sequence(
        "bit_flipping", num_bits=5, num_flipping_bits=3, ltu_hidden_units=4, flip_period=10
    )
    states = jax.jit(lambda key: tasks.task_states(seq, key, 61))(jax.random.key(0))
    slow = np.asarray(states.slow_bits)
    flipped = np.argmax(np.abs(np.diff(slow, axis=0)), axis=1)
    counts = np.bincount(flipped, minlength=3)
    assert np.all(np.abs(counts / 60 - 1 / 3) < binomial_bound(1 / 3, 60)), counts


def test_every_regression_output_is_standardised_on_its_own():
    """With several outputs, each target dimension has mean 0 and standard deviation
    ``target_scale`` over the training set (`RandomFunction`), not the outputs pooled."""
    seq = tasks.make_task_sequence(
        "large_offset_regression",
        dataset(),
        offset_tasks=0,
        regression_outputs=3,
        target_scale=2.0,
        target_hidden_units=8,
    )
    first_task = jax.jit(lambda key: seq.batch(seq.init(key), jnp.arange(seq.num_examples))[1])
    targets = np.asarray(first_task(jax.random.key(0)), np.float64)
    assert targets.shape == (seq.num_examples, 3)
    # Standardised in float32 over ~1,400 examples: exact to ~1e-6 relative.
    np.testing.assert_allclose(targets.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(targets.std(axis=0), 2.0, rtol=1e-4)


def test_the_reference_codes_ltu_thresholds_are_fix_ltu_nets():
    """``ltu_threshold='reference_code'``: the authors' ``FixLTUNet`` (which generated the
    published data) sets S = (m − Σ w + b) / 2 and τ = β(m + 1) − S. On integer pre-activations it
    agrees with the paper's rule (S = the -1s among the weights and the bias) for units with a +1
    bias and sets a threshold 1.5 higher for units with a -1 bias, so their targets differ."""
    key, m, beta = jax.random.key(3), 20, 0.7
    paper = bit_flipping.draw_ltu_network(key, m, 100, beta)
    code = bit_flipping.draw_ltu_network(key, m, 100, beta, "reference_code")
    np.testing.assert_array_equal(code.input_weights, paper.input_weights)  # one draw, two rules
    weights, bias = np.asarray(code.input_weights), np.asarray(code.input_bias)
    expected = beta * (m + 1) - (m - weights.sum(axis=0) + bias) / 2
    np.testing.assert_allclose(code.thresholds, expected, rtol=1e-6)
    shift = np.asarray(code.thresholds - paper.thresholds)
    np.testing.assert_allclose(shift, np.where(bias > 0, -0.5, 1.5), atol=1e-5)
    inputs = np.asarray(bit_flipping.period_inputs(jnp.zeros(15), 5))
    for network in (paper, code):  # 32 inputs of one period: integer pre-activations
        assert np.all(np.asarray(inputs @ network.input_weights + network.input_bias) % 1 == 0)
    features = [np.asarray(bit_flipping.ltu_features(n, inputs)) for n in (paper, code)]
    np.testing.assert_array_equal(features[0][:, bias > 0], features[1][:, bias > 0])
    assert not np.array_equal(features[0], features[1])
    with pytest.raises(ValueError, match="ltu_threshold must be one of paper, reference_code"):
        bit_flipping.draw_ltu_network(key, m, 100, beta, "text")


def test_the_bit_flipping_task_draws_its_target_under_the_configured_threshold_rule():
    """``task.ltu_threshold`` reaches the target network (the Dohare preset's 'reference_code'):
    from one seed, the same ±1 weights under both rules and thresholds 1.5 higher for a -1 bias,
    0.5 lower for a +1 bias; an unknown rule is refused when the task is built."""
    networks = {
        rule: tasks.make_task_sequence("bit_flipping", ltu_threshold=rule)
        .init(jax.random.key(4))
        .target_network
        for rule in bit_flipping.LTU_THRESHOLD_RULES
    }
    paper, code = networks["paper"], networks["reference_code"]
    np.testing.assert_array_equal(code.input_weights, paper.input_weights)
    shift = np.asarray(code.thresholds - paper.thresholds)
    np.testing.assert_allclose(
        shift, np.where(np.asarray(code.input_bias) > 0, -0.5, 1.5), atol=1e-5
    )
    with pytest.raises(
        ValueError, match="ltu_threshold must be paper or reference_code, got 'pap'"
    ):
        tasks.make_task_sequence("bit_flipping", ltu_threshold="pap")


def test_a_random_function_is_drawn_and_standardised_as_documented():
    """`draw_random_function` as its docstring states: the inputs centred per feature and scaled
    by one overall deviation, w1 ~ N(0, 1/D) and b1 ~ N(0, 1) (which set how far tanh
    saturates), and every output of mean 0 and deviation `scale` on the inputs it was drawn on.
    Sample deviations of 300 or more draws: within 20% of their value (w1 scaled by 1/√H would
    miss it by 4×)."""
    rng = np.random.default_rng(0)
    features, hidden = 20, 300
    scales, offsets = np.linspace(0.5, 3.0, features), np.arange(features)
    inputs = rng.normal(size=(400, features)) * scales + offsets
    inputs = jnp.asarray(inputs, jnp.float32)
    fn = random_functions.draw_random_function(jax.random.key(1), inputs, hidden, 2, 3.0)
    centred = np.asarray(inputs, np.float64) - np.asarray(inputs, np.float64).mean(axis=0)
    np.testing.assert_allclose(fn.input_mean, np.asarray(inputs).mean(axis=0), rtol=1e-5)
    assert fn.input_std.shape == ()
    np.testing.assert_allclose(fn.input_std, centred.std(), rtol=1e-5)
    np.testing.assert_allclose(np.std(fn.w1) * np.sqrt(features), 1.0, rtol=0.2)
    np.testing.assert_allclose(np.std(fn.b1), 1.0, rtol=0.2)
    outputs = np.asarray(random_functions.evaluate_random_function(fn, inputs), np.float64)
    np.testing.assert_allclose(outputs.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(outputs.std(axis=0), 3.0, rtol=1e-4)
