"""NaP's grid of plasticity interventions: each intervention alone and with NaP added.

Lyle et al. 2024 (NaP) train a grid of the usual remedies for lost plasticity (ReDo, L2-init,
noisy updates, leaky ReLU, shrink-and-perturb, L2), each with and without NaP, on a sequence of
nonstationary tasks, and compare their average online accuracy: NaP is meant to combine with
each of them, not to replace them. Here every intervention is one arm on its own network and
one arm with NaP added (LayerNorm before every hidden nonlinearity and its kernels projected
back to their initial norms after every update), fourteen arms in all:

  =================  ===========================================================================
  arm                what it adds (the ``_nap`` arm adds the same to LayerNorm + NaP)
  =================  ===========================================================================
  ``none``           nothing: the network as it is
  ``l2``             coupled L2 on every kernel, λ = 1e-4 (`optimizer.l2`)
  ``l2_init``        L2 towards the initial parameters, λ = 1e-4 (`optimizer.l2_init`)
  ``redo``           ReDo, units with dormant score ≤ 0.1 recycled every 100 steps
  ``shrink_perturb`` θ ← 0.6·θ + 0.01·θ_fresh at every task boundary
  ``noisy_updates``  θ ← θ + 1e-4·ε, ε standard Gaussian, after every update
  ``leaky_relu``     leaky ReLU (slope 0.01) in place of ReLU
  =================  ===========================================================================

The paper states neither the interventions' strengths nor whether its arms without NaP had a
norm (docs/algorithms.md); the values above are this file's, and ``ln_base`` gives the arms
without NaP LayerNorm, so that each pair differs by the projection alone.

Under NaP some interventions change meaning, as they would in any implementation: a hidden
kernel shrunk by shrink-and-perturb, or pulled in by L2, is projected back to its norm at the
next update, so those arms keep only their direction changes and what they do to the parameters
NaP leaves free (the output layer, and the scale and offset of the last hidden layer's norm).

Default scale (CPU): scikit-learn's 8×8 digits (the first 1,024), labels redrawn at every task,
MLP 64→3×256→10, Adam 1e-3, batch 128, 20 tasks × 400 steps, one seed. ``cnn`` trains the
continual trainer's small CNN (3×3 convolutions of 32 and 64 channels, each followed by a 2×2
max-pool, and a dense layer of 128) in place of the MLP, as the paper's grid has both.

Command:
  python -m scripts.train_continual --experiment=benchmarks/configs/nap_interventions.py \\
      --workdir=/tmp/nap_interventions

Expected runtime on a 2-core CPU: 5 minutes (14 arms of 8,000 steps, measured 5 min 3 s on a quiet
AMD EPYC VM).

Expected result (measured, seed 0, that VM; end-of-task memorization accuracy on the 1,024
images, final task): without NaP 0.11 (none, L2, noisy updates), 0.29 (L2-init), 0.37
(shrink-and-perturb), 0.47 (leaky ReLU) and 0.97 (ReDo); every arm with NaP 0.996–1.000. With
``cnn`` about 10 minutes (extrapolated: its none, none_nap, redo and redo_nap arms alone took
2 min 45 s; final task 0.11, 0.995, 0.84 and 1.000).

Claim (g) of ``python -m benchmarks.reproduce`` runs this grid with 3 seeds and reads its average
online accuracy (`benchmarks/claims/interventions_nap.py` gives the measured figures).

Paper scale (``:paper``): CIFAR-10 from ``--data_dir``, 50 tasks × 20,000 steps, 3×512 MLP (or
the CNN with 64 and 128 channels), Adam 1e-4; a GPU job. ``:smoke`` checks the plumbing in
one to two minutes (fourteen programs to compile). Arm names after the scale run only those, in
that order (``:smoke,redo,redo_nap``). ``python -m benchmarks.claims.interventions_nap WORKDIR``
prints claim (g)'s table for a work dir of this file, whatever its options.
"""

from __future__ import annotations

import ml_collections

from benchmarks.configs import common

# Each intervention as config overrides of the network it is added to.
INTERVENTIONS = {
    "none": {},
    "l2": {"optimizer": {"l2": 1e-4}},
    "l2_init": {"optimizer": {"l2_init": 1e-4}},
    "redo": {"intervention": {"name": "redo", "every": 100, "options": {"tau": 0.1}}},
    "shrink_perturb": {
        "intervention": {
            "name": "shrink_perturb",
            "at_task_boundaries": True,
            "options": {"shrink": 0.6, "perturb": 0.01},
        }
    },
    "noisy_updates": {
        "intervention": {"name": "noisy_updates", "every": 1, "options": {"scale": 1e-4}}
    },
    "leaky_relu": {"network": {"activation": "leaky_relu"}},
}
VARIANTS = tuple(f"{name}{suffix}" for name in INTERVENTIONS for suffix in ("", "_nap"))
OPTIONS = ("cnn", "ln_base")


def arm(intervention: str, nap: bool, base_norm: str = "none") -> dict:
    """The overrides of one arm: ``intervention`` on the plain network (norm ``base_norm``) or,
    with ``nap``, on LayerNorm + NaP."""
    return common.arm("layernorm" if nap else base_norm, nap=nap, **INTERVENTIONS[intervention])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The grid: every intervention without and with NaP on label reset; ``arg``: 'smoke' or
    'paper' for other scales, 'cnn', 'ln_base' and, optionally, the arms to run."""
    scale, options, chosen = common.parse_arg(arg, options=OPTIONS, variants=VARIANTS)
    config = common.digits_memorization_base()
    base_norm = "layernorm" if "ln_base" in options else "none"
    config.variants = ml_collections.ConfigDict(
        {
            f"{name}{'_nap' if nap else ''}": arm(name, nap, base_norm)
            for name in INTERVENTIONS
            for nap in (False, True)
        }
    )
    config.variant_order = tuple(chosen) or VARIANTS
    config.data.max_train_examples = 1024
    config.task.num_tasks = 20
    config.task.steps_per_task = 400
    config.diagnostics.every = 400
    config.diagnostics.names = ("weight_norm", "dormant")
    config.run.runs_per_batch = 1  # one run at a time: fastest on CPUs
    if "cnn" in options:
        config.network.name = "cnn"
        config.network.channels = (32, 64)
        config.network.dense_sizes = (128,)
    if scale == "paper":
        config.data.name = "cifar10"
        config.data.max_train_examples = 0
        config.task.num_tasks = 50
        config.task.steps_per_task = 20_000
        config.network.hidden_sizes = (512, 512, 512)
        config.network.channels = (64, 128)
        config.network.dense_sizes = (256,)
        config.optimizer.learning_rate = 1e-4
        config.diagnostics.every = 2000
        config.run.runs_per_batch = 0
        config.run.tasks_per_chunk = 1
    if scale == "smoke":
        common.smoke_scale(config)
        for name in ("redo", "redo_nap"):
            config.variants[name].intervention.every = 5
    return config
