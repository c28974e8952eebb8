"""Curvature and trainability diagnostics: top Hessian eigenvalue, empirical NTK, plasticity probe.

Each is a pure function of a parameter pytree and a fixed batch, so it runs inside a jitted
training loop and vmaps over seeds. They are costlier than the activation statistics of
`plasticity.diagnostics` (a few to a few hundred forward/backward passes), which is why
`DEFAULT_DIAGNOSTICS` leaves them out.

* `hessian_power_iteration`: power iteration on Hessian-vector products (forward-over-reverse),
  a fixed number of iterations, so the cost is known in advance (one HVP ≈ 2-3 gradients); it
  also returns the last iteration's relative change, which shows when that budget was too small.
* `empirical_ntk` / `ntk_statistics`: K = J Jᵀ on n examples (Lyle et al. 2024 use 64), J the
  Jacobian of the network outputs with respect to all parameters. With several outputs per example,
  'trace' mode sums the per-output kernels (K_ij = Σ_c ⟨∂f_c(x_i), ∂f_c(x_j)⟩), 'mean' uses the
  kernel of the mean output (one gradient per example, C times cheaper).
* `plasticity_probe_loss`: from a copy of the parameters, fit fixed random targets with Adam for
  a fixed budget and report the mean squared error reached (Lyle et al. 2023).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from plasticity import linalg

Predict = Callable[[Any, jax.Array], jax.Array]  # (params, inputs) -> (n, outputs) array

NTK_MODES = ("trace", "mean")


def _tree_dot(a: Any, b: Any) -> jax.Array:
    return sum(
        jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def _tree_scale(tree: Any, scale: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda x: x * scale.astype(x.dtype), tree)


def random_direction(params: Any, rng: jax.Array) -> Any:
    """A Gaussian pytree shaped like `params`, scaled to unit global norm."""
    flat, unravel = ravel_pytree(params)
    noise = jax.random.normal(rng, flat.shape, flat.dtype)
    return unravel(noise / jnp.linalg.norm(noise))


def hessian_vector_product(loss: Callable[[Any], jax.Array], params: Any, vector: Any) -> Any:
    """H v for the Hessian H of `loss` at `params` (forward-mode over reverse-mode)."""
    return jax.jvp(jax.grad(loss), (params,), (vector,))[1]


def hessian_power_iteration(
    loss: Callable[[Any], jax.Array], params: Any, rng: jax.Array, iterations: int = 20
) -> tuple[jax.Array, jax.Array]:
    """(λ, relative change): the top Hessian eigenvalue by power iteration and its convergence.

    Starts from a random unit direction v₀ drawn from `rng`; iteration k computes u = H v_{k−1},
    the Rayleigh quotient λ_k = v_{k−1}ᵀ u and v_k = u/‖u‖. Returns λ_K after exactly K =
    `iterations` HVPs, and |λ_K − λ_{K−1}| / |λ_K| (λ₀ = 0, so one iteration reports 1).

    The error of λ_K shrinks like (λ₂/λ₁)^{2K}, so a fixed K is accurate only for a well-separated
    top eigenvalue: with λ₂/λ₁ = 0.89, 20 iterations leave it 0.1% low. The relative change of the
    last iteration is the visible symptom: when it is not small against the accuracy you need,
    the value has not converged (the remaining error is roughly change / (1 − (λ₂/λ₁)²)).
    Converges to the eigenvalue of largest magnitude; in trained networks that is the positive
    sharpness outlier.
    """
    if iterations < 1:
        raise ValueError(f"hessian_iterations must be >= 1, got {iterations}.")

    def step(_, carry):
        vector, eigenvalue, _ = carry
        product = hessian_vector_product(loss, params, vector)
        new_eigenvalue = _tree_dot(vector, product)
        norm = jnp.sqrt(_tree_dot(product, product))
        return _tree_scale(product, 1.0 / jnp.maximum(norm, 1e-30)), new_eigenvalue, eigenvalue

    start = random_direction(params, rng)
    zero = jnp.zeros([], jax.eval_shape(_tree_dot, start, start).dtype)  # the parameters' float
    _, eigenvalue, previous = jax.lax.fori_loop(0, iterations, step, (start, zero, zero))
    change = jnp.abs(eigenvalue - previous) / jnp.maximum(jnp.abs(eigenvalue), 1e-30)
    return eigenvalue, change


def hessian_top_eigenvalue(
    loss: Callable[[Any], jax.Array], params: Any, rng: jax.Array, iterations: int = 20
) -> jax.Array:
    """The top Hessian eigenvalue of `hessian_power_iteration`, without its convergence check."""
    return hessian_power_iteration(loss, params, rng, iterations)[0]


def _flat_rows(tree: Any, rows: int) -> jax.Array:
    return jnp.concatenate([x.reshape(rows, -1) for x in jax.tree_util.tree_leaves(tree)], axis=1)


def empirical_ntk(
    predict: Predict, params: Any, inputs: jax.Array, mode: str = "trace"
) -> jax.Array:
    """The (n, n) empirical neural tangent kernel of `predict` on the n examples of `inputs`.

    `predict(params, x)` returns an (n, C) array. 'trace' mode: K = Σ_c J_c J_cᵀ over the C
    outputs (computed one output at a time, so memory holds one n × P Jacobian); 'mean' mode: the
    kernel of the mean over outputs.
    """
    if mode not in NTK_MODES:
        raise ValueError(f"Unknown NTK mode {mode!r}: expected one of {', '.join(NTK_MODES)}.")
    n = inputs.shape[0]

    def single(p, x):
        return predict(p, x[None])[0].reshape(-1)

    def kernel_of(scalar_output):
        jacobian = jax.vmap(jax.grad(scalar_output), in_axes=(None, 0))(params, inputs)
        rows = _flat_rows(jacobian, n)
        return rows @ rows.T

    if mode == "mean":
        return kernel_of(lambda p, x: jnp.mean(single(p, x)))
    num_outputs = jax.eval_shape(single, params, inputs[0]).shape[0]

    def add_output(kernel, c):
        return kernel + kernel_of(lambda p, x: single(p, x)[c]), None

    first = jax.eval_shape(lambda: kernel_of(lambda p, x: single(p, x)[0]))  # the params' float
    kernel, _ = jax.lax.scan(add_output, jnp.zeros((n, n), first.dtype), jnp.arange(num_outputs))
    return kernel


def spectrum_effective_rank(values: jax.Array) -> jax.Array:
    """exp of the entropy of values/‖values‖₁ (values ≥ 0): the same for any positive scale of
    the spectrum; 0 for an all-zero spectrum, NaN for a non-finite one."""
    total = jnp.sum(values)
    p = values / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    rank = jnp.where(total > 0, jnp.exp(entropy), 0.0)
    return jnp.where(jnp.isfinite(total), rank, jnp.nan)


def ntk_statistics(kernel: jax.Array) -> dict[str, jax.Array]:
    """Trace, top eigenvalue, effective rank (of the eigenvalues) and off-diagonal mass of K, and
    the Jacobian norm √(tr K / n).

    Off-diagonal mass is Σ_{i≠j}|K_ij| / Σ_ij|K_ij|: it falls towards 0 as the kernel collapses
    onto its diagonal (examples stop sharing gradient directions). Since K_ii = ‖J(x_i)‖²_F, the
    Jacobian norm is the root mean square over the n inputs of the parameter Jacobian's Frobenius
    norm (NaP's third label-reset curve: it shrinks like 1/‖W‖ as scale-invariant weights grow);
    of a 'mean'-mode kernel, it is that of the mean output's gradient.
    """
    eigenvalues = jnp.clip(linalg.eigvalsh(kernel), 0.0, None)  # vmap-safe on CPU
    absolute = jnp.abs(kernel)
    total = jnp.sum(absolute)
    diagonal = jnp.sum(jnp.diagonal(absolute))
    return {
        "ntk_trace": jnp.trace(kernel),
        "ntk_top_eigenvalue": eigenvalues[-1],
        "ntk_effective_rank": spectrum_effective_rank(eigenvalues),
        "ntk_offdiagonal_mass": (total - diagonal) / jnp.maximum(total, 1e-30),
        "jacobian_norm": jnp.sqrt(jnp.maximum(jnp.trace(kernel), 0.0) / kernel.shape[0]),
    }


def plasticity_probe_loss(
    predict: Predict,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    steps: int,
    learning_rate: float = 1e-3,
) -> jax.Array:
    """Mean squared error on (`inputs`, `targets`) after `steps` full-batch Adam steps from `params`.

    The parameters are a copy: nothing of the caller's state changes. Lower is more plastic; compare
    with the same probe from a fresh initialization.
    """
    if steps < 1:
        raise ValueError(f"probe_steps must be >= 1, got {steps}.")
    tx = optax.adam(learning_rate)

    def loss(p):
        return jnp.mean(jnp.square(predict(p, inputs) - targets))

    def step(carry, _):
        p, state = carry
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    (fitted, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return loss(fitted)
