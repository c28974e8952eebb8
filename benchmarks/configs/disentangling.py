"""Disentangling's recipe, LayerNorm + L2, against its baselines on three nonstationarities.

Lyle et al. 2024 (Disentangling the causes of plasticity loss): LayerNorm before every
nonlinearity plus L2 regularization keeps plasticity where each alone does not. Arms
(variants × the L2 grid, which runs in one compiled program per variant):
no norm / LayerNorm × L2 ∈ {0, λ}, on each of three tasks:

* ``label_reset`` — all labels redrawn every task (memorization);
* ``class_permutation`` — the class names are permuted every task;
* ``large_offset_regression`` — two task lengths of regression on ``100 + ε(x)``, then fresh
  zero-mean targets ``ε_k(x)`` every task (MSE; lower is better).

Default scale: scikit-learn's digits, MLP 64→3×256→{10, 1}, Adam 1e-3, batch 128, 10 tasks ×
1,000 steps, one seed, λ = 1e-4 (PAPERS.md §5: at this short horizon 1e-5 is too weak to hold the
norm; the paper's 1e-5 is for runs ~100× longer).

Command:
  python -m scripts.train_continual --config=benchmarks/configs/disentangling.py \\
      --workdir=/tmp/disentangling

Expected runtime on a 2-core CPU: about 8–10 minutes (6 variants × 2 grid points × 10,000
steps, plus ≈ 10 s of compilation per variant). One task only:
``--config.variant_order="('label_reset/no_norm','label_reset/layernorm')"``.

Expected result: on label reset the no-norm baseline collapses towards chance within a few
tasks, L2 alone or LayerNorm alone degrade less, LayerNorm + L2 keeps memorizing every task
(end accuracy ≈ 1.0) with a parameter norm that stays flat. Class permutation is milder (the
true structure can be reused) and differences between arms are small. After the large offset,
the no-norm network fits the later zero-mean tasks worse (higher end loss) than the
LayerNorm + L2 network.

Paper scale (``:paper``): CIFAR-10 from ``--data_dir``, 20 tasks × 50,000 steps, a small CNN,
L2 ∈ {0, 1e-6, 1e-5}, 3 seeds (architecture and batch size unconfirmed). A GPU job.
"""

from __future__ import annotations

import ml_collections

from benchmarks.configs import common

TASKS = ("label_reset", "class_permutation", "large_offset_regression")
NORMS = (("no_norm", "none"), ("layernorm", "layernorm"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The sweep over tasks × norms, with an L2 grid; ``arg='paper'`` for the paper's scale."""
  scale, _ = common.parse_arg(arg)
  config = common.digits_memorization_base()
  config.task.num_tasks = 10
  config.task.steps_per_task = 1000
  config.task.offset = 100.0
  config.task.offset_tasks = 2
  config.grid.l2 = (0.0, 1e-4)
  variants, order = {}, []
  for task in TASKS:
    for arm_name, norm in NORMS:
      name = f"{task}/{arm_name}"
      variants[name] = common.arm(norm, task={"name": task})
      order.append(name)
  config.variants = ml_collections.ConfigDict(variants)
  config.variant_order = tuple(order)
  if scale == "paper":
    config.data.name = "cifar10"
    config.data.digits_test_fraction = 0.0
    config.task.num_tasks = 20
    config.task.steps_per_task = 50_000
    config.network.name = "cnn"
    config.network.dense_sizes = (256,)
    config.grid.l2 = (0.0, 1e-6, 1e-5)
    config.num_seeds = 3
    config.diagnostics.every = 1000
    config.run.tasks_per_chunk = 1
  return config
