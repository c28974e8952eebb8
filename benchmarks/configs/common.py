"""Shared pieces of the published continual configs and the continual launcher's config.

Every published config file takes ``:smoke`` (a check of the plumbing, about a minute on 2 CPU
cores, compiling nearly all of it), no scale (the default, CPU scale) or ``:paper``, plus its own
options and its variant names, to run only those, in the order given (`parse_arg`, as the RL configs
do).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from benchmarks import continual_config
from plasticity import config_tools, diagnostics

# Launcher flags that name a config field, the same names as the RL launchers' where the concept
# is the same (`agents.configs.NAMED_FLAGS`).
NAMED_FLAGS = {
    "seed": "seed",
    "num_seeds": "num_seeds",
    "norm": "network.norm",
    "nap": "optimizer.nap.enabled",
    "weight_decay": "optimizer.weight_decay",
    "data_dir": "data.data_dir",
    "mesh": "mesh",
}


def parse_arg(
    arg: str | None, options: tuple[str, ...] = (), variants: tuple[str, ...] = ()
) -> tuple[str, list[str], list[str]]:
    """(scale, chosen options, chosen variants) of a continual config file's argument: `smoke`,
    the default scale or `paper`, file-specific options and variant names (run only those, in the
    order given: `config_tools.parse_config_arg`); a one-line ValueError for anything else."""
    scale, chosen_variants, chosen = config_tools.parse_config_arg(arg, variants, options)
    return scale, chosen, chosen_variants


def build_config(
    experiment: str | None,
    overrides: dict[str, str],
    named: dict[str, Any],
    replaced: list[str] | None = None,
) -> ml_collections.ConfigDict:
    """The continual launcher's config: the ``--experiment`` file's (or `default_config`), then
    ``--config.*`` overrides, then the named flags (both win over every variant's own values: one
    line each in ``replaced``, `plasticity.config_tools.force_fields`)."""
    config_tools.check_each_field_given_once(NAMED_FLAGS, named, overrides)
    if experiment:
        config = config_tools.load_config_file(experiment)
        config_tools.check_config_kind(
            config, continual_config.default_config(), f"--experiment={experiment}", "a continual"
        )
    else:
        config = continual_config.default_config()
    notes = config_tools.apply_overrides(config, overrides)
    named_fields = {NAMED_FLAGS[name]: named.get(name) for name in NAMED_FLAGS}
    notes += config_tools.force_fields(config, named_fields)
    if replaced is not None:
        replaced.extend(notes)
    return config


def smoke_scale(config: ml_collections.ConfigDict, **task) -> None:
    """Shrinks a sweep in place to a check of its plumbing (compile-bound): a few tasks of
    a few steps, small layers, diagnostics every few steps; ``task`` fields override the base
    task and every variant's task (e.g. a stream task's flip period)."""
    sizes = {
        "task.num_tasks": 3,
        "task.steps_per_task": 20,
        "network.hidden_sizes": (32, 32),
        "network.channels": (4, 8),
        "network.dense_sizes": (16,),
        "network.width": 8,
        "network.stage_sizes": (1, 1),
        "diagnostics.every": 10,
        "diagnostics.probe_size": 64,
        "eval.max_examples": 256,
        "run.tasks_per_chunk": 1,
        "num_seeds": 2,
        **{f"task.{key}": value for key, value in task.items()},
    }
    config_tools.force_fields(config, sizes)


def digits_memorization_base() -> ml_collections.ConfigDict:
    """All 1,797 8×8 digits, MLP 64→3×256→10, Adam 1e-3, batch 128 (docs/algorithms.md,
    "Digits-scale memorization check")."""
    config = continual_config.default_config()
    config.data.name = "digits"
    config.task.name = "label_reset"
    config.task.batch_size = 128
    config.network.name = "mlp"
    config.network.hidden_sizes = (256, 256, 256)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.diagnostics.every = 100
    # The default compiled diagnostics (dormant / dead / linearized units, feature ranks, norms,
    # effective learning rates): ≤ 1.2× the cost of training (benchmarks.diagnostics_cost).
    config.diagnostics.names = diagnostics.DEFAULT_DIAGNOSTICS
    return config


def arm(
    norm: str = "none", nap: bool = False, l2: float = 0.0, weight_decay: float = 0.0, **extra
) -> dict:
    """The overrides of one structural arm: norm, NaP projection, coupled L2, weight decay."""
    overrides = {
        "network": {"norm": norm},
        "optimizer": {"nap": {"enabled": nap}, "l2": l2, "weight_decay": weight_decay},
    }
    for key, value in extra.items():
        overrides.setdefault(key, {}).update(value)
    return overrides
