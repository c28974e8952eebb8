"""Tests of mesh specs and placement (one CPU device here; multi-device runs are covered by
the sharded-trainer test in tests/benchmarks/test_continual.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from plasticity import mesh


@pytest.mark.parametrize("spec, expected", [
    ("auto", {}), ("", {}), ("seed:4", {"seed": 4}), ("seed:4, data:2", {"seed": 4, "data": 2}),
])
def test_parse_mesh_spec(spec, expected):
  assert mesh.parse_mesh_spec(spec) == expected


@pytest.mark.parametrize("spec", ["seed", "seed:0", "seed:x", "seed:2,seed:2", "1a:2"])
def test_bad_mesh_specs_raise_one_line(spec):
  with pytest.raises(ValueError, match="mesh spec") as error:
    mesh.parse_mesh_spec(spec)
  assert "\n" not in str(error.value)


def test_largest_divisor_at_most():
  assert [mesh.largest_divisor_at_most(n, 4) for n in (1, 2, 3, 6, 8, 9)] == [1, 2, 3, 3, 4, 3]


def test_auto_mesh_and_placement_on_the_available_devices():
  devices = jax.devices()
  built = mesh.make_mesh("auto", num_runs=len(devices) * 3)
  assert built.axis_names == ("seed",) and built.shape["seed"] == len(devices)
  assert mesh.format_mesh(built) == f"seed:{len(devices)}"
  tree = {"keys": np.arange(len(devices) * 6).reshape(-1, 2), "lr": np.ones(len(devices) * 3)}
  placed = mesh.shard_leading_axis(tree, built)
  np.testing.assert_array_equal(np.asarray(placed["keys"]), tree["keys"])
  assert placed["lr"].sharding.spec == jax.sharding.PartitionSpec("seed")
  copied = mesh.replicate({"x": np.arange(3.0)}, built)
  assert copied["x"].sharding.is_fully_replicated


def test_too_many_devices_and_unknown_axis_raise():
  with pytest.raises(ValueError, match="needs"):
    mesh.make_mesh(f"seed:{len(jax.devices()) + 1}")
  built = mesh.make_mesh("seed:1")
  with pytest.raises(ValueError, match="no axis 'data'"):
    mesh.leading_axis_sharding(built, "data")
