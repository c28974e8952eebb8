"""The continual trainer's breakdown: `Trainer.draw_batches` draws the batches training draws,
and `benchmarks.continual_breakdown` reports every part of a tiny run."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks import continual, continual_breakdown
from tests.benchmarks.test_continual import tiny_config


def reference_checksum(trainer: continual.Trainer, rng: jax.Array, batch_size: int) -> float:
    """The sum of every input and target of a run, drawn one step at a time on the host by the
    rule the module docstring of `benchmarks.continual` states (float64)."""
    sequence, data = trainer.sequence, trainer.sequence.data
    tasks_key = jax.random.fold_in(rng, continual._TASKS_STREAM)
    steps_key = jax.random.fold_in(rng, continual._STEPS_STREAM)
    stream = sequence.name == "bit_flipping"
    task_state, total = sequence.init(tasks_key, data), 0.0
    for task in range(trainer.num_tasks):
        if task:
            task_state = sequence.next(task_state, tasks_key, task, data)
        for step in range(trainer.steps_per_task):
            global_step = task * trainer.steps_per_task + step
            if stream:
                indices = step * batch_size + np.arange(batch_size, dtype=np.int32)
            else:
                indices = continual.sample_indices(
                    steps_key, global_step, batch_size, sequence.num_examples
                )
            inputs, targets = sequence.batch(task_state, indices, data)
            total += np.sum(np.asarray(inputs, np.float64)) + np.sum(
                np.asarray(targets, np.float64)
            )
    return total


@pytest.mark.parametrize("task", ["label_reset", "bit_flipping"])
def test_draw_batches_sums_the_batches_of_every_step(task):
    config = tiny_config()
    if task == "bit_flipping":
        config.task.update(dict(name="bit_flipping", flip_period=24, steps_per_task=0))
    trainer = continual.make_trainer(config)
    rng = jax.random.key(3)
    drawn = float(jax.jit(trainer.draw_batches)(rng))
    # float32 sums (24 steps of 8 x 64 pixels and 8 labels, or 12 steps of 8 x 20 bits and 8
    # targets) against float64: about 24 roundings of 6e-8 each, well inside 1e-5.
    np.testing.assert_allclose(drawn, reference_checksum(trainer, rng, 8), rtol=1e-5)
    other = float(jax.jit(trainer.draw_batches)(jax.random.key(4)))
    assert other != drawn  # the run's key picks its batches


def test_the_report_names_every_part_of_a_tiny_bit_flipping_run():
    lines = continual_breakdown.report("bitflip", 2, 1_000, every=1_000, repeats=1)
    assert "2 seed(s) x 10,000 examples" in lines[1]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"compiled", "diagnostics", "host", "whole", "data"}
    assert float(rows["whole"].split("->")[1].split()[0].replace(",", "")) > 0
    with pytest.raises(ValueError, match="one seed"):
        continual_breakdown.report("permuted_mnist", 2, 0, every=0, repeats=1)
