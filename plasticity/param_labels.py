"""Names the role of every parameter from the module naming convention of `plasticity.layers`.

Labels:
  'normed_kernel'  a kernel (or a noisy layer's sigma kernel) of a layer followed by a norm:
                   scale invariant, projected by NaP.
  'kernel'         a hidden kernel with no norm after it (not scale invariant).
  'output_kernel'  a kernel of an output layer (module name starting with 'output').
  'bias'           any bias, output biases included.
  'norm_scale', 'norm_offset'  γ and β of a normalization layer.
  'embedding'      embedding tables and learned position embeddings.

Layers are the modules that own kernels, named by their '/'-joined path (e.g. 'hidden_0/linear',
'torso/conv_1/linear', 'head/output'); per-layer metrics and schedules use these names.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import traverse_util

KERNEL_LABELS = ("normed_kernel", "kernel", "output_kernel")
NORM_LABELS = ("norm_scale", "norm_offset")
LABELS = (*KERNEL_LABELS, "bias", *NORM_LABELS, "embedding")  # every label `_label` gives
_KERNEL_LEAVES = ("kernel", "sigma_kernel")
_BIAS_LEAVES = ("bias", "sigma_bias")
_NORM_MODULES = ("norm", "pre_attention_norm", "pre_mlp_norm", "final_norm")


def _is_norm_module(name: str) -> bool:
    return name in _NORM_MODULES or name.endswith("_norm")


def _label(path: tuple[str, ...], siblings_of_module: set[str]) -> str:
    leaf, module = path[-1], path[-2] if len(path) > 1 else ""
    if _is_norm_module(module):
        return "norm_scale" if leaf == "scale" else "norm_offset"
    if leaf in _BIAS_LEAVES:
        return "bias"
    if leaf in _KERNEL_LEAVES:
        if any(part.startswith("output") for part in path[:-1]):
            return "output_kernel"
        if module == "linear" and "norm" in siblings_of_module:
            return "normed_kernel"
        return "kernel"
    return "embedding"


def label_params(params: Any) -> Any:
    """A pytree with the structure of `params` whose leaves are the label strings above."""
    flat = traverse_util.flatten_dict(params)
    children: dict[tuple[str, ...], set[str]] = {}
    for path in flat:
        for depth in range(1, len(path)):
            children.setdefault(path[: depth - 1], set()).add(path[depth - 1])
    labels = {
        path: _label(path, children.get(path[:-2], set()) if len(path) >= 2 else set())
        for path in flat
    }
    return traverse_util.unflatten_dict(labels)


def layer_name(path: tuple[str, ...]) -> str:
    """The name of the layer owning the parameter at `path`: its module path joined by '/'."""
    return "/".join(path[:-1])


def kernel_layers(params: Any, labels: tuple[str, ...] = KERNEL_LABELS) -> dict[str, list[tuple]]:
    """{layer name: [paths of its kernel leaves]} for kernels whose label is in `labels`.

    A noisy layer has two kernel leaves (μ and σ); they form one layer, measured and projected
    jointly because scaling both together is what leaves the following norm invariant.
    """
    flat_labels = traverse_util.flatten_dict(label_params(params))
    layers: dict[str, list[tuple]] = {}
    for path, label in flat_labels.items():
        if label in labels:
            layers.setdefault(layer_name(path), []).append(path)
    return layers


def norm_layers(params: Any) -> dict[str, list[tuple]]:
    """{norm layer name: [paths of its γ and β leaves]} for the norms inside normed layers."""
    flat_labels = traverse_util.flatten_dict(label_params(params))
    layers: dict[str, list[tuple]] = {}
    for path, label in flat_labels.items():
        if label in NORM_LABELS and path[-2] == "norm":
            layers.setdefault(layer_name(path), []).append(path)
    return layers


def mask_for(params: Any, labels: tuple[str, ...]) -> Any:
    """A boolean pytree: True where the parameter's label is in `labels` (for `optax.masked`)."""
    return jax.tree_util.tree_map(lambda label: label in labels, label_params(params))


def has_normed_kernels(params: Any) -> bool:
    """Whether any kernel feeds a normalization layer (i.e. the network has norm != 'none')."""
    return bool(kernel_layers(params, ("normed_kernel",)))


def check_labels(labels: Any, where: str) -> tuple[str, ...]:
    """``labels`` as a tuple of known labels, or a one-line ValueError (a plain string, which
    would be read letter by letter, or an unknown label, which would select nothing)."""
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise ValueError(
            f"{where} must be a sequence of labels such as ('kernel',), got {labels!r}"
        )
    unknown = [label for label in labels if label not in LABELS]
    if unknown:
        raise ValueError(f"{where}: unknown label {unknown[0]!r}; labels: {', '.join(LABELS)}")
    return tuple(labels)
