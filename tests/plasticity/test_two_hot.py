"""Two-hot regression targets (`plasticity.two_hot`) against NumPy: each target's distribution puts
its weight on the two bins around it and has the target as its mean; the loss is the
cross-entropy to it; predictions are the softmax's mean over the support."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from plasticity.two_hot import TwoHot

SUPPORT = TwoHot.on(-2.0, 6.0, 9)  # bins at -2, -1, ..., 6


def numpy_two_hot(y: float, support: np.ndarray) -> np.ndarray:
    y = min(max(y, support[0]), support[-1])
    out = np.zeros_like(support)
    k = min(np.searchsorted(support, y, side="right"), len(support) - 1)
    low, high = support[k - 1], support[k]
    out[k - 1], out[k] = (high - y) / (high - low), (y - low) / (high - low)
    return out


def test_targets_become_two_hot_distributions_whose_mean_is_the_clipped_target():
    targets = np.asarray([[-5.0, -2.0, -1.25], [0.0, 2.5, 5.999], [6.0, 40.0, 3.75]], np.float32)
    encoded = np.asarray(SUPPORT.encode(jnp.asarray(targets)))
    support = np.asarray(SUPPORT.support)
    assert encoded.shape == (3, 3, 9)
    for index in np.ndindex(targets.shape):
        np.testing.assert_allclose(
            encoded[index], numpy_two_hot(float(targets[index]), support), atol=1e-6
        )
    np.testing.assert_allclose(encoded.sum(-1), 1.0, atol=1e-6)
    assert np.all(encoded >= 0) and np.all((encoded > 0).sum(-1) <= 2)
    np.testing.assert_allclose(encoded @ support, np.clip(targets, -2.0, 6.0), atol=1e-5)


def test_the_loss_is_the_cross_entropy_and_a_matching_network_predicts_the_target():
    rng = np.random.default_rng(0)
    targets = rng.uniform(-2.0, 6.0, (5, 2)).astype(np.float32)
    outputs = rng.normal(size=(5, 2 * 9)).astype(np.float32)
    logits = outputs.reshape(5, 2, 9)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    encoded = np.stack(
        [[numpy_two_hot(t, np.asarray(SUPPORT.support)) for t in row] for row in targets]
    )
    expected = -(encoded * log_probs).sum(-1).mean(-1)
    np.testing.assert_allclose(
        SUPPORT.loss(jnp.asarray(outputs), jnp.asarray(targets)), expected, rtol=1e-5
    )
    probabilities = np.exp(log_probs)
    np.testing.assert_allclose(
        SUPPORT.predict(jnp.asarray(outputs)),
        probabilities @ np.asarray(SUPPORT.support),
        rtol=1e-5,
    )
    # Logits equal to the log of the two-hot distribution (its zeros a large negative) predict y.
    matching = np.log(np.maximum(encoded, 1e-30)).reshape(5, 18).astype(np.float32)
    np.testing.assert_allclose(SUPPORT.predict(jnp.asarray(matching)), targets, atol=1e-4)


@pytest.mark.parametrize("low, high, bins", [(0.0, 1.0, 1), (1.0, 1.0, 5), (2.0, -2.0, 5)])
def test_a_degenerate_support_is_one_line(low, high, bins):
    with pytest.raises(ValueError, match="at least 2 bins on an interval low < high"):
        TwoHot.on(low, high, bins)


def test_the_encoding_agrees_with_rlax_to_its_epsilon():
    """rlax's `transform_to_2hot` (the same two-hot scheme) as a golden value: it adds 1e-5 to the
    bin width in its denominator, so the two agree to about 1e-5 of a bin's weight."""
    rlax = pytest.importorskip("rlax")
    targets = jnp.asarray(np.linspace(-3.0, 7.0, 41), jnp.float32)  # on, between and beyond bins
    expected = rlax.transform_to_2hot(targets, -2.0, 6.0, 9)
    np.testing.assert_allclose(SUPPORT.encode(targets), expected, atol=2e-5)
