"""(b) nonstationarity_types: LayerNorm + L2 keeps plasticity across nonstationarity types where
the unnormalized, unregularized baseline loses it.

Paper's claim (Disentangling, Lyle et al. 2024; docs/algorithms.md, "Digits-scale memorization
check"): plasticity loss has several independent causes (unit death, norm growth, large targets,
...); LayerNorm before every nonlinearity plus L2 regularization keeps networks trainable across
label resets, class permutations, input permutations and large-offset regression, where the
baseline degrades. Arms: none / L2 / LN / LN + L2.

Settings (cpu scale; each type has its own variant pair, the L2 coefficient λ is a grid point of
the same compiled program; Adam 1e-3 and coupled L2 λ = 1e-4 everywhere, 3 seeds; TYPES): label
reset on the first 512 of scikit-learn's 8×8 digits, MLP 64→3×256→10, batch 128, 25 tasks × 200
steps; class permutation, input permutation and large-offset regression (c = 100 for the first
20 tasks, then fresh zero-mean targets) on all 1,797 digits with a narrow MLP 64→3×32→{10, 1},
batch 64, 300 tasks × 200 steps (narrow nets lose units, and plasticity, within a CPU budget).
Paper scale (for a GPU): CIFAR-10, the small CNN, 20 tasks × 50,000 steps, batch 128, the first 2
tasks at the offset, λ swept over {0, 1e-6, 1e-5}; the L2 arms read the largest (`arm_l2`: the
paper's recipe, 1e-5).

Metrics per type, per seed: classification, end-of-task training accuracy over the last W tasks;
regression, log₁₀ end-of-task squared error over the last W tasks (lower is better). Verdict per
type (paired over seeds, 95% t-interval), PASS when both hold: the baseline loses plasticity
(its first-W minus last-W accuracy > 0; for the regression, its last-W error exceeds its error
on the first tasks after the offset phase) and LN + L2 ends better than the baseline. The claim
PASSes when every type does.

Measured (``python -m benchmarks.reproduce nonstationarity_types``, seeds 0–2, 9.5 minutes at
load 5–7; README): label reset PASS (last-5 accuracy none 0.20 ± 0.34, L2 0.12, LN
0.99, LN + L2 0.99 ± 0.01); class permutation PASS (none collapses to chance, 0.10, with 97–100%
dead units in the narrow net; L2 alone 0.12; LN 0.82; LN + L2 0.94 ± 0.06); input permutation
PARTIAL (the baseline loses 0.11 ± 0.08 of accuracy, but LN + L2 ends no better: 0.79 vs 0.80,
and LayerNorm alone ends worst, 0.72); large-offset regression OPPOSITE (after the offset phase
the baseline keeps improving, its later error falls; LN and LN + L2 fit the later tasks worse
than no norm: log₁₀ error −0.17 vs −0.43). Verdict PARTIAL 5/8 (of the
eight comparisons; rows: 2 PASS, 1 PARTIAL, 1 OPPOSITE).

What we tried (one seed each, arms none / L2 / LN / LN+L2, Adam 1e-3, λ = 1e-4):
* digits, 512 examples, 2×128, batch 64, 30 tasks × 200 steps: label reset never memorizes
  (≈ 0.35 all along for no norm: capacity, not plasticity); class and input permutation end every
  task at 0.99–1.00 in every arm (online accuracy drifts down by ~0.05 in every arm alike);
  large offset (c = 100, 5 offset tasks): LayerNorm fits the later tasks worse (≈ 0.4–0.9 vs
  0.2–0.5).
* MNIST-1D (4,000 examples, generated offline), 2×256, batch 64, 25 tasks × 300 steps: label
  reset stays at chance for every arm (4,000 random labels do not fit); class and input
  permutation are under-fitted (0.3–0.47) and every arm keeps improving over the tasks; a
  plasticity probe (fit fresh random targets for 200 steps) degrades in every arm, LN + L2
  included. MNIST-1D was therefore not adopted (and not added as a dependency).
* digits, 512 examples, 2×256, batch 64, 30 × 200: label reset memorizes only ~50% (no norm)
  and does not decline.
* digits, 3×32, batch 64, 40 tasks × 200 steps: no type shows a loss yet (class permutation
  0.93 → 0.93, input permutation 0.90 → 0.89); the narrow nets run at several thousand steps/s.
* the same over 300 tasks: class permutation collapses without a norm (0.93 → 0.10) and not with
  LN + L2 (0.97 → 0.92); input permutation declines in every arm, most with LayerNorm; large offset
  (20 offset tasks) fits later tasks best without a norm.
* 150 tasks (the first 3-seed run, to save time): class permutation INCONCLUSIVE (one of three
  baseline seeds had collapsed by task 150: 0.45 ± 0.87), input permutation PARTIAL, large offset
  OPPOSITE; the probe's 300 tasks were restored for the kept run (9.5 instead of 5.2 minutes).
* the kept settings: TYPES below.
* large offset with the paper's output for large targets, two-hot targets over 121 bins on
  [−10, 110] (`plasticity.two_hot`), beside the linear output (a scratch experiment over these
  settings' large-offset arms, 3 seeds, 1 min 43 s): the offset phase ends at error 0.012–0.035
  against 0.14–0.20, and the first five later tasks at log₁₀ error −0.53 to −0.60 against −0.01
  to −0.18, but the errors then creep up: over the last five tasks LN + L2 with it −0.20 (linear
  −0.20), no norm with it −0.42 (linear −0.39), no norm + L2 with it −0.50 (linear −0.64). It
  does not turn the verdict, so the claim keeps the linear output. (The scratch run's linear
  arms end near, not at, the claim's run at the same settings, −0.17 / −0.43 / −0.59 in the
  README. The cause was not traced; another device layout alone, rounding the seeds' sums in
  another order over 60,000 steps, can account for it: see the README on comparing verdicts,
  not digits.)
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_collections

from benchmarks.claims import base
from benchmarks.configs import common

NAME = "nonstationarity_types"
SUMMARY = "LN + L2 keeps plasticity across four nonstationarity types; the baseline loses it"
L2 = 1e-4
PAPER_L2 = (1e-6, 1e-5)  # the paper's sweep; its recipe, the largest, is the arms' λ
# Arm → (norm variant, whether it is the grid's L2 point; `arm_l2` gives its λ).
ARMS = {
    "none": ("none", False),
    "L2": ("none", True),
    "LN": ("layernorm", False),
    "LN+L2": ("layernorm", True),
}
NORM_VARIANTS = {"none": "none", "layernorm": "layernorm"}
WINDOW = 5
# Per type: task, data and network overrides (the kept settings; see the docstring).
NARROW = {"hidden_sizes": (32, 32, 32)}
TYPES = {
    "label_reset": {
        "task": {"name": "label_reset", "num_tasks": 25, "steps_per_task": 200, "batch_size": 128},
        "data": {"max_train_examples": 512},
        "network": {"hidden_sizes": (256, 256, 256)},
    },
    "class_permutation": {
        "task": {"name": "class_permutation", "num_tasks": 300, "steps_per_task": 200},
        "network": NARROW,
    },
    "input_permutation": {
        "task": {"name": "input_permutation", "num_tasks": 300, "steps_per_task": 200},
        "network": NARROW,
    },
    "large_offset_regression": {
        "task": {
            "name": "large_offset_regression",
            "num_tasks": 300,
            "steps_per_task": 200,
            "offset": 100.0,
            "offset_tasks": 20,
        },
        "network": NARROW,
    },
}
SMOKE_TYPES = ("label_reset", "large_offset_regression")


def variant(kind: str, norm: str) -> str:
    return f"{kind}/{norm}"


def sweep_config(scale: str, seeds: int) -> ml_collections.ConfigDict:
    base.check_scale(scale)
    config = common.digits_memorization_base()
    config.num_seeds = seeds
    config.run.tensorboard = scale == "paper"
    config.grid.l2 = (0.0, L2)
    config.diagnostics.names = ("weight_norm", "dead")
    config.diagnostics.every = 1000  # a multiple of every type's steps per task
    config.run.runs_per_batch = 1
    # Two checkpoints per 300-task run (one for label reset): the narrow runs are cheap, ten
    # checkpoints each would cost more than their training.
    config.run.tasks_per_chunk = 150
    variants = {}
    for kind, overrides in TYPES.items():
        for norm in NORM_VARIANTS:
            arm = common.arm(norm, task={"batch_size": 64})
            for section, values in overrides.items():
                arm.setdefault(section, {}).update(values)
            if scale == "smoke":
                arm["task"].update(num_tasks=4, steps_per_task=10, batch_size=32)
                if "offset_tasks" in arm["task"]:
                    arm["task"]["offset_tasks"] = 1
                arm["network"] = {"norm": norm, "hidden_sizes": (16, 16)}
                arm["data"] = {"max_train_examples": 128}
            if scale == "paper":
                arm["task"].update(num_tasks=20, steps_per_task=50_000, batch_size=128)
                if "offset_tasks" in arm["task"]:  # as the config file's: 2 of the 20 tasks
                    arm["task"]["offset_tasks"] = 2
                arm["network"] = {"norm": norm}
                arm.pop("data", None)
            variants[variant(kind, norm)] = arm
    config.variants = ml_collections.ConfigDict(variants)
    config.variant_order = tuple(variants)
    if scale == "paper":
        config.data.name = "cifar10"
        config.network.name = "cnn"
        config.network.dense_sizes = (256,)
        config.grid.l2 = (0.0, *PAPER_L2)
        config.diagnostics.every = 10_000
        config.run.runs_per_batch = 0
        config.run.tasks_per_chunk = 1
    if scale == "smoke":  # two types (classification and regression): every code path
        config.variant_order = tuple(variant(k, n) for k in SMOKE_TYPES for n in NORM_VARIANTS)
        config.diagnostics.every = 10
        config.diagnostics.probe_size = 64
        config.eval.max_examples = 256
        config.run.tasks_per_chunk = 4
    return config


def kinds(config: ml_collections.ConfigDict) -> list[str]:
    """The nonstationarity types the config runs (all but at smoke scale)."""
    names = base.variant_names(config)
    return [k for k in TYPES if variant(k, "none") in names]


def configs(scale: str, seeds: int) -> dict[str, ml_collections.ConfigDict]:
    return {"sweep": sweep_config(scale, seeds)}


def check(config: ml_collections.ConfigDict) -> None:
    base.check_config(config)


def arm_l2(config: ml_collections.ConfigDict, arm: str) -> float:
    """The L2 coefficient of `arm`'s rows: 0, or the grid's largest λ (1e-4 at cpu scale, the
    paper's recipe 1e-5 at paper scale, where 1e-6 is swept beside it)."""
    return float(max(config.grid.l2)) if ARMS[arm][1] else 0.0


def _score(rows: list, config, kind: str, arm: str, tasks) -> dict[int, float]:
    arm_rows = base.task_rows(rows, variant(kind, ARMS[arm][0]), l2=arm_l2(config, arm))
    if TYPES[kind]["task"]["name"] == "large_offset_regression":
        values = base.over_tasks(arm_rows, "end_loss", tasks)
        return {s: math.log10(v) if v > 0 else math.nan for s, v in values.items()}
    return base.over_tasks(arm_rows, "end_accuracy", tasks)


def evaluate(rows: list, config: ml_collections.ConfigDict) -> list[base.Row]:
    out = []
    variants = dict(base.resolved_variants(config))
    for kind in kinds(config):
        task = variants[variant(kind, "none")].task
        num_tasks = int(task.num_tasks)
        regression = task.name == "large_offset_regression"
        start = int(task.offset_tasks) if regression else 0
        window = min(WINDOW, max(1, (num_tasks - start) // 2))
        first, last = range(start, start + window), range(num_tasks - window, num_tasks)
        late = {arm: _score(rows, config, kind, arm, last) for arm in ARMS}
        early = _score(rows, config, kind, "none", first)
        sign = -1 if regression else 1  # accuracy: higher is better; log error: lower
        if regression:
            loses = base.paired(
                f"none: last {window} − first {window} later tasks (log error)",
                1,
                late["none"],
                early,
            )
        else:
            loses = base.paired(
                f"none: first {window} − last {window} tasks", 1, early, late["none"]
            )
        metric = (
            f"log10 error, last {window} tasks" if regression else f"accuracy, last {window} tasks"
        )
        out.append(
            base.Row(
                kind,
                metric,
                {arm: base.interval_of(v) for arm, v in late.items()},
                [loses, base.paired(f"{kind}: LN+L2 − none", sign, late["LN+L2"], late["none"])],
            )
        )
    return out


def figure(rows: list, config: ml_collections.ConfigDict, path: Path) -> str:
    """One panel per type: the end-of-task metric per task for the four arms."""
    plt = base.pyplot()
    chosen = kinds(config)
    fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 3.2), layout="constrained")
    variants = dict(base.resolved_variants(config))
    for ax, kind in zip(axes, chosen):
        task = variants[variant(kind, "none")].task
        regression = task.name == "large_offset_regression"
        key = "end_loss" if regression else "end_accuracy"
        for i, (arm, (norm, _)) in enumerate(ARMS.items()):
            arm_rows = base.task_rows(rows, variant(kind, norm), l2=arm_l2(config, arm))
            values, _ = base.per_task_matrix(arm_rows, key, int(task.num_tasks))
            base.draw_band(ax, range(1, int(task.num_tasks) + 1), values, arm, f"C{i}")
        if regression:
            ax.set_yscale("log")
        ax.set_title(kind.replace("_", " "), fontsize=10)
        ax.set_xlabel("task")
        ax.set_ylabel("end-of-task error" if regression else "end-of-task accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("(b) four nonstationarities × {none, L2, LN, LN + L2}", fontsize=10)
    return base.save_figure(fig, path)


run = base.sweep_claim(NAME, sweep_config, evaluate, figure)
