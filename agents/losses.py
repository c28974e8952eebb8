"""Per-example value losses of DQN and Rainbow, on batches of n-step transitions, built on ``rlax``.

Inputs follow rlax's naming: ``q_tm1`` / ``logits_tm1`` are the online network's outputs at o_tm1,
``a_tm1`` the action taken there, ``r_t`` and ``discount_t`` the replay's n-step return and
bootstrap discount (``r_t = sum_i gamma^(i-1) r_(t+i)``, ``discount_t = gamma^k prod d``; see
``agents.replay``), and the ``_t`` outputs are evaluated at the bootstrap observation. The losses
are per example (shape (B,)) so that prioritized replay can weight them and read new priorities
from them; the learner averages ``weights * losses``.

New priorities for prioritized replay: |TD error| for scalar heads; the per-example cross-entropy
loss for distributional (C51) heads, as DQN Zoo's Rainbow does. Both are clipped to
``[0, priority_max]`` and offset by ``priority_epsilon``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import rlax

_batch_q_learning = jax.vmap(rlax.q_learning)
_batch_double_q_learning = jax.vmap(rlax.double_q_learning)
# The atom supports are shared by the whole batch.
_batch_categorical_q_learning = jax.vmap(
    rlax.categorical_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0)
)
_batch_categorical_double_q_learning = jax.vmap(
    rlax.categorical_double_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0, 0)
)


class LossTerms(NamedTuple):
    """Per-example results of a value loss, all of shape (B,)."""

    losses: jax.Array  # what the learner minimises, before importance weights
    td_errors: jax.Array  # target - q(o_tm1, a_tm1); for C51 in expectation over the atoms
    priorities: jax.Array  # new priorities for prioritized replay


def td_errors(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_value: jax.Array,
    q_t_selector: jax.Array | None = None,
) -> jax.Array:
    """TD errors r_t + discount_t * Q_target(o_t, a*) - Q(o_tm1, a_tm1), shape (B,).

    a* = argmax Q_target(o_t, .) (Q-learning) or argmax q_t_selector (double Q-learning, where the
    selector is the online network at o_t). Targets carry no gradient.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_value], [2, 1, 1, 1, 2])
    if q_t_selector is None:
        return _batch_q_learning(q_tm1, a_tm1, r_t, discount_t, q_t_value)
    chex.assert_equal_shape([q_t_value, q_t_selector])
    return _batch_double_q_learning(q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)


def regression_losses(td: jax.Array, huber_delta: float) -> jax.Array:
    """Huber(td) with threshold ``huber_delta`` (gradient clip(td, +-delta)), or 0.5 td^2 when 0."""
    if huber_delta > 0:
        return rlax.huber_loss(td, huber_delta)
    return rlax.l2_loss(td)


def categorical_losses(
    support: jax.Array,
    logits_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    logits_t: jax.Array,
    q_t_selector: jax.Array | None = None,
) -> jax.Array:
    """C51 cross-entropy between the projected target distribution and the online one, (B,).

    The target distribution is the target network's at o_t for a* (argmax of its own mean Q, or of
    ``q_t_selector`` for double Q-learning), shifted by r_t, scaled by discount_t and projected on
    ``support`` (Bellemare et al., 2017).
    """
    chex.assert_rank([support, logits_tm1, a_tm1, r_t, discount_t, logits_t], [1, 3, 1, 1, 1, 3])
    with warnings.catch_warnings():  # rlax announces a move of its cross-entropy to distrax
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        if q_t_selector is None:
            return _batch_categorical_q_learning(
                support, logits_tm1, a_tm1, r_t, discount_t, support, logits_t
            )
        return _batch_categorical_double_q_learning(
            support, logits_tm1, a_tm1, r_t, discount_t, support, logits_t, q_t_selector
        )


def new_priorities(errors: jax.Array, priority_max: float, priority_epsilon: float) -> jax.Array:
    """clip(|errors|, 0, priority_max) + priority_epsilon, without gradient."""
    errors = jax.lax.stop_gradient(errors)
    return jnp.clip(jnp.abs(errors), 0.0, priority_max) + priority_epsilon


def value_loss_terms(
    *,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_tm1: jax.Array,
    q_t_target: jax.Array,
    logits_tm1: jax.Array | None = None,
    logits_t_target: jax.Array | None = None,
    q_t_selector: jax.Array | None = None,
    support: jax.Array | None = None,
    huber_delta: float = 1.0,
    priority_max: float = 100.0,
    priority_epsilon: float = 1e-6,
) -> LossTerms:
    """Losses, TD errors and new priorities of a scalar (logits None) or a C51 head.

    ``q_t_selector`` switches double Q-learning on. For C51 the TD error is reported on the mean
    Q-values, for logging only.
    """
    distributional = logits_tm1 is not None
    if distributional and (logits_t_target is None or support is None):
        raise ValueError("a distributional loss needs logits_t_target and the atom support")
    td = td_errors(q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_selector)
    if distributional:
        losses = categorical_losses(
            support, logits_tm1, a_tm1, r_t, discount_t, logits_t_target, q_t_selector
        )
        priorities = new_priorities(losses, priority_max, priority_epsilon)
    else:
        losses = regression_losses(td, huber_delta)
        priorities = new_priorities(td, priority_max, priority_epsilon)
    return LossTerms(losses=losses, td_errors=jax.lax.stop_gradient(td), priorities=priorities)
