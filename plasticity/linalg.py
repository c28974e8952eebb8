"""Matrix decompositions of the diagnostics that cannot deadlock XLA:CPU when vmapped.

jaxlib 0.10's CPU LAPACK kernels (SVD, eigh, QR, LU, ...) split a *batched* call over XLA's
intra-op thread pool (``jax::ParallelBatchMap``, taken when batch × 10·m·n·min(m, n) ≥ 2·10⁵
flops, i.e. one 64×32 matrix already): the calling thread schedules the chunks on that pool and
blocks until they finish. The calling thread is itself a pool thread whenever XLA's thunk executor
has handed it independent work (the SVDs of different layers of one diagnostics call), and the
pool has one thread per core. So when every pool thread sits in such a call at the same time, the
chunks they wait for are never run: the program hangs forever, at no CPU load, and SIGTERM cannot
stop it (the launcher's handler only runs between chunks). The continual launcher met this with
two runs vmapped on each of 2 CPU devices on a 2-core machine (one pool thread per device, both
in a batched ``lapack_sgesdd_ffi``; ``--config.run.runs_per_batch=1`` or one device did not hang).

The functions here take one matrix; under `jax.vmap` they run the batch as a loop (`jax.lax.map`)
on CPU, so every LAPACK call has batch 1 and runs inline, and keep the batched call on other
platforms (GPU solvers are batched kernels, with no such pool). The values are those of the
`jax.numpy.linalg` function, matrix for matrix. Not differentiable (diagnostics only).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def one_matrix_per_call(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """`fn` of one matrix whose vmap is a loop of unbatched calls on CPU (see the module doc)."""

    @jax.custom_batching.custom_vmap
    def call(x):
        return fn(x)

    @call.def_vmap
    def call_batched(axis_size, in_batched, x):
        del axis_size
        if not in_batched[0]:
            return call(x), False
        return jax.lax.platform_dependent(
            x, cpu=lambda x: jax.lax.map(call, x), default=jax.vmap(fn)
        ), True

    return call


svdvals = one_matrix_per_call(lambda x: jnp.linalg.svd(x, compute_uv=False))
svdvals.__doc__ = "Singular values of one matrix, descending (`jnp.linalg.svd`, no vectors)."
eigvalsh = one_matrix_per_call(jnp.linalg.eigvalsh)
eigvalsh.__doc__ = "Eigenvalues of one symmetric matrix, ascending (`jnp.linalg.eigvalsh`)."
