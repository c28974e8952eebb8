"""Golden values of the DQN, double-Q and C51 targets and losses against hand computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import losses

RNG = np.random.default_rng(0)
BATCH, ACTIONS, ATOMS = 6, 4, 11
Q_TM1 = RNG.normal(size=(BATCH, ACTIONS)).astype(np.float32)
Q_T = RNG.normal(size=(BATCH, ACTIONS)).astype(np.float32)
SELECTOR = RNG.normal(size=(BATCH, ACTIONS)).astype(np.float32)
A_TM1 = RNG.integers(0, ACTIONS, BATCH).astype(np.int32)
R_T = RNG.normal(size=BATCH).astype(np.float32)
DISCOUNT_T = np.array([0.99, 0.0, 0.5, 0.9801, 1.0, 0.3], np.float32)

# Jitted once: one compiled program per call shape instead of one per primitive.
td_errors = jax.jit(losses.td_errors)
categorical_losses = jax.jit(losses.categorical_losses)
value_loss_terms = jax.jit(
    losses.value_loss_terms, static_argnames=("huber_delta", "priority_max", "priority_epsilon")
)


def test_q_learning_td_errors_match_hand_computation():
    td = td_errors(Q_TM1, A_TM1, R_T, DISCOUNT_T, Q_T)
    expected = R_T + DISCOUNT_T * Q_T.max(axis=1) - Q_TM1[np.arange(BATCH), A_TM1]
    np.testing.assert_allclose(td, expected, rtol=1e-6, atol=1e-6)


def test_double_q_learning_evaluates_the_selector_argmax_with_the_target_values():
    assert np.any(SELECTOR.argmax(1) != Q_T.argmax(1)), "the test needs selectors that disagree"
    td = td_errors(Q_TM1, A_TM1, R_T, DISCOUNT_T, Q_T, SELECTOR)
    bootstrap = Q_T[np.arange(BATCH), SELECTOR.argmax(axis=1)]
    expected = R_T + DISCOUNT_T * bootstrap - Q_TM1[np.arange(BATCH), A_TM1]
    np.testing.assert_allclose(td, expected, rtol=1e-6, atol=1e-6)


def test_huber_and_l2_regression_losses():
    td = jnp.array([-3.0, -0.5, 0.0, 0.02, 0.5, 2.0])
    np.testing.assert_allclose(losses.regression_losses(td, 0.0), 0.5 * td**2)
    delta = 1.0
    expected = np.where(np.abs(td) <= delta, 0.5 * td**2, delta * (np.abs(td) - 0.5 * delta))
    np.testing.assert_allclose(losses.regression_losses(td, delta), expected, rtol=1e-6)
    # DQN Zoo's gradient clipping of the TD error at 1/32 is a Huber loss with delta 1/32.
    grads = jax.grad(lambda x: losses.regression_losses(x, 1 / 32).sum())(td)
    np.testing.assert_allclose(grads, np.clip(td, -1 / 32, 1 / 32), rtol=1e-6)


def test_categorical_projection_golden_value():
    """Support {-1, 0, 1}, target probabilities (.2, .5, .3), r = .5, discount = .5:
    Tz = (0, .5, 1) projects to m = (0, .2 + .25, .25 + .3) = (0, .45, .55)."""
    support = jnp.array([-1.0, 0.0, 1.0])
    target_logits = jnp.log(jnp.array([[[0.2, 0.5, 0.3]]]))
    online_logits = jnp.array([[[0.3, -0.2, 0.1]]])
    loss = categorical_losses(
        support, online_logits, jnp.array([0]), jnp.array([0.5]), jnp.array([0.5]), target_logits
    )
    log_p = jax.nn.log_softmax(online_logits[0, 0])
    expected = -(0.45 * log_p[1] + 0.55 * log_p[2])
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)


def _reference_categorical(support, logits_tm1, a_tm1, r_t, discount_t, logits_t, selector):
    """Bellemare et al.'s projection written with loops, then the cross-entropy."""
    support = np.asarray(support, np.float64)
    v_min, v_max, spacing = support[0], support[-1], support[1] - support[0]
    out = []
    for b in range(len(a_tm1)):
        probs_t = np.exp(logits_t[b]) / np.exp(logits_t[b]).sum(-1, keepdims=True)
        a_star = int(np.argmax(selector[b]))
        target = np.zeros(len(support))
        for j, z in enumerate(support):
            tz = np.clip(r_t[b] + discount_t[b] * z, v_min, v_max)
            position = np.clip((tz - v_min) / spacing, 0, len(support) - 1)
            lower = min(int(np.floor(position)), len(support) - 2)
            fraction = position - lower
            target[lower] += probs_t[a_star, j] * (1 - fraction)
            target[lower + 1] += probs_t[a_star, j] * fraction
        logits = logits_tm1[b, a_tm1[b]]
        log_p = logits - np.log(np.exp(logits).sum())
        out.append(-(target * log_p).sum())
    return np.asarray(out)


@pytest.mark.parametrize("double_q", [False, True])
def test_c51_losses_match_a_loop_reference(double_q):
    support = np.linspace(-2.0, 2.0, ATOMS).astype(np.float32)
    logits_tm1 = RNG.normal(size=(BATCH, ACTIONS, ATOMS)).astype(np.float32)
    logits_t = RNG.normal(size=(BATCH, ACTIONS, ATOMS)).astype(np.float32)
    r_t = (3.0 * RNG.normal(size=BATCH)).astype(np.float32)  # some targets leave the support
    probs_t = np.exp(logits_t) / np.exp(logits_t).sum(-1, keepdims=True)
    q_t_mean = (probs_t * support).sum(-1)
    selector = SELECTOR if double_q else q_t_mean
    got = categorical_losses(
        support, logits_tm1, A_TM1, r_t, DISCOUNT_T, logits_t, SELECTOR if double_q else None
    )
    expected = _reference_categorical(
        support, logits_tm1, A_TM1, r_t, DISCOUNT_T, logits_t, selector
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_value_loss_terms_priorities_and_targets_without_gradient():
    terms = losses.value_loss_terms(
        a_tm1=A_TM1,
        r_t=R_T,
        discount_t=DISCOUNT_T,
        q_tm1=Q_TM1,
        q_t_target=Q_T,
        huber_delta=0.0,
        priority_max=0.5,
        priority_epsilon=1e-3,
    )
    td = R_T + DISCOUNT_T * Q_T.max(1) - Q_TM1[np.arange(BATCH), A_TM1]
    np.testing.assert_allclose(terms.losses, 0.5 * td**2, rtol=1e-5)
    np.testing.assert_allclose(terms.priorities, np.clip(np.abs(td), 0, 0.5) + 1e-3, rtol=1e-5)

    def total(q_tm1, q_t):
        return losses.value_loss_terms(
            a_tm1=A_TM1, r_t=R_T, discount_t=DISCOUNT_T, q_tm1=q_tm1, q_t_target=q_t
        ).losses.sum()

    _, grad_q_t = jax.grad(total, argnums=(0, 1))(Q_TM1, Q_T)
    np.testing.assert_array_equal(grad_q_t, 0.0)


def test_c51_priorities_are_the_per_example_losses():
    support = jnp.linspace(-1.0, 1.0, ATOMS)
    logits_tm1 = jnp.asarray(RNG.normal(size=(BATCH, ACTIONS, ATOMS)), jnp.float32)
    logits_t = jnp.asarray(RNG.normal(size=(BATCH, ACTIONS, ATOMS)), jnp.float32)
    q = lambda logits: jnp.sum(jax.nn.softmax(logits) * support, -1)
    terms = losses.value_loss_terms(
        a_tm1=A_TM1,
        r_t=R_T,
        discount_t=DISCOUNT_T,
        q_tm1=q(logits_tm1),
        q_t_target=q(logits_t),
        logits_tm1=logits_tm1,
        logits_t_target=logits_t,
        support=support,
        priority_epsilon=0.0,
    )
    np.testing.assert_allclose(terms.priorities, terms.losses, rtol=1e-6)
    with pytest.raises(ValueError, match="distributional"):
        losses.value_loss_terms(
            a_tm1=A_TM1,
            r_t=R_T,
            discount_t=DISCOUNT_T,
            q_tm1=Q_TM1,
            q_t_target=Q_T,
            logits_tm1=logits_tm1,
        )


def test_value_loss_terms_pass_the_double_q_selector_to_both_heads():
    """The learner's double-Q path goes through `value_loss_terms`: with `q_t_selector` a scalar
    head's losses are ½·td² of the double-Q TD error (bootstrap at the selector's argmax, by
    hand), and a C51 head's losses are the loop reference's cross-entropies at that argmax, its
    priorities those losses (+ ε). The selectors disagree with the targets' argmax on some rows,
    where Q-learning would give other values."""
    rows = np.arange(BATCH)
    assert np.any(SELECTOR.argmax(1) != Q_T.argmax(1))
    transitions = dict(a_tm1=A_TM1, r_t=R_T, discount_t=DISCOUNT_T, q_t_selector=SELECTOR)
    terms = value_loss_terms(
        **transitions,
        q_tm1=Q_TM1,
        q_t_target=Q_T,
        huber_delta=0.0,
    )
    td = R_T + DISCOUNT_T * Q_T[rows, SELECTOR.argmax(1)] - Q_TM1[rows, A_TM1]
    np.testing.assert_allclose(terms.td_errors, td, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.losses, 0.5 * td**2, rtol=1e-5, atol=1e-6)

    rng = np.random.default_rng(60)
    support = np.linspace(-2.0, 2.0, ATOMS).astype(np.float32)
    logits_tm1, logits_t = (
        rng.normal(size=(BATCH, ACTIONS, ATOMS)).astype(np.float32) for _ in range(2)
    )
    q = lambda logits: (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) * support).sum(-1)
    assert np.any(SELECTOR.argmax(1) != q(logits_t).argmax(1))
    terms = value_loss_terms(
        **transitions,
        q_tm1=q(logits_tm1),
        q_t_target=q(logits_t),
        logits_tm1=logits_tm1,
        logits_t_target=logits_t,
        support=support,
        priority_epsilon=1e-3,
    )
    expected = _reference_categorical(
        support, logits_tm1, A_TM1, R_T, DISCOUNT_T, logits_t, SELECTOR
    )
    np.testing.assert_allclose(terms.losses, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.priorities, expected + 1e-3, rtol=1e-5, atol=1e-5)


def test_value_loss_terms_default_to_a_huber_loss_of_delta_one():
    """Without `huber_delta` a scalar head's loss is Huber(1) of the TD error (hand-written):
    ½·td² inside [−1, 1], |td| − ½ outside, where ½·td² would be larger (four of the six rows)."""
    terms = value_loss_terms(
        a_tm1=A_TM1, r_t=R_T, discount_t=DISCOUNT_T, q_tm1=Q_TM1, q_t_target=Q_T
    )
    td = R_T + DISCOUNT_T * Q_T.max(1) - Q_TM1[np.arange(BATCH), A_TM1]
    assert np.any(np.abs(td) > 1.5)
    expected = np.where(np.abs(td) <= 1.0, 0.5 * td**2, np.abs(td) - 0.5)
    np.testing.assert_allclose(terms.losses, expected, rtol=1e-5, atol=1e-6)


def test_default_priorities_are_offset_and_capped_and_a_c51_head_needs_its_targets():
    """Without priority settings, a zero TD error gets priority 1e-6 (never zero, so it can be
    drawn again) and a huge one the cap 100 plus that offset; a distributional head given its
    logits but no atom support is refused in one line."""
    zeros = jnp.zeros((2, ACTIONS), jnp.float32)
    terms = value_loss_terms(
        a_tm1=jnp.zeros(2, jnp.int32),
        r_t=jnp.asarray([0.0, 1e3], jnp.float32),
        discount_t=jnp.ones(2, jnp.float32),
        q_tm1=zeros,
        q_t_target=zeros,
    )
    np.testing.assert_allclose(terms.priorities, [1e-6, 100.0 + 1e-6], rtol=1e-6)
    logits = jnp.zeros((2, ACTIONS, ATOMS), jnp.float32)
    with pytest.raises(ValueError, match="needs logits_t_target and the atom support"):
        value_loss_terms(
            a_tm1=jnp.zeros(2, jnp.int32),
            r_t=jnp.zeros(2, jnp.float32),
            discount_t=jnp.ones(2, jnp.float32),
            q_tm1=zeros,
            q_t_target=zeros,
            logits_tm1=logits,
            logits_t_target=logits,
        )
