"""Shared pieces of the published configs."""

from __future__ import annotations

import ml_collections

from benchmarks import continual
from plasticity import diagnostics

SCALES = ("default", "paper")


def parse_arg(arg: str | None, options: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """Splits a config argument 'paper' / 'paper,task=x' into (scale, other comma-separated parts).

    Unknown scales raise a one-line ValueError naming the accepted ones.
    """
    parts = [part.strip() for part in (arg or "").split(",") if part.strip()]
    scale = "default"
    rest = []
    for part in parts:
        if part in SCALES:
            scale = part
        elif part in options:
            rest.append(part)
        else:
            accepted = ", ".join(SCALES + options)
            raise ValueError(f"unknown config argument {part!r}; accepted: {accepted}")
    return scale, rest


def digits_memorization_base() -> ml_collections.ConfigDict:
    """All 1,797 digits, MLP 64→3×256→10, Adam 1e-3, batch 128 (docs/algorithms.md,
    "Digits-scale memorization check")."""
    config = continual.default_config()
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
