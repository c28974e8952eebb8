"""Per-layer effective learning rates: the quantity whose hidden decay NaP removes.

For a scale-invariant kernel W (one feeding a norm), SGD with step η moves its direction by an
angle proportional to η/‖W‖², so norm growth silently decays the learning rate layer by layer.
Two views are given: the nominal η/‖W‖^p (p = 2 for SGD, ~1 for Adam) and the measured relative
update ‖ΔW‖/‖W‖ of the last step, which holds for any optimizer.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import traverse_util

from plasticity import optim, param_labels


def layer_weight_norms(
    params: Any, labels: tuple[str, ...] = param_labels.KERNEL_LABELS
) -> dict[str, jnp.ndarray]:
    """{layer: Frobenius norm of its kernel(s)} for the kernels whose label is in `labels`."""
    flat = traverse_util.flatten_dict(params)
    return {
        layer: jnp.sqrt(sum(jnp.sum(jnp.square(flat[p])) for p in paths))
        for layer, paths in param_labels.kernel_layers(params, labels).items()
    }


def optimizer_exponent(optimizer_name: str) -> float:
    """The p of η/‖W‖^p for a `plasticity.optim` optimizer: 2 for SGD and momentum (exact on a
    scale-invariant layer, whose gradient scales like 1/‖W‖), 1 for Adam and RMSProp (their
    normalized steps have a fixed size, so the angle they turn W by scales like η/‖W‖)."""
    optim.check_optimizer_name(optimizer_name)
    return 2.0 if optimizer_name in ("sgd", "momentum") else 1.0


def configured_exponent(own: float, option: float | None, optimizer_name: str) -> float:
    """The p a config asks for: its diagnostics section's ``effective_lr_exponent`` (``own``; 0
    leaves it unset), else the ``effective_lr_exponent`` of the section's ``options`` (``option``),
    else `optimizer_exponent`. Both set and different is a one-line ValueError."""
    if own and option is not None and float(option) != float(own):
        raise ValueError(
            f"diagnostics.effective_lr_exponent ({float(own):g}) and "
            f"diagnostics.options.effective_lr_exponent ({float(option):g}) disagree; "
            f"set only one"
        )
    if own:
        return float(own)
    return float(option) if option is not None else optimizer_exponent(optimizer_name)


def effective_learning_rates(
    params: Any,
    learning_rate,
    exponent: float = 2.0,
    labels: tuple[str, ...] = param_labels.KERNEL_LABELS,
) -> dict[str, jnp.ndarray]:
    """{layer: η/‖W‖^exponent}; exponent 2 is exact for SGD on scale-invariant layers."""
    return {
        layer: learning_rate / norm**exponent
        for layer, norm in layer_weight_norms(params, labels).items()
    }


def relative_update_norms(
    params_before: Any, params_after: Any, labels: tuple[str, ...] = param_labels.KERNEL_LABELS
) -> dict[str, jnp.ndarray]:
    """{layer: ‖W_after − W_before‖/‖W_before‖}: the measured step size of the last update."""
    before = traverse_util.flatten_dict(params_before)
    after = traverse_util.flatten_dict(params_after)
    ratios = {}
    for layer, paths in param_labels.kernel_layers(params_before, labels).items():
        delta = jnp.sqrt(sum(jnp.sum(jnp.square(after[p] - before[p])) for p in paths))
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(before[p])) for p in paths))
        ratios[layer] = delta / jnp.maximum(norm, 1e-12)
    return ratios
