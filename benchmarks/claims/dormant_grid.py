"""(f) dormant_grid: dormant units per optimizer × norm.

Paper's claim (NaP, Lyle et al. 2024, Fig. 2; docs/algorithms.md, "Unit statistics"): on MNIST
with labels re-randomized every 1,000 steps, networks without normalization accumulate dormant
units over training, for SGD, SGD + momentum and Adam alike, while RMSNorm or LayerNorm before
every nonlinearity keeps the dormant fraction low.

Settings (cpu scale): the first 1,024 of scikit-learn's 8×8 digits, labels redrawn every task,
MLP 64→3×256→10, batch 128, 15 tasks × 1,000 steps (the paper's 1,000 steps between redraws);
optimizers SGD 0.1, SGD + momentum (0.9) 0.01, Adam 1e-3 (the same step size for SGD and
momentum's effective rate η/(1−β)); norms none / RMSNorm / LayerNorm (bias-free Dense → norm →
ReLU); 9 variants × 3 seeds; ReDo dormant fraction (τ = 0.025, post-activation score s_i ≤ τ on a
256-example probe batch) averaged over the hidden layers, logged every 500 steps (mid-task and
at each task's end).

Metric: the dormant fraction averaged over the last fifth of the diagnostics, per seed. Verdict
(paired over seeds, 95% t-interval), PASS when for every optimizer both norms keep fewer dormant
units than no norm (none − RMSNorm > 0 and none − LN > 0: 6 comparisons).

Measured (``python -m benchmarks.reproduce dormant_grid``, seeds 0–2, 7.9 minutes at load 2;
README): PARTIAL 5/6. Late dormant fraction SGD none 0.40, RMSNorm 0.20, LN 0.07; momentum none
0.42, RMSNorm 0.50, LN 0.30; Adam none 0.60, RMSNorm 0.38, LN 0.13. Without a norm the dormant
fraction climbs (from the second task under Adam, the sixth or seventh under SGD and momentum) while
the network stops memorizing (end-of-task accuracy over the first three tasks → the last three: SGD
0.72 → 0.12, momentum 0.80 → 0.16, Adam 1.00 → 0.19); with either norm every optimizer still
memorizes at the end (0.95–1.00). LayerNorm keeps fewer dormant units than no norm under all three
optimizers, RMSNorm under SGD and Adam; under momentum RMSNorm's fraction swings within every task
(low mid-task, high at its end, the figure) and its late average is above no norm's (−0.08 ± 0.04,
OPPOSITE), though it keeps memorizing.

What we tried: the first version of this claim ran 10 tasks × 500 steps on a 128-wide network
(4.3 minutes). There the unnormalized SGD and momentum networks barely memorized (end-of-task
accuracy 0.2 → 0.55) and kept few dormant units, so the claim was PARTIAL 1/6 (only Adam + LN
passed). Twice as many 500-step tasks on the same network (30 tasks, 3 seeds, one device)
gave PARTIAL 2/6 with τ = 0 and 1/6 with τ = 0.025: every arm, LayerNorm included, lost plasticity
by the end. The paper's task length (1,000 steps) and the paper scale's width (256), 15 tasks, gave
the verdict above; the same settings on one XLA device (the seeds vmapped together, so their
floating-point sums differ from a run split over two devices) gave PARTIAL 4/6 at every τ (0,
0.025, 0.1), with momentum's RMSNorm comparison OPPOSITE and Adam's INCONCLUSIVE. The learning
rates are the usual ones of each optimizer, not tuned per norm.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from benchmarks.claims import base
from benchmarks.configs import common

NAME = "dormant_grid"
SUMMARY = "no norm accumulates dormant units under SGD, momentum and Adam; RMSNorm and LN do not"
OPTIMIZERS = {"SGD": ("sgd", 0.1), "momentum": ("momentum", 0.01), "Adam": ("adam", 1e-3)}
NORMS = {"none": "none", "RMSNorm": "rmsnorm", "LN": "layernorm"}
SMOKE_OPTIMIZERS, SMOKE_NORMS = ("Adam",), ("none", "LN")
TAU = "0.025"
LINESTYLES = ("-", "--", ":")  # per norm: curves that coincide (accuracy 1.0) stay visible
TASKS, STEPS, WIDTH = 15, 1000, 256  # labels redrawn every 1,000 steps, as in the paper


def variant(optimizer: str, norm: str) -> str:
    return f"{OPTIMIZERS[optimizer][0]}/{NORMS[norm]}"


def grid_config(scale: str, seeds: int) -> ml_collections.ConfigDict:
    base.check_scale(scale)
    config = common.digits_memorization_base()
    config.num_seeds = seeds
    config.run.tensorboard = scale == "paper"
    config.data.max_train_examples = 1024
    config.network.hidden_sizes = (WIDTH,) * 3
    config.task.num_tasks = TASKS
    config.task.steps_per_task = STEPS
    config.diagnostics.every = STEPS // 2
    config.diagnostics.names = ("dormant", "weight_norm")
    config.run.runs_per_batch = 1
    variants = {}
    for opt, (name, lr) in OPTIMIZERS.items():
        for norm, norm_name in NORMS.items():
            variants[variant(opt, norm)] = common.arm(
                norm_name, optimizer={"name": name, "learning_rate": lr}
            )
    config.variants = ml_collections.ConfigDict(variants)
    config.variant_order = tuple(variants)
    if scale == "paper":
        config.data.name = "mnist"
        config.data.max_train_examples = 0
        config.network.hidden_sizes = (256, 256, 256)
        config.task.num_tasks = 100
        config.task.steps_per_task = 1000
        config.diagnostics.every = 500
        config.run.runs_per_batch = 0
    if scale == "smoke":  # one optimizer × two norms: the plumbing of every row
        base.smoke_scale(config, seeds, num_tasks=2, steps_per_task=10)
        config.variant_order = tuple(variant(o, n) for o in SMOKE_OPTIMIZERS for n in SMOKE_NORMS)
    return config


def configs(scale: str, seeds: int) -> dict[str, ml_collections.ConfigDict]:
    return {"grid": grid_config(scale, seeds)}


def check(config: ml_collections.ConfigDict) -> None:
    base.check_config(config)


def dormant(row) -> float | None:
    return base.layer_mean(row, f"dormant_{TAU}")


def late_dormant(rows: list, name: str) -> dict[int, float]:
    diagnostics = base.select(rows, "diagnostics", variant=name)
    steps = sorted({int(r["step"]) for r in diagnostics})
    late = set(steps[-max(1, len(steps) // 5) :])
    return base.per_seed(diagnostics, dormant, keep=lambda r: int(r["step"]) in late)


def arms(config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
    """(optimizers, norms) the config runs (all of them but at smoke scale)."""
    names = base.variant_names(config)
    optimizers = [o for o in OPTIMIZERS if any(variant(o, n) in names for n in NORMS)]
    norms = [n for n in NORMS if any(variant(o, n) in names for o in OPTIMIZERS)]
    return optimizers, norms


def evaluate(rows: list, config: ml_collections.ConfigDict) -> list[base.Row]:
    out = []
    optimizers, norms = arms(config)
    for opt in optimizers:
        late = {norm: late_dormant(rows, variant(opt, norm)) for norm in norms}
        out.append(
            base.Row(
                opt,
                f"dormant fraction (τ = {TAU}), last fifth",
                {norm: base.interval_of(v) for norm, v in late.items()},
                [
                    base.paired(f"{opt}: none − {norm}", 1, late["none"], late[norm])
                    for norm in norms
                    if norm != "none"
                ],
            )
        )
    return out


def draw(rows: list, config: ml_collections.ConfigDict):
    """The figure, one column per optimizer, one curve per norm: the dormant fraction over steps
    (top) and the end-of-task accuracy at each task's last step (bottom), so that the units'
    dormancy reads beside the plasticity it goes with."""
    plt = base.pyplot()
    optimizers, norms = arms(config)
    steps_per_task, num_tasks = int(config.task.steps_per_task), int(config.task.num_tasks)
    task_ends = steps_per_task * np.arange(1, num_tasks + 1)
    fig, axes = plt.subplots(
        2,
        len(optimizers),
        figsize=(4 * len(optimizers), 5.6),
        sharex=True,
        sharey="row",
        layout="constrained",
        squeeze=False,
    )
    for column, opt in enumerate(optimizers):
        top, bottom = axes[0, column], axes[1, column]
        for i, norm in enumerate(norms):
            name = variant(opt, norm)
            steps, values = base.diagnostics_matrix(
                base.select(rows, "diagnostics", variant=name), dormant
            )
            style = dict(color=f"C{i}", linestyle=LINESTYLES[i % len(LINESTYLES)])
            base.draw_band(top, steps, values, norm, **style)
            accuracy, _ = base.per_task_matrix(
                base.task_rows(rows, name), "end_accuracy", num_tasks
            )
            base.draw_band(bottom, task_ends, accuracy, norm, **style)
        top.set_title(opt, fontsize=10)
        bottom.set_xlabel("step")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"dormant fraction (τ = {TAU})")
    axes[1, 0].set_ylabel("end-of-task accuracy")
    axes[0, 0].legend(fontsize=8)
    every = f"{steps_per_task:,}"
    fig.suptitle(
        f"(f) dormant units (top) and end-of-task accuracy (bottom) per optimizer × norm "
        f"(labels redrawn every {every} steps)",
        fontsize=10,
    )
    return fig


def figure(rows: list, config: ml_collections.ConfigDict, path: Path) -> str:
    """`draw`, saved as a PNG at ``path``."""
    return base.save_figure(draw(rows, config), path)


run = base.sweep_claim(NAME, grid_config, evaluate, figure, subdir="grid")
