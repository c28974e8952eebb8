"""Tests of plasticity.linalg: vmapped decompositions that run one matrix per LAPACK call on CPU."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from plasticity import linalg


def _matrices(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_values_equal_jax_numpy_unbatched_and_under_nested_vmap():
    x = _matrices((3, 2, 16, 8))
    np.testing.assert_array_equal(
        linalg.svdvals(x[0, 0]), jnp.linalg.svd(x[0, 0], compute_uv=False)
    )
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(jax.vmap(linalg.svdvals)))(x), jnp.linalg.svd(x, compute_uv=False)
    )
    gram = x @ jnp.swapaxes(x, -1, -2)
    np.testing.assert_array_equal(
        jax.vmap(jax.vmap(linalg.eigvalsh))(gram), jnp.linalg.eigvalsh(gram)
    )


def test_vmapped_lapack_calls_on_cpu_take_one_matrix():
    """A batched LAPACK call can deadlock XLA:CPU's thread pool (see the module docstring): every
    call in the lowered CPU program has the shape of one matrix."""
    x = _matrices((4, 2, 64, 32))
    text = jax.jit(jax.vmap(jax.vmap(linalg.svdvals))).lower(x).as_text()
    calls = [line for line in text.splitlines() if "@lapack_" in line]
    assert calls and all(re.search(r"\(tensor<64x32xf32>\)", line) for line in calls), calls
    gram = x @ jnp.swapaxes(x, -1, -2)
    text = jax.jit(jax.vmap(jax.vmap(linalg.eigvalsh))).lower(gram).as_text()
    calls = [line for line in text.splitlines() if "@lapack_" in line]
    assert calls and all(re.search(r"\(tensor<64x64xf32>\)", line) for line in calls), calls
