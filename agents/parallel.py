"""Data-parallel learner updates: one learner's batch split over the ``data`` axis of a mesh.

The learner's functions (`agents.learner`) are pure and global: `update` takes a whole batch.
Here they are compiled with `jax.jit` over a device mesh (`plasticity.mesh`) with the batch and
the per-example weights split over ``data`` and everything else (parameters, optimizer state,
target parameters, RNG key) replicated. XLA's SPMD partitioner then gives every device its share
of the forward and backward passes and inserts the all-reduce that sums the gradient; the
optimizer update runs replicated, so parameters stay identical on every device. The program means
the same as the single-device step on the full batch (random draws included: per-example noise
of noisy nets is drawn as one global array), and equals it up to the order of float additions.

Three entry points:

* `data_parallel_learner(learner, mesh)`: the same `Learner` whose ``update`` pins those
  shardings inside any jitted caller (a learn step, a fully jitted loop);
* `make_data_parallel_update(learner, mesh)`: ``update(state, batch, weights, rng)`` jitted;
  with ``seed_axis`` it is vmapped over a leading run axis of the state and the batch, runs split
  over ``seed`` and each run's batch over ``data`` (a mesh such as ``seed:4,data:2``, built by
  the caller: the launchers split only ``seed``);
* `make_data_parallel_learn_step(learner, config, mesh)`: `agents.learner.make_learn_step` with
  a replicated replay: every device draws the same indices and gathers only its share of the
  sampled batch; priorities are written back everywhere.

Inputs are placed with `plasticity.mesh.replicate` (state, replay) and `plasticity.mesh.shard_batch`
(a batch every process holds) or `plasticity.mesh.global_batch` (several hosts, each sampling its
own replay: the global batch is the concatenation of the processes' batches). The batch size must
split evenly over ``data``. On fake CPU devices block on each step's result (e.g. read the loss)
before dispatching the next: XLA:CPU's all-reduce rendezvous times out when many steps are queued.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import ml_collections
from jax.sharding import Mesh

from agents.learner import Batch, Learner, make_learn_step
from plasticity import mesh as mesh_lib
from plasticity.train_state import TrainState


def data_parallel_learner(learner: Learner, mesh: Mesh, axis: str = mesh_lib.DATA_AXIS) -> Learner:
    """`learner` whose ``update`` splits the batch and weights over `axis`, replicating the state.

    Only shardings change (`jax.lax.with_sharding_constraint`), not what is computed: inside a
    jitted program the update equals the single-device one on the whole batch.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh {mesh_lib.format_mesh(mesh)} has no axis {axis!r}")
    split = mesh_lib.batch_sharding(mesh, axis)
    whole = mesh_lib.replicated_sharding(mesh)

    def constrain(tree: Any, sharding) -> Any:
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    def update(
        state: TrainState, batch: Batch, weights: jax.Array, rng: jax.Array
    ) -> tuple[TrainState, dict[str, Any]]:
        batch = constrain(batch, split)
        weights = constrain(weights, split)
        state, aux = learner.update(constrain(state, whole), batch, weights, rng)
        per_example = constrain(aux["per_example"], split)
        return constrain(state, whole), {**aux, "per_example": per_example}

    return learner._replace(update=update)


def make_data_parallel_update(
    learner: Learner,
    mesh: Mesh,
    axis: str = mesh_lib.DATA_AXIS,
    *,
    seed_axis: str | None = None,
    donate: bool = False,
) -> Callable[[TrainState, Batch, jax.Array, jax.Array], tuple[TrainState, dict[str, Any]]]:
    """``update(state, batch, weights, rng) -> (state, aux)`` jitted over `mesh`, batch split.

    With `seed_axis` every argument has a leading run axis (``vmap`` over runs) split over that
    mesh axis, and each run's batch over `axis`. ``donate=True`` lets the new state reuse the old
    one's buffers (the caller must not read the old state afterwards). A batch that does not
    split evenly over `axis` is a one-line ValueError at the call, however the state is placed.
    """
    parallel = data_parallel_learner(learner, mesh, axis)
    update = parallel.update
    if seed_axis is not None:
        if seed_axis not in mesh.axis_names:
            raise ValueError(f"mesh {mesh_lib.format_mesh(mesh)} has no axis {seed_axis!r}")
        update = jax.vmap(update, spmd_axis_name=seed_axis)
    jitted = jax.jit(update, donate_argnums=(0,) if donate else ())
    batch_dim = 0 if seed_axis is None else 1

    def check(weights) -> None:
        mesh_lib.check_batch_divides(np.shape(weights)[batch_dim], mesh, axis)

    def checked_update(state, batch, weights, rng):
        check(weights)
        return jitted(state, batch, weights, rng)

    def lower(state, batch, weights, rng):
        check(weights)
        return jitted.lower(state, batch, weights, rng)

    checked_update.lower = lower  # as a jitted function's: compile ahead of time, read the HLO
    return checked_update


def make_data_parallel_learn_step(
    learner: Learner,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    axis: str = mesh_lib.DATA_AXIS,
) -> Callable[..., tuple[TrainState, Any, dict[str, Any]]]:
    """`agents.learner.make_learn_step` over `mesh` (not jitted: jit it, donating state and replay).

    ``learn_step(state, replay, rng, importance_exponent) -> (state, replay, aux)`` with a
    replicated replay; the sampled batch is split over `axis`. Raises a one-line ValueError when
    ``config.learner.batch_size`` does not split evenly over `axis`.
    """
    mesh_lib.check_batch_divides(int(config.learner.batch_size), mesh, axis)
    return make_learn_step(data_parallel_learner(learner, mesh, axis), config)
