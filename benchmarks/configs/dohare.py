"""Dohare et al.'s loss-of-plasticity tasks: permuted inputs and slowly-changing regression.

Dohare et al. 2024 (Nature), for cross-paper comparison. Two tasks, each with plain backprop
(SGD) against L2 regularization (a grid point of the same compiled program) and a LayerNorm
network:

* ``permuted_inputs`` — online permuted digits: the 64 pixels are shuffled by a fresh
  permutation every task, labels are the true ones; MLP 64→3×256→10, SGD 0.01, batch 16.
  Metric: online accuracy per task.
* ``bit_flipping`` — slowly-changing regression: 20 input bits, the first 15 flip one at a time
  every 10,000 examples, target from a fixed random network of 100 LTUs; learner 20→5→1
  (ReLU), SGD 0.01, batch 1 (one example at a time, each seen once). Metric: online squared
  error per flip period.

Command:
  python -m scripts.train_continual --experiment=benchmarks/configs/dohare.py --workdir=/tmp/dohare

Expected runtime on a 2-core CPU: under a minute (measured 40 s on a quiet 2-core VM, compiles
included: permuted digits 2 variants × 2 grid points × 15,000 steps; bit flipping 2 variants × 2
grid points × 1,000,000 steps).

Expected result (measured, seed 0; mean over the first and the last fifth of each run):

* permuted digits shows NO loss of plasticity at this scale: online accuracy still rises over
  the 50 tasks (backprop 0.75 → 0.86, 0.75 → 0.84 with L2; LayerNorm 0.90 → 0.92, 0.91 → 0.93
  with L2). Dohare et al. see the decline over hundreds of MNIST tasks of 60,000 examples: use
  ``:paper``.
* bit flipping shows it clearly: the online squared error of plain backprop grows from 0.72 to
  2.53 while its parameter norm grows 8.7 → 14.4. Both remedies slow the collapse without
  stopping it: L2 at λ = 1e-3 (coupled with SGD 0.01) keeps the norm flat (7.2 → 6.1) and the
  error grows 0.66 → 1.16; LayerNorm 0.74 → 1.14 (its norm 13.2 → 25.5); both together 0.68 →
  1.10. Continual backprop (Dohare's remedy) is the intervention to try here:
  ``--config.intervention.name=cbp --config.intervention.every=1``.

Departures from the authors' released code (shibhansh/loss-of-plasticity), each changing the
numbers one would set beside the paper's curves: the learners start as Flax's networks
(LeCun-normal kernels, variance 1/fan_in) where theirs are Kaiming-uniform for ReLU (variance
2/fan_in), which continual backprop's default redraw (``reinit='kaiming_uniform'``) does use; the
target LTUs' thresholds follow the paper's rule (S_i counts the -1s among the inputs' weights and
the bias), where their ``FixLTUNet`` adds the bias's value instead, so units with a -1 bias get
thresholds 1.5 higher (the targets differ on about half of the inputs, their variance 2.7 there
against 3.7 here); continual backprop ranks units by the paper's contribution utility, where
their configs for these tasks use the "adaptable contribution"; L2 decays kernels only
(``optimizer.decay_biases_and_norms=True`` decays biases too, as their torch ``weight_decay``).

``:smoke`` checks the plumbing in seconds (3 tasks of each kind, tiny sizes). Variant names after
the scale run only those, in that order (``:smoke,bit_flipping/backprop``).

Paper scale (``:paper``): MNIST from ``--data_dir`` with 60,000 examples per task, MLP
784→3×2000→10, SGD 0.003, batch 1, one pass per task (``task.sampling='shuffled'``: every image
once per task, in a new order, as Dohare et al. present them; the CPU scales draw with
replacement), 800 tasks; bit flipping for 3M examples.
Its wide kernels defer their updates over 16 steps (``run.defer_dense_updates``, the same SGD to
float rounding; docs/algorithms.md); ``--config.run.defer_dense_updates=0`` applies every update
at its step.
"""

from __future__ import annotations

import ml_collections

from benchmarks import continual_config
from benchmarks.configs import common

ARMS = (("backprop", "none"), ("layernorm", "layernorm"))
TASKS = ("permuted_inputs", "bit_flipping")
VARIANTS = tuple(f"{task}/{arm}" for task in TASKS for arm, _ in ARMS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Both tasks × {backprop, LayerNorm}, L2 ∈ {0, λ} as a grid; ``arg``: 'smoke' or 'paper'
    and, optionally, the variants to run (``permuted_inputs/backprop``, ...)."""
    scale, _, chosen = common.parse_arg(arg, variants=VARIANTS)
    config = continual_config.default_config()
    config.data.name = "digits"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.grid.l2 = (0.0, 1e-3)
    config.diagnostics.every = 100
    permuted = {
        "task": {
            "name": "input_permutation",
            "num_tasks": 50,
            "steps_per_task": 300,
            "batch_size": 16,
        },
        "network": {"hidden_sizes": (256, 256, 256)},
    }
    bits = {
        "task": {
            "name": "bit_flipping",
            "num_tasks": 100,
            "steps_per_task": 0,
            "batch_size": 1,
            "flip_period": 10_000,
        },
        "network": {"hidden_sizes": (5,)},
        "diagnostics": {"every": 1000},
    }
    variants = {}
    for task_name, task in zip(TASKS, (permuted, bits)):
        for arm_name, norm in ARMS:
            overrides = common.arm(norm)
            for section, values in task.items():
                overrides.setdefault(section, {}).update(values)
            variants[f"{task_name}/{arm_name}"] = overrides
    config.variants = ml_collections.ConfigDict(variants)
    config.variant_order = tuple(chosen) or VARIANTS
    if scale == "paper":
        config.data.name = "mnist"
        config.optimizer.learning_rate = 0.003
        config.run.tasks_per_chunk = 10
        # The 2000-wide kernels at batch 1: SGD (and L2) updates applied once per 16 steps from
        # their factors, the same SGD to float rounding at 2.1-2.6x the speed (plasticity.deferred).
        config.run.defer_dense_updates = 16
        # One pass over MNIST's 60,000 training images per task, each shown once, in a new order.
        for arm_name, _ in ARMS:
            config.variants[f"permuted_inputs/{arm_name}"].task.update(
                dict(num_tasks=800, steps_per_task=60_000, batch_size=1, sampling="shuffled")
            )
        for arm_name, _ in ARMS:
            config.variants[f"permuted_inputs/{arm_name}"].network.hidden_sizes = (2000, 2000, 2000)
            config.variants[f"bit_flipping/{arm_name}"].task.num_tasks = 300
            config.variants[f"permuted_inputs/{arm_name}"].diagnostics = {"every": 10_000}
    if scale == "smoke":
        for arm_name, _ in ARMS:
            permuted = config.variants[f"permuted_inputs/{arm_name}"]
            permuted.task.update(dict(num_tasks=3, steps_per_task=20))
            permuted.network.hidden_sizes = (32, 32)
            flipping = config.variants[f"bit_flipping/{arm_name}"]
            flipping.task.update(dict(num_tasks=3, flip_period=200))
            flipping.diagnostics = {"every": 100}
        config.diagnostics.every = 10
        config.run.tasks_per_chunk = 1
    return config
