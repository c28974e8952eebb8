"""(d) large_offset: regressing on targets with a large offset damages the ability to fit later
tasks, with and without LayerNorm; the offset shows up as an exploding top singular value of the
penultimate features.

Paper's claim (Disentangling, Lyle et al. 2024; docs/algorithms.md, "Feature rank: srank and
effective rank"): fitting f(x) = c + ε(x) with a large constant c, even as one stationary task,
leaves a network that fits later zero-mean targets worse; c is encoded in one feature direction,
so the top singular value σ₁ of the penultimate features explodes.

Settings (cpu scale): `benchmarks.tasks` ``large_offset_regression`` on all 1,797 of
scikit-learn's 8×8 digits: OFFSET_TASKS tasks regressing on c + ε₀(x) (ε a fixed random network
of the input, standardized to mean 0 and std 1), then fresh zero-mean targets ε_k(x) every task,
LATER_TASKS of them, STEPS steps each; MLP 64→2×256→1 (ReLU; with LN: bias-free Dense →
LayerNorm → ReLU), Adam 1e-3, batch 64, squared error; offsets c ∈ OFFSETS × {no norm, LN}
(8 variants), 3 seeds; feature σ₁ every STEPS steps.

Metrics, per seed: log₁₀ of the end-of-task squared error averaged over the last 5 later tasks
(a fresh network fits them to ~0.05; predicting their mean gives 1), and log₁₀ σ₁ at the end of
the offset phase. Verdict (paired over seeds, 95% t-interval), PASS when for both norms the
error at c = 100 and at c = 1000 exceeds the error at c = 0, and σ₁ at c = 1000 exceeds σ₁ at
c = 0 (6 comparisons).

Measured (``python -m benchmarks.reproduce large_offset``, seeds 0–2, 4.3 minutes at load 7;
README): log₁₀ error on the last later tasks without a norm −1.14 ± 0.22 (c = 0), −0.97 (10),
−0.69 ± 0.12 (100), 0.73 ± 0.89 (1000); with LayerNorm −0.96 ± 0.26, −0.73, −0.12 ± 0.29,
−0.01 ± 0.02 (≈ predicting the mean); σ₁ at the end of the offset phase grows from 10^1.6 to
10^3.8 without a norm and from 10^2.0 to 10^2.7 with LayerNorm. All six comparisons PASS.

What we tried (one seed, 2×256, batch 64): the published config's 2 offset tasks × 1,000 steps at
c = 100 with 3×256 and batch 128 showed no damage (final error 0.016–0.019 without a norm); 5
offset tasks × 200 steps then 10 later tasks × 200 steps with c ∈ {0, 100, 1000, 10000} shows it
at once (kept): no norm, last later tasks 0.04–0.1 (c = 0), 0.1–0.37 (100), 1.0–2.0 (1000),
3·10³–4·10⁵ (10⁴, still unlearning the offset); LayerNorm 0.06 (c = 0) but ≈ 1 for every
c ≥ 100 (it stops fitting the later tasks at all: predicts their mean, ~46% dead units); σ₁ at
the end of the offset phase 40 → 1.1·10³ (100), 6.5·10³ (1000), 3.5·10⁴ (10⁴) without a norm,
114 → 280–530 with LayerNorm.
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_collections

from benchmarks.claims import base
from benchmarks.configs import common

NAME = "large_offset"
SUMMARY = "large regression offsets damage later trainability; feature σ₁ explodes"
OFFSETS = (0.0, 10.0, 100.0, 1000.0)
SMOKE_OFFSETS = (0.0, 1000.0)
NORMS = {"none": "none", "LN": "layernorm"}
OFFSET_TASKS, LATER_TASKS, STEPS = 5, 10, 200
WINDOW = 5


def variant(norm: str, offset: float) -> str:
    return f"{NORMS[norm]}/c{offset:g}"


def sweep_config(scale: str, seeds: int) -> ml_collections.ConfigDict:
    base.check_scale(scale)
    config = common.digits_memorization_base()
    config.num_seeds = seeds
    config.run.tensorboard = scale == "paper"
    config.task.name = "large_offset_regression"
    config.task.offset_tasks = OFFSET_TASKS
    config.task.num_tasks = OFFSET_TASKS + LATER_TASKS
    config.task.steps_per_task = STEPS
    config.task.batch_size = 64
    config.network.hidden_sizes = (256, 256)
    config.diagnostics.every = STEPS
    config.diagnostics.names = ("weight_norm", "feature_svd", "dead")
    config.run.runs_per_batch = 1
    config.variants = ml_collections.ConfigDict(
        {
            variant(norm, c): common.arm(name, task={"offset": c})
            for norm, name in NORMS.items()
            for c in OFFSETS
        }
    )
    config.variant_order = tuple(variant(n, c) for n in NORMS for c in OFFSETS)
    if scale == "paper":
        config.data.name = "cifar10"
        config.network.name = "cnn"
        config.network.dense_sizes = (256,)
        config.task.batch_size = 128
        config.task.offset_tasks = 1
        config.task.num_tasks = 1 + LATER_TASKS
        config.task.steps_per_task = 50_000
        config.diagnostics.every = 5_000
        config.run.runs_per_batch = 0
        config.run.tasks_per_chunk = 1
    if scale == "smoke":  # c = 0 and the largest offset: the plumbing of every comparison
        base.smoke_scale(config, seeds, num_tasks=3, steps_per_task=10, offset_tasks=1)
        config.variant_order = tuple(variant(n, c) for n in NORMS for c in SMOKE_OFFSETS)
    return config


def configs(scale: str, seeds: int) -> dict[str, ml_collections.ConfigDict]:
    return {"sweep": sweep_config(scale, seeds)}


def check(config: ml_collections.ConfigDict) -> None:
    base.check_config(config)


def _log10(values: dict[int, float]) -> dict[int, float]:
    return {s: math.log10(v) if v > 0 else math.nan for s, v in values.items()}


def offsets(config: ml_collections.ConfigDict) -> list[float]:
    """The offsets the config runs (all of OFFSETS but at smoke scale)."""
    names = base.variant_names(config)
    return [c for c in OFFSETS if variant("none", c) in names]


def evaluate(rows: list, config: ml_collections.ConfigDict) -> list[base.Row]:
    num_tasks = int(config.task.num_tasks)
    offset_tasks = int(config.task.offset_tasks)
    window = min(WINDOW, num_tasks - offset_tasks)
    last = range(num_tasks - window, num_tasks)
    offset_end = offset_tasks * int(config.task.steps_per_task)
    out = []
    for norm in NORMS:
        error, sigma = {}, {}
        for c in offsets(config):
            name = variant(norm, c)
            error[c] = _log10(base.over_tasks(base.task_rows(rows, name), "end_loss", last))
            sigma[c] = _log10(
                base.per_seed(
                    base.select(rows, "diagnostics", variant=name, step=offset_end),
                    "feature_top_singular_value",
                )
            )
        label = lambda c: f"c={c:g}"  # noqa: E731
        large = [c for c in offsets(config) if c >= 100.0]  # the offsets said to damage
        bigger = max(error)
        out.append(
            base.Row(
                norm,
                f"log10 squared error, last {window} later tasks",
                {label(c): base.interval_of(v) for c, v in error.items()},
                [base.paired(f"{norm}: {label(c)} − c=0", 1, error[c], error[0.0]) for c in large],
            )
        )
        out.append(
            base.Row(
                f"{norm} σ₁",
                "log10 feature σ₁ at the end of the offset phase",
                {label(c): base.interval_of(v) for c, v in sigma.items()},
                [base.paired(f"{norm}: σ₁ {label(bigger)} − c=0", 1, sigma[bigger], sigma[0.0])],
            )
        )
    return out


def figure(rows: list, config: ml_collections.ConfigDict, path: Path) -> str:
    """Per norm: end-of-task error per task and feature σ₁ over steps, one curve per offset."""
    plt = base.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), layout="constrained")
    num_tasks = int(config.task.num_tasks)
    for r, norm in enumerate(NORMS):
        for i, c in enumerate(offsets(config)):
            name = variant(norm, c)
            values, _ = base.per_task_matrix(base.task_rows(rows, name), "end_loss", num_tasks)
            base.draw_band(axes[r, 0], range(1, num_tasks + 1), values, f"c={c:g}", f"C{i}")
            steps, sigma = base.diagnostics_matrix(
                base.select(rows, "diagnostics", variant=name),
                lambda row: row.get("feature_top_singular_value"),
            )
            base.draw_band(axes[r, 1], steps, sigma, f"c={c:g}", f"C{i}")
        axes[r, 0].axvline(int(config.task.offset_tasks) + 0.5, color="k", lw=0.8, ls=":")
        axes[r, 0].set_ylabel(f"{norm}: end-of-task error")
        axes[r, 1].set_ylabel(f"{norm}: feature σ₁")
        for ax in axes[r]:
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[1, 0].set_xlabel("task (offset phase left of the dotted line)")
    axes[1, 1].set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("(d) large-offset regression, then fresh zero-mean tasks", fontsize=10)
    return base.save_figure(fig, path)


run = base.sweep_claim(NAME, sweep_config, evaluate, figure)
