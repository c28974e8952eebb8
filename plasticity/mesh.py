"""Device meshes with named axes, and placing arrays on them.

A mesh spec names axes and their sizes, ``"seed:4"`` or ``"seed:4,data:2"``; one axis may be
``auto`` (``"seed:auto,data:2"``: every device not taken by the other axes); ``"auto"`` alone
puts every device (or the largest count that divides the number of runs) on a ``seed`` axis.
Two axes have a meaning:

* ``seed``: independent runs (seeds × hyper-parameter grid points). Arrays with a leading axis
  of runs are split over it with a `NamedSharding`; no communication between its devices.
* ``data``: the examples of one learner's batch. A batch is split over it (`shard_batch`) while
  the parameters are replicated (`replicate`); `jit` then computes every device's share of the
  gradient and all-reduces it (see `agents.parallel`).

Everything else (datasets, parameters of a data-parallel learner) is replicated. `jit` runs one
program over the whole mesh and keeps the outputs sharded the same way, so one config runs on
one CPU, several GPUs or a TPU slice unchanged.

Arrays are built with `jax.make_array_from_callback` from a host copy that every process holds,
which also works when the mesh spans several processes (each one fills its own shards). A batch
that each process draws for itself becomes one global array with `global_batch`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seed"
DATA_AXIS = "data"
KNOWN_AXES = (SEED_AXIS, DATA_AXIS)
AUTO = "auto"
AUTO_SIZE = -1  # an axis given as 'name:auto' in a parsed spec


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """``"seed:4,data:2"`` → {'seed': 4, 'data': 2}; ``"auto"`` → {} (decided from the devices).

    An axis given as ``name:auto`` maps to AUTO_SIZE (sized by `make_mesh`); at most one may be.
    Axis names are those of KNOWN_AXES, so a typo ('sed:4') fails here and not on a pod.
    """
    spec = str(spec).strip()
    if spec in ("", AUTO):
        return {}
    axes: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, size = part.strip().partition(":")
        size = size.strip()
        if (
            not sep
            or not name.isidentifier()
            or not (size == AUTO or size.isdigit() and int(size) >= 1)
        ):
            raise ValueError(
                f"bad mesh spec {spec!r}: expected 'auto' or comma-separated "
                f"'axis:size' entries with sizes >= 1 or 'auto', e.g. 'seed:4' or "
                f"'seed:4,data:2'"
            )
        if name not in KNOWN_AXES:
            raise ValueError(
                f"bad mesh spec {spec!r}: unknown axis {name!r}; known axes: "
                f"{', '.join(KNOWN_AXES)}"
            )
        if name in axes:
            raise ValueError(f"bad mesh spec {spec!r}: axis {name!r} given twice")
        axes[name] = AUTO_SIZE if size == AUTO else int(size)
    if list(axes.values()).count(AUTO_SIZE) > 1:
        raise ValueError(f"bad mesh spec {spec!r}: at most one axis may be 'auto'")
    return axes


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest d <= limit with n % d == 0 (1 when n <= 0)."""
    if n <= 0:
        return 1
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def make_mesh(
    spec: str = AUTO, devices: Sequence[jax.Device] | None = None, *, num_runs: int | None = None
) -> Mesh:
    """A mesh over (the first prod(sizes) of) `devices`, default `jax.devices()`.

    With ``"auto"`` every device goes on the ``seed`` axis, or, when `num_runs` is given, the
    largest device count that divides it (so the run axis splits evenly). An axis sized ``auto``
    takes the devices the other axes leave (for ``seed`` with `num_runs`, the largest count
    that also divides the runs). `devices` default to every device of every process.
    """
    devices = list(jax.devices() if devices is None else devices)
    axes = parse_mesh_spec(spec) or {SEED_AXIS: AUTO_SIZE}
    for name, size in axes.items():
        if size == AUTO_SIZE:
            others = math.prod(s for n, s in axes.items() if n != name)
            free = len(devices) // others
            if free < 1:
                raise ValueError(
                    f"mesh {spec!r} needs {others} devices for its fixed axes, only "
                    f"{len(devices)} available ({devices[0].platform})"
                )
            if name == SEED_AXIS and num_runs is not None:
                free = largest_divisor_at_most(num_runs, free)
            axes[name] = free
    needed = math.prod(axes.values())
    if needed > len(devices):
        raise ValueError(
            f"mesh {format_mesh(axes)} needs {needed} devices, only {len(devices)} "
            f"available ({devices[0].platform})"
        )
    return Mesh(device_grid(devices[:needed], tuple(axes.values())), tuple(axes))


def device_grid(devices: Sequence[jax.Device], shape: tuple[int, ...]) -> np.ndarray:
    """`devices` laid out in an array of `shape`, in the order JAX picks for fast collectives
    (rings on TPU slices); the given order when JAX has no topology-aware layout for them."""
    try:
        return mesh_utils.create_device_mesh(shape, devices=list(devices))
    except (ValueError, NotImplementedError, AssertionError):
        return np.asarray(devices, dtype=object).reshape(shape)


def format_mesh(axes: dict[str, int] | Mesh) -> str:
    """'seed:4,data:2' for a mesh or an axes dict."""
    if isinstance(axes, Mesh):
        axes = dict(axes.shape)
    return ",".join(f"{name}:{size}" for name, size in axes.items())


def leading_axis_sharding(mesh: Mesh, axis: str = SEED_AXIS) -> NamedSharding:
    """Splits an array's leading axis over mesh axis `axis`, replicating it over the others."""
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh {format_mesh(mesh)} has no axis {axis!r}")
    return NamedSharding(mesh, PartitionSpec(axis))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy of the array on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def _place(leaf: Any, sharding: NamedSharding) -> jax.Array:
    host = np.asarray(jax.device_get(leaf))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_leading_axis(tree: Any, mesh: Mesh, axis: str = SEED_AXIS) -> Any:
    """Places every leaf of `tree` with its leading axis split over mesh axis `axis`.

    Raises a one-line ValueError when a leading axis does not divide evenly.
    """
    sharding = leading_axis_sharding(mesh, axis)
    size = mesh.shape[axis]

    def place(leaf):
        length = np.shape(leaf)[0] if np.ndim(leaf) else None
        if length is None or length % size:
            raise ValueError(
                f"cannot split a leading axis of {length} over mesh axis "
                f"{axis!r} of size {size}; use a run count divisible by it or "
                f"mesh 'auto'"
            )
        return _place(leaf, sharding)

    return jax.tree.map(place, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a full copy of every leaf of `tree` on every device of `mesh`.

    Datasets of the seed-parallel trainer, and the parameters and optimizer state of a
    data-parallel learner.
    """
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda leaf: _place(leaf, sharding), tree)


def check_seed_split(mesh: Mesh, spec: str, num_runs: int, runs: str) -> None:
    """One-line ValueError unless ``mesh`` (made from ``spec``) has a ``seed`` axis that splits
    ``num_runs`` independent runs evenly and, in a multi-process job, spans every process's
    devices; ``runs`` names that count in the message ('num_seeds=3')."""
    if SEED_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh {spec!r} has no {SEED_AXIS!r} axis to spread the runs over "
            "(e.g. 'seed:2' or 'auto')"
        )
    size = axis_size(mesh, SEED_AXIS)
    if num_runs % size:
        raise ValueError(
            f"mesh {spec!r} puts {size} devices on the seed axis, which does not divide {runs}; "
            "use a run count divisible by it or mesh 'auto'"
        )
    if jax.process_count() > 1 and mesh.size != jax.device_count():
        raise ValueError(
            f"a job of {jax.process_count()} processes with {jax.device_count()} devices needs "
            f"a run count that fills them all: {runs} fill {mesh.size} of them"
        )


def axis_size(mesh: Mesh, axis: str) -> int:
    """Devices along mesh axis `axis` (1 when the mesh has no such axis)."""
    return int(dict(mesh.shape).get(axis, 1))


def batch_sharding(
    mesh: Mesh, axis: str = DATA_AXIS, *, seed_axis: str | None = None
) -> NamedSharding:
    """Splits a batch's example axis over `axis`; with `seed_axis`, the batch has a leading run
    axis (runs, examples, ...) split over that one too. Axes the mesh lacks are left whole."""
    names = set(mesh.axis_names)
    example = axis if axis in names else None
    if seed_axis is None:
        return NamedSharding(mesh, PartitionSpec(example))
    return NamedSharding(mesh, PartitionSpec(seed_axis if seed_axis in names else None, example))


def check_batch_divides(batch_size: int, mesh: Mesh, axis: str = DATA_AXIS) -> None:
    """One-line ValueError unless `batch_size` splits evenly over mesh axis `axis`."""
    size = axis_size(mesh, axis)
    if batch_size % size:
        raise ValueError(
            f"batch size {batch_size} does not split over mesh axis {axis!r} of size "
            f"{size}; use a batch size divisible by it"
        )


def shard_batch(
    tree: Any, mesh: Mesh, axis: str = DATA_AXIS, *, seed_axis: str | None = None
) -> Any:
    """Places a batch that every process holds whole with its example axis split over `axis`.

    Each device then holds batch_size / |axis| examples (leading dimension of every leaf, or the
    second one after a run axis when `seed_axis` is given).
    """
    sharding = batch_sharding(mesh, axis, seed_axis=seed_axis)
    position = 0 if seed_axis is None else 1

    def place(leaf):
        shape = np.shape(leaf)
        if len(shape) <= position:
            raise ValueError(
                f"a batch leaf of shape {shape} has no example axis at position {position}"
            )
        check_batch_divides(shape[position], mesh, axis)
        return _place(leaf, sharding)

    return jax.tree.map(place, tree)


def global_batch(local_tree: Any, mesh: Mesh, axis: str = DATA_AXIS) -> Any:
    """One global batch from the batch each process drew for itself (multi-host data parallel).

    Every process passes its own (local batch, ...) leaves; the global batch concatenates them in
    process order along the example axis, split over `axis`. On one process it equals
    `shard_batch`. Each process's examples must fill exactly its devices' shards.
    """
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), local_tree
    )


def map_runs(fn: Callable, runs: Any, runs_per_batch: int) -> Any:
    """``fn`` over the leading axis of the pytree ``runs``: vectorized (`vmap`) with
    ``runs_per_batch`` 0, else that many at a time (`lax.map`). One at a time maps ``fn`` itself,
    not a `vmap` of one: a batch axis of size 1 still lays the weight gradients out transposed,
    and every optimizer step then reads them across the grain (1.4x slower on a CPU)."""
    if runs_per_batch == 0:
        return jax.vmap(fn)(runs)
    if runs_per_batch == 1:
        return jax.lax.map(fn, runs)
    return jax.lax.map(fn, runs, batch_size=runs_per_batch)


def cond_when_any(pred: Any, true_fn: Callable, false_fn: Callable, operand: Any) -> Any:
    """``lax.cond(pred, true_fn, false_fn, operand)`` that stays a branch under `vmap`.

    Vmapped, a `lax.cond` on a batched predicate becomes a select: both branches run for every
    run at every call. Here the batch runs ``true_fn`` (for all its runs, each keeping its own
    branch's result) only when some run's predicate holds, and ``false_fn`` alone otherwise, so
    a rare, costly branch (a fresh network drawn when continual backprop replaces a unit) costs
    nothing while no run takes it. Each run's result is the one `lax.cond` gives. Nested vmaps
    nest the rule; under `lax.map` or unbatched it is `lax.cond` itself.

    Limits of `custom_vmap`: ``true_fn`` and ``false_fn`` must take everything traced through
    ``operand`` (no closure over a batched value), may not use a vmap's axis name (no collective
    over the runs), and the whole is not reverse-differentiable (forward mode only): for
    parameter rewrites between updates, not inside a loss."""

    @jax.custom_batching.custom_vmap
    def cond(pred, operand):
        return jax.lax.cond(pred, true_fn, false_fn, operand)

    @cond.def_vmap
    def batched_cond(axis_size, in_batched, preds, operands):
        axes = jax.tree.map(lambda batched: 0 if batched else None, in_batched[1])
        each = lambda fn: jax.vmap(fn, in_axes=(axes,), axis_size=axis_size)  # noqa: E731
        preds = jnp.broadcast_to(preds, (axis_size,))

        def some(preds_and_operands):
            preds, operands = preds_and_operands
            pick = lambda t, f: jnp.where(preds.reshape((-1,) + (1,) * (t.ndim - 1)), t, f)  # noqa: E731
            return jax.tree.map(pick, each(true_fn)(operands), each(false_fn)(operands))

        none = lambda preds_and_operands: each(false_fn)(preds_and_operands[1])  # noqa: E731
        out = cond_when_any(jnp.any(preds), some, none, (preds, operands))
        return out, jax.tree.map(lambda _: True, out)

    return cond(pred, operand)


def over_leading_axis(
    fn: Callable, mesh: Mesh, num_split_args: int, *, runs_per_batch: int = 0, axis: str = SEED_AXIS
) -> Callable:
    """``fn`` applied independently along the leading axis of its first `num_split_args` arguments.

    The other arguments are shared (replicated). Each device of `axis` handles its own slice with
    no communication (`jax.shard_map`); within a device the runs are vectorized with `vmap`
    (``runs_per_batch=0``) or processed ``runs_per_batch`` at a time by `lax.map` — on a CPU,
    where XLA's batched matrix products are slower than separate ones, ``runs_per_batch=1``
    gives the speed of separate runs inside one compiled program. Outputs keep the leading axis,
    split the same way. Wrap the result in `jax.jit`.
    """
    if runs_per_batch < 0:
        raise ValueError(f"runs_per_batch must be >= 0, got {runs_per_batch}")
    split = PartitionSpec(axis)

    def local(*args):
        runs, shared = args[:num_split_args], args[num_split_args:]
        return map_runs(lambda per_run: fn(*per_run, *shared), tuple(runs), runs_per_batch)

    def program(*args):
        specs = (split,) * num_split_args + (PartitionSpec(),) * (len(args) - num_split_args)
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=split, check_vma=False)(
            *args
        )

    return program
