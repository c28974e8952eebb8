"""Process-wide JAX settings the launchers apply before building anything.

* Threefry random bits use the non-partitionable layout unless ``JAX_THREEFRY_PARTITIONABLE`` is
  set in the environment: on XLA:CPU the partitionable layout makes every parameter
  initialisation compile several times slower (a ResNet init 11 s instead of 2 s), while the
  seed-parallel programs of this testbed draw per-seed keys and never need it. Random values
  differ between the two layouts, so a run and its resumption must use the same one: the
  launchers always apply this function.
* BLAS/LAPACK threads (used by XLA:CPU for the SVDs and eigen-decompositions of the
  diagnostics) are limited to one, since their pool otherwise fights XLA's own threads (the
  default diagnostics cost 2.4× the training time instead of 1.03×).
"""

from __future__ import annotations

import os

import jax


def apply_runtime_defaults() -> None:
    """Sets the random-bit layout and the BLAS thread limit described in the module docstring."""
    if "JAX_THREEFRY_PARTITIONABLE" not in os.environ:
        jax.config.update("jax_threefry_partitionable", False)
    from plasticity import diagnostics  # noqa: PLC0415 - loads LAPACK only when a launcher runs

    try:
        diagnostics.limit_blas_threads(1)
    except ValueError:
        pass  # threadpoolctl missing: OPENBLAS_NUM_THREADS=1 can still be exported by the user
