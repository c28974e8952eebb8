"""Checkpoints resumed on another layout of devices and processes: a save sharded over two
devices restored by a one-device process, and a step a process saved alone (NumPy format) read
by the collective (Orbax) checkpointer a multi-process job uses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np

from plasticity import checkpointing

REPO = Path(__file__).resolve().parents[2]

_SAVE_SHARDED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from plasticity import checkpointing
    mesh = jax.make_mesh((2,), ("seed",))
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    w = jax.device_put(w, NamedSharding(mesh, PartitionSpec("seed")))
    with checkpointing.Checkpointer(sys.argv[1]) as saver:
        saver.save(5, {{"w": w, "count": np.int32(3)}}, {{"frames": 5}})
    """
)

TARGET = {
    "w": jax.ShapeDtypeStruct((2, 4), np.float32),
    "count": jax.ShapeDtypeStruct((), np.int32),
}


def test_a_save_sharded_over_two_devices_restores_on_one_without_shardings_given(tmp_path):
    """A run's template (`jax.eval_shape`) carries no sharding without a mesh; Orbax refused it
    for a save made on another topology ('Topology mismatch') and the run started over."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("JAX_NUM_CPU_DEVICES", None)
    code = _SAVE_SHARDED.format(repo=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with checkpointing.for_directory(tmp_path) as restorer:
        assert isinstance(restorer, checkpointing.Checkpointer)  # an Orbax work dir stays Orbax
        tree, metadata = restorer.restore(TARGET)
    np.testing.assert_array_equal(tree["w"], np.arange(8, dtype=np.float32).reshape(2, 4))
    assert int(tree["count"]) == 3 and metadata == {"frames": 5}


def test_a_step_saved_alone_resumes_under_collective_saves(tmp_path):
    """A single-process run's NumPy checkpoint, resumed as a multi-process job (whose processes
    save together, through Orbax): read and placed, then later steps saved by Orbax beside it."""
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    checkpointing.LocalCheckpointer(tmp_path).save(256, {"w": w, "count": np.int32(3)}, {"at": 256})
    with checkpointing.for_directory(tmp_path, saves_alone=False) as collective:
        assert collective.latest_step() == 256
        assert collective.restore_metadata() == {"at": 256}
        tree, metadata = collective.restore(TARGET)
        np.testing.assert_array_equal(tree["w"], w)
        assert int(tree["count"]) == 3 and metadata == {"at": 256}
        collective.save(512, {"w": w + 1, "count": np.int32(4)}, {"at": 512})
    with checkpointing.for_directory(tmp_path, saves_alone=False) as collective:
        assert collective.all_steps() == [256, 512]
        tree, metadata = collective.restore(TARGET)
        np.testing.assert_array_equal(tree["w"], w + 1)
        assert metadata == {"at": 512}
        assert collective.restore(TARGET, step=256)[1] == {"at": 256}
