"""Device meshes with named axes, and placing arrays on them.

A mesh spec names axes and their sizes, ``"seed:4"`` or ``"seed:4,data:2"``; ``"auto"`` puts
every device (or the largest count that divides the number of runs) on a ``seed`` axis. Arrays
with a leading axis of runs (seeds × hyper-parameter grid points) are split over the ``seed``
axis with a `NamedSharding`; everything else (datasets) is replicated. `jit` then runs one
program over the whole mesh and keeps the outputs sharded the same way, so one config runs on
one CPU, several GPUs or a TPU slice unchanged.

Arrays are built with `jax.make_array_from_callback` from a host copy that every process holds,
which also works when the mesh spans several processes (each one fills its own shards).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seed"
DATA_AXIS = "data"
AUTO = "auto"


def parse_mesh_spec(spec: str) -> dict[str, int]:
  """``"seed:4,data:2"`` → {'seed': 4, 'data': 2}; ``"auto"`` → {} (decided from the devices)."""
  spec = str(spec).strip()
  if spec in ("", AUTO):
    return {}
  axes: dict[str, int] = {}
  for part in spec.split(","):
    name, sep, size = part.strip().partition(":")
    if not sep or not name.isidentifier() or not size.strip().isdigit() or int(size) < 1:
      raise ValueError(f"bad mesh spec {spec!r}: expected 'auto' or comma-separated "
                       f"'axis:size' entries with sizes >= 1, e.g. 'seed:4' or 'seed:4,data:2'")
    if name in axes:
      raise ValueError(f"bad mesh spec {spec!r}: axis {name!r} given twice")
    axes[name] = int(size)
  return axes


def largest_divisor_at_most(n: int, limit: int) -> int:
  """The largest d <= limit with n % d == 0 (1 when n <= 0)."""
  if n <= 0:
    return 1
  return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def make_mesh(spec: str = AUTO, devices: Sequence[jax.Device] | None = None, *,
              num_runs: int | None = None) -> Mesh:
  """A mesh over (the first prod(sizes) of) `devices`, default `jax.devices()`.

  With ``"auto"`` every device goes on the ``seed`` axis, or, when `num_runs` is given, the
  largest device count that divides it (so the run axis splits evenly).
  """
  devices = list(jax.devices() if devices is None else devices)
  axes = parse_mesh_spec(spec)
  if not axes:
    count = len(devices) if num_runs is None else largest_divisor_at_most(num_runs, len(devices))
    axes = {SEED_AXIS: count}
  needed = math.prod(axes.values())
  if needed > len(devices):
    raise ValueError(f"mesh {format_mesh(axes)} needs {needed} devices, only {len(devices)} "
                     f"available ({devices[0].platform})")
  grid = np.asarray(devices[:needed], dtype=object).reshape(tuple(axes.values()))
  return Mesh(grid, tuple(axes))


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
      raise ValueError(f"cannot split a leading axis of {length} over mesh axis "
                       f"{axis!r} of size {size}; use a run count divisible by it or "
                       f"mesh 'auto'")
    return _place(leaf, sharding)

  return jax.tree.map(place, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a full copy of every leaf of `tree` on every device of `mesh`."""
  sharding = replicated_sharding(mesh)
  return jax.tree.map(lambda leaf: _place(leaf, sharding), tree)


def over_leading_axis(fn: Callable, mesh: Mesh, num_split_args: int, *,
                      runs_per_batch: int = 0, axis: str = SEED_AXIS) -> Callable:
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
    one_run = lambda per_run: fn(*per_run, *shared)
    if runs_per_batch == 0:
      return jax.vmap(lambda *per_run: one_run(per_run))(*runs)
    return jax.lax.map(one_run, tuple(runs), batch_size=runs_per_batch)

  def program(*args):
    specs = (split,) * num_split_args + (PartitionSpec(),) * (len(args) - num_split_args)
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=split,
                         check_vma=False)(*args)

  return program
