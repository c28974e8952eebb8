"""Regression through a categorical output: targets as two-hot distributions over fixed bins.

The Disentangling paper's recipe for targets of large magnitude: instead of one linear output
whose weights must grow to reach the target (and shrink again when it moves), each regressed
value gets ``bins`` logits over a fixed support ``z_1 < … < z_B``; the target y is written as the
distribution putting weight on the two bins around it, (z_{k+1} − y)/(z_{k+1} − z_k) on z_k and the
rest on z_{k+1} (y clipped to [z_1, z_B]), the loss is the cross-entropy to it, and the prediction
is the mean of the softmax over the support. The two-hot distribution's mean is y itself, so a
network that matches it predicts y exactly; a large target costs one bin's logit, not a large
weight.

Outputs are laid out ``(..., outputs * bins)``, the bins of each regressed value contiguous.
rlax's ``transform_to_2hot`` is the same scheme (the tests use it as a golden value); this core
keeps its own because rlax adds 1e-5 to the bin width, which shifts the encoded mean, and its
decoder takes rank-2 inputs only, and because `plasticity` depends on no RL library.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class TwoHot(NamedTuple):
    """A fixed support of ``bins`` evenly spaced values on [low, high]."""

    support: jax.Array  # (bins,) float32, increasing

    @classmethod
    def on(cls, low: float, high: float, bins: int) -> "TwoHot":
        """The support; a one-line ValueError unless bins >= 2 and low < high."""
        if int(bins) < 2 or not float(low) < float(high):
            raise ValueError(
                f"a two-hot output needs at least 2 bins on an interval low < high, got "
                f"{bins} bins on [{low}, {high}]"
            )
        return cls(jnp.linspace(float(low), float(high), int(bins), dtype=jnp.float32))

    @property
    def bins(self) -> int:
        return int(self.support.shape[0])

    def encode(self, targets: jax.Array) -> jax.Array:
        """(..., bins) two-hot distributions of ``targets`` (...), clipped to the support."""
        z = self.support
        y = jnp.clip(targets.astype(jnp.float32), z[0], z[-1])
        upper = jnp.clip(jnp.searchsorted(z, y, side="right"), 1, self.bins - 1)
        low, high = z[upper - 1], z[upper]
        upper_weight = (y - low) / (high - low)
        return jax.nn.one_hot(upper - 1, self.bins) * (1.0 - upper_weight)[..., None] + (
            jax.nn.one_hot(upper, self.bins) * upper_weight[..., None]
        )

    def logits(self, outputs: jax.Array) -> jax.Array:
        """(..., outputs, bins) from the network's (..., outputs * bins)."""
        return outputs.reshape(*outputs.shape[:-1], -1, self.bins)

    def predict(self, outputs: jax.Array) -> jax.Array:
        """(..., outputs): the mean of each regressed value's softmax over the support."""
        return jax.nn.softmax(self.logits(outputs), axis=-1) @ self.support

    def loss(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """(...): the cross-entropy to the targets' two-hot distributions, mean over outputs."""
        per_output = optax.softmax_cross_entropy(self.logits(outputs), self.encode(targets))
        return jnp.mean(per_output, axis=-1)
