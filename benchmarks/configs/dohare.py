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

Expected runtime on a 2-core CPU: about a minute (measured 40 s on a quiet 2-core VM, 83 s beside
the test suite, compiles included: permuted digits 2 variants × 2 grid points × 15,000 steps; bit
flipping 2 variants × 2 grid points × 1,000,000 steps).

As the authors' released code (shibhansh/loss-of-plasticity) does, which generated the paper's
data: the networks start Kaiming-uniform for ReLU (``network.initialization='kaiming_uniform'``:
hidden kernels U(±√(6/fan_in)), the output's U(±√(3/fan_in)), zero biases; continual backprop's
default redraw is the same), the target LTUs' thresholds follow their ``FixLTUNet``
(``task.ltu_threshold='reference_code'``: a unit with a -1 bias gets a threshold 1.5 higher than
the paper's rule gives), and L2 decays every parameter as torch's ``weight_decay`` does
(``optimizer.decay_biases_and_norms=True``). Continual backprop follows their code with
``--config.intervention.options.utility=adaptable_contribution`` (their configs' utility for these
tasks; the default is the paper's contribution utility), except on bit flipping, where their
driver ran a maturity threshold of 10 (it reads the key ``mt``, which their config spells
``maturity_threshold: 100``; ``--config.intervention.options.maturity_threshold=10``) and replaced
a unit with probability rate × eligible units at each step where this accumulates the rate
(the same count on average).

Expected result (measured, seed 0; the mean of the task rows' ``online_loss`` or
``online_accuracy`` in ``metrics.jsonl`` over the first and the last fifth of each run; the
console's closing lines print another figure, the last task's end-of-task loss):

* permuted digits shows NO loss of plasticity at this scale: online accuracy still rises over
  the 50 tasks (backprop 0.82 → 0.87, 0.82 → 0.86 with L2; LayerNorm 0.88 → 0.91 with and
  without L2). Dohare et al. see the decline over hundreds of MNIST tasks of 60,000 examples: use
  ``:paper``.
* bit flipping shows it: the online squared error of plain backprop grows from 0.53 to 0.78 over
  the 100 flip periods while its parameter norm grows 8.6 → 11.1. L2 at λ = 1e-3 (coupled with
  SGD 0.01) holds the norm down (6.8 → 4.8) yet the error grows as much (0.44 → 0.65); LayerNorm
  0.47 → 0.85 (its norm 11.3 → 22.1); both together 0.36 → 0.48. (With Flax's initialization and
  the paper's threshold rule, whose targets vary 1.4× more, backprop went 0.72 → 2.53.)
  Continual backprop (Dohare's remedy) keeps it:
  ``--config.intervention.name=cbp --config.intervention.every=1`` (measured over seeds 0–3,
  ``--config.num_seeds=4``, without L2: the error goes 0.44 → 0.53 with the paper's utility and
  0.42 → 0.53 with ``--config.intervention.options.utility=adaptable_contribution``, where
  backprop's goes 0.57 → 1.34 over the same seeds; the parameter norm 5.0 → 7.4–7.6 against
  4.9 → 10.8; 495 units replaced in each run, the task rows' ``units_replaced``). It scores the
  units at every step on that step's example, as the authors do: 30–45 s for the 4 seeds.

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
    config.optimizer.decay_biases_and_norms = True  # torch's weight_decay: every parameter
    config.network.initialization = "kaiming_uniform"  # the authors' networks'
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
            "ltu_threshold": "reference_code",  # the rule that generated the published data
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
