"""(g) interventions_nap: NaP adds to every other remedy for lost plasticity.

Paper's claim (NaP, Lyle et al. 2024; docs/algorithms.md, "Normalize and project (NaP)"): in a
grid of plasticity interventions (ReDo, L2-init, noisy updates, leaky ReLU, shrink-and-perturb,
L2), each trained with and without NaP on nonstationary tasks, adding NaP raises every
intervention's average online accuracy: it is complementary to them rather than a substitute.

Settings (cpu scale): `benchmarks/configs/nap_interventions.py` (its docstring lists the arms and
their strengths): the first 1,024 of scikit-learn's 8×8 digits, labels redrawn at every task, MLP
64→3×256→10, Adam 1e-3, batch 128, 20 tasks × 400 steps; each intervention on the plain network
and on LayerNorm + NaP, 3 seeds (a seed fixes the initial parameters and the label draws of every
arm). ``paper`` scale: that file's ``:paper`` (CIFAR-10, 50 tasks × 20,000 steps). ``smoke``:
2 tiny tasks, the baseline and ReDo pairs only.

Metric: average online accuracy (the training batch's accuracy before each update, averaged
over every step of the run), per seed. Verdict (paired over seeds, 95% t-interval), PASS when
for every intervention X, (X + NaP) − X > 0.

Measured (``python -m benchmarks.reproduce interventions_nap``, cpu scale, seeds 0–2, 11.8
minutes at load 2; README): every pair PASS (7/7). Alone → with NaP: none 0.26 → 0.55, L2 0.28 →
0.58, L2-init 0.27 → 0.58, ReDo 0.56 → 0.64, shrink-and-perturb 0.27 → 0.75, noisy updates 0.25
→ 0.55, leaky ReLU 0.35 → 0.55. By task ~10 the plain network's online accuracy falls to chance
(0.1) alone and with noisy updates, to 0.12–0.2 with L2 and L2-init (at these strengths none of
the three differs from no intervention within the seeds' spread, so their rows repeat the first
row's comparison), and to 0.22–0.3 with leaky ReLU or shrink-and-perturb (whose shrink at every
boundary lowers it from the second task on); ReDo's recycled units keep it mostly at 0.5–0.65.
With NaP every arm holds 0.5–0.8.

What the verdict rests on: NaP is LayerNorm and the projection together, and at this horizon
LayerNorm does most of it. With LayerNorm under the arms without NaP as well (``ln_base``, so that a
pair differs by the projection alone: `python -m scripts.train_continual
--experiment=benchmarks/configs/nap_interventions.py:ln_base --config.num_seeds=3 --workdir=W`, 13.4
minutes, then `python -m benchmarks.claims.interventions_nap W`), the verdict is PARTIAL 1/7: LN+NaP
− LN is +0.31 ± 0.05 under shrink-and-perturb (PASS: the projection undoes the shrink of the hidden
kernels, which costs LayerNorm alone 0.44 against 0.58 without it), −0.031 ± 0.020 without an
intervention, −0.040 ± 0.037 under ReDo and −0.026 ± 0.023 under leaky ReLU (OPPOSITE), and +0.005 ±
0.015 (L2), −0.016 ± 0.018 (L2-init) and −0.029 ± 0.032 (noisy updates) (INCONCLUSIVE). Over 20
tasks of 400 steps LayerNorm alone has not yet lost its plasticity (claim (a): it degrades from
about task 25 of 40), while the projection holds the effective learning rate at its start and
memorizes each task a little more slowly. Over 40 tasks (the same command with
``--config.task.num_tasks=40``, 32 minutes at load 2–3) LayerNorm alone does lose it, and the
projection adds to more remedies: PARTIAL 3/7 over the whole run (L2 +0.048 ± 0.015, L2-init +0.047
± 0.014, shrink-and-perturb +0.44 ± 0.08 PASS; ReDo −0.035 ± 0.010 OPPOSITE; none +0.009 ± 0.039,
noisy updates +0.014 ± 0.055, leaky ReLU +0.010 ± 0.057 INCONCLUSIVE), and over the last 10 tasks
(``python -m benchmarks.claims.interventions_nap W --last_tasks=10``: PARTIAL 3/7, L2, L2-init and
shrink-and-perturb PASS, ReDo OPPOSITE) the arm with NaP is ahead in the mean under every remedy but
ReDo (none 0.42 → 0.52, L2 0.50 → 0.64, L2-init 0.45 → 0.61, noisy updates 0.40 → 0.49, leaky ReLU
0.39 → 0.45), whose recycling keeps LayerNorm alone at 0.66 against 0.62 with NaP. That horizon
would double the claim's cost, past this scale's 15 minutes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import ml_collections
import numpy as np

from benchmarks.claims import base
from benchmarks.configs import nap_interventions
from plasticity import analysis

NAME = "interventions_nap"
SUMMARY = "every intervention's average online accuracy rises with NaP added"
INTERVENTIONS = tuple(nap_interventions.INTERVENTIONS)
SMOKE_INTERVENTIONS = ("none", "redo")
METRIC = "online_accuracy"
NORM_NAMES = {"layernorm": "LN", "rmsnorm": "RMSNorm", "rmsnorm_offset": "RMSNorm+offset"}


def grid_config(scale: str, seeds: int) -> ml_collections.ConfigDict:
    base.check_scale(scale)
    config = nap_interventions.get_config(None if scale == "cpu" else scale)
    config.num_seeds = seeds
    config.run.tensorboard = scale == "paper"
    if scale == "smoke":
        base.smoke_scale(config, seeds, num_tasks=2, steps_per_task=10)
        config.variant_order = tuple(f"{x}{s}" for x in SMOKE_INTERVENTIONS for s in ("", "_nap"))
    return config


def configs(scale: str, seeds: int) -> dict[str, ml_collections.ConfigDict]:
    return {"grid": grid_config(scale, seeds)}


def check(config: ml_collections.ConfigDict) -> None:
    base.check_config(config)


def interventions(config: ml_collections.ConfigDict) -> list[str]:
    """The interventions whose two arms the config runs."""
    names = base.variant_names(config)
    return [x for x in INTERVENTIONS if x in names and f"{x}_nap" in names]


def base_norm(config: ml_collections.ConfigDict, intervention: str) -> str:
    """The norm of the intervention's arm without NaP: 'none', or 'layernorm' under the config
    file's ``ln_base``."""
    resolved = dict(base.resolved_variants(config))
    return resolved[intervention].network.norm if intervention in resolved else "none"


def arm_labels(config: ml_collections.ConfigDict, intervention: str) -> tuple[str, str]:
    """The labels of an intervention's two arms: 'x' and 'x+NaP', or 'LN+x' and 'LN+x+NaP' where
    the arm without NaP has LayerNorm too."""
    norm = base_norm(config, intervention)
    alone = intervention if norm == "none" else f"{NORM_NAMES.get(norm, norm)}+{intervention}"
    return alone, f"{alone}+NaP"


def online_accuracy(
    rows: list, variant: str, num_tasks: int, last_tasks: int | None = None
) -> dict[int, float]:
    """{seed: online accuracy averaged over every task, or over the last `last_tasks`} of one
    arm (tasks are equally long). A seed without a finite value for each of its ``num_tasks``
    tasks (a run still training, or one that diverged) is NaN, so that it leaves the comparison
    rather than pairing a few early tasks with another arm's whole run; every task counts, not
    only the window's, so that a window compares the same seeds as the whole run."""
    values, seeds = base.per_task_matrix(base.task_rows(rows, variant), METRIC, num_tasks)
    complete = np.isfinite(values).all(axis=1)
    window = values if last_tasks is None else values[:, num_tasks - last_tasks :]
    return {
        seed: float(row.mean()) if ok else math.nan
        for seed, row, ok in zip(seeds, window, complete)
    }


def evaluate(
    rows: list, config: ml_collections.ConfigDict, last_tasks: int | None = None
) -> list[base.Row]:
    """One row per intervention: its arm alone and with NaP, and the paired difference (of the
    online accuracy over every task, or over the last `last_tasks`)."""
    out = []
    num_tasks = int(config.task.num_tasks)
    if last_tasks is not None and not 1 <= last_tasks <= num_tasks:
        raise ValueError(f"--last_tasks must be in [1, {num_tasks}] (the run's tasks)")
    metric = "average online accuracy"
    if last_tasks is not None:
        metric += ", last task" if last_tasks == 1 else f", last {last_tasks} tasks"
    for x in interventions(config):
        alone = online_accuracy(rows, x, num_tasks, last_tasks)
        with_nap = online_accuracy(rows, f"{x}_nap", num_tasks, last_tasks)
        alone_label, nap_label = arm_labels(config, x)
        out.append(
            base.Row(
                x,
                metric,
                {alone_label: base.interval_of(alone), nap_label: base.interval_of(with_nap)},
                [base.paired(f"{x}: +NaP − without", 1, with_nap, alone)],
            )
        )
    return out


def draw(rows: list, config: ml_collections.ConfigDict):
    """The figure: online accuracy per task, one panel per intervention, without and with NaP
    (seed mean, min–max band), one legend for all panels."""
    plt = base.pyplot()
    names = interventions(config)
    columns = min(4, len(names))
    lines = -(-len(names) // columns)
    fig, axes = plt.subplots(
        lines,
        columns,
        figsize=(3.2 * columns, 2.6 * lines + 0.5),
        sharex=True,
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    num_tasks = int(config.task.num_tasks)
    for ax, x in zip(axes.flat, names):
        for i, variant in enumerate((x, f"{x}_nap")):
            values, _ = base.per_task_matrix(base.task_rows(rows, variant), METRIC, num_tasks)
            base.draw_band(ax, np.arange(1, num_tasks + 1), values, variant, color=f"C{i}")
        ax.set_title(x, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for column in range(columns):  # the lowest panel drawn in each column carries the x axis
        lowest = axes[(len(names) - 1 - column) // columns, column]
        lowest.set_xlabel("task")
        lowest.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("online accuracy")
    without = "network" if not names or base_norm(config, names[0]) == "none" else "LayerNorm"
    handles = axes.flat[0].get_lines()[:2]
    labels = [f"without NaP (plain {without})", "with NaP (LayerNorm + projection)"]
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(
        "(g) each intervention without and with NaP (labels reset every task; band: min–max "
        "over seeds)",
        fontsize=10,
    )
    return fig


def figure(rows: list, config: ml_collections.ConfigDict, path: Path) -> str:
    """`draw`, saved as a PNG at ``path``."""
    return base.save_figure(draw(rows, config), path)


def read_workdir(workdir: str | Path) -> tuple[list, ml_collections.ConfigDict]:
    """(rows, the config it recorded) of a work dir of `benchmarks/configs/nap_interventions.py`
    (``ln_base`` or ``cnn`` too); a ValueError for one that holds no continual run."""
    run = analysis.load_run(workdir)
    if not run.config:
        raise ValueError(f"{workdir} holds no readable {analysis.CONFIG_FILE}")
    config = ml_collections.ConfigDict(run.config)
    if "task" not in config or "num_tasks" not in config.task:
        raise ValueError("its config has no continual tasks (task.num_tasks)")
    return run.rows, config


def workdir_result(
    rows: list, config: ml_collections.ConfigDict, last_tasks: int | None = None
) -> base.ClaimResult:
    """The claim's result for a work dir's rows and config, over every task or the last
    `last_tasks`; its minutes are unknown (NaN): a work dir does not record them."""
    if not interventions(config):
        raise ValueError(
            "its config has no intervention beside its NaP arm (x and x_nap): not a run of "
            "benchmarks/configs/nap_interventions.py"
        )
    scored = evaluate(rows, config, last_tasks)
    return base.ClaimResult(NAME, "workdir", int(config.num_seeds), scored, seconds=math.nan)


def evaluate_workdir(workdir: str | Path, last_tasks: int | None = None) -> base.ClaimResult:
    """`workdir_result` of a work dir read by `read_workdir`."""
    return workdir_result(*read_workdir(workdir), last_tasks)


run = base.sweep_claim(NAME, grid_config, evaluate, figure, subdir="grid")


USAGE = "usage: python -m benchmarks.claims.interventions_nap WORKDIR [--last_tasks=N]"


def main(argv: list[str]) -> int:
    """``python -m benchmarks.claims.interventions_nap WORKDIR [--last_tasks=N]``: the claim's
    table and comparisons for a work dir of the grid's config file, over every task or the last
    N (where a longer run's late tasks tell more than its average)."""
    args = argv[1:]
    options = [a for a in args if a.startswith("--last_tasks=")]
    positional = [a for a in args if a not in options]
    if len(positional) != 1 or len(options) > 1:
        print(USAGE, file=sys.stderr)
        return 1
    try:
        last_tasks = int(options[0].split("=", 1)[1]) if options else None
    except ValueError:
        print(
            f"interventions_nap: error: --last_tasks takes a whole number, got {options[0]}",
            file=sys.stderr,
        )
        return 1
    try:
        rows, config = read_workdir(positional[0])
    except (OSError, ValueError, KeyError, AttributeError) as error:
        print(f"interventions_nap: error: cannot read {positional[0]}: {error}", file=sys.stderr)
        return 1
    try:
        result = workdir_result(rows, config, last_tasks)
    except (ValueError, KeyError, AttributeError) as error:  # a window it lacks, another run
        print(f"interventions_nap: error: {positional[0]}: {error}", file=sys.stderr)
        return 1
    print("\n".join(base.table_lines([result]) + base.comparison_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
