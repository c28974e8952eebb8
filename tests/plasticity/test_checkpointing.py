"""Tests of the Orbax checkpoint helpers: round trip, keep-last-k, crash safety."""

from __future__ import annotations

import collections
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity import checkpointing


def _tree(offset: int):
    return {
        "params": {"w": jnp.arange(6.0).reshape(2, 3) + offset},
        "count": jnp.asarray(offset, jnp.int32),
        "rng": jax.random.PRNGKey(offset),
    }


def test_round_trip_is_bit_identical_and_keeps_the_last_k(tmp_path):
    with checkpointing.Checkpointer(tmp_path / "ckpt", max_to_keep=2) as manager:
        assert manager.latest_step() is None
        for step in (1, 2, 3):
            manager.save(step, _tree(step), {"next_task": step, "variant": "a"})
        assert manager.all_steps() == [2, 3]
        tree, metadata = manager.restore(_tree(0))
        assert metadata == {"next_task": 3, "variant": "a"}
        jax.tree.map(
            lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), tree, _tree(3)
        )
        older, older_metadata = manager.restore(_tree(0), step=2)
        assert older_metadata["next_task"] == 2
        np.testing.assert_array_equal(older["params"]["w"], _tree(2)["params"]["w"])
    # A new manager on the same directory sees the same checkpoints (a relaunch).
    with checkpointing.Checkpointer(tmp_path / "ckpt") as manager:
        assert manager.latest_step() == 3
        assert manager.restore_metadata()["next_task"] == 3


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    directory = tmp_path / "ckpt"
    with checkpointing.Checkpointer(directory) as manager:
        manager.save(1, _tree(1), {"next_task": 1})
    # What a crash during a save leaves behind: an unfinalized temporary step directory.
    (directory / "2.orbax-checkpoint-tmp-123").mkdir()
    (directory / "2.orbax-checkpoint-tmp-123" / "garbage").write_text("partial")
    with checkpointing.Checkpointer(directory) as manager:
        assert manager.latest_step() == 1
        tree, metadata = manager.restore(_tree(0))
        assert metadata == {"next_task": 1}
        np.testing.assert_array_equal(tree["params"]["w"], _tree(1)["params"]["w"])


def test_restore_without_checkpoint_and_bad_keep_count_raise(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        checkpointing.Checkpointer(tmp_path / "a", max_to_keep=0)
    with checkpointing.Checkpointer(tmp_path / "b") as manager:
        with pytest.raises(ValueError, match="no checkpoint"):
            manager.restore(_tree(0))


def test_local_checkpoints_round_trip_keep_the_last_k_and_refuse_damage(tmp_path):
    """The per-process checkpoints of a run one process trains alone in a multi-process job."""
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int32(7)}
    local = checkpointing.LocalCheckpointer(tmp_path, max_to_keep=2)
    assert local.latest_step() is None
    for step in (1, 2, 3):
        local.save(step, {**tree, "step": np.int32(step)}, {"done": step})
    assert local.all_steps() == [2, 3] and not list(tmp_path.glob("*.partial"))
    restored, metadata = local.restore(tree)
    np.testing.assert_array_equal(restored["w"], tree["w"])
    assert int(restored["step"]) == 3 and metadata == {"done": 3}
    with pytest.raises(ValueError, match="where float32\\[3, 2\\] was expected"):
        local.restore({"w": np.zeros((3, 2), np.float32), "step": np.int32(0)})
    data = tmp_path / "3" / "tree.npz"
    data.write_bytes(data.read_bytes()[:50])
    with pytest.raises(Exception):
        local.restore(tree)
    assert local.restore_metadata(2) == {"done": 2}


def test_a_damaged_tree_file_is_seen_without_restoring_it(tmp_path):
    """`check_readable` (what a finished run's relaunch asks, restoring nothing) passes an
    intact checkpoint in either format and refuses a truncated, missing or incomplete tree."""
    local = checkpointing.LocalCheckpointer(tmp_path / "local", max_to_keep=3)
    for step in (1, 2, 3):
        local.save(step, {"w": np.arange(4.0), "b": np.int32(step)}, {"done": step})
    local.check_readable()
    data = tmp_path / "local" / "3" / "tree.npz"
    data.write_bytes(data.read_bytes()[:-30])  # the zip's directory, at its end, is gone
    with pytest.raises(ValueError, match=r"^tree.npz: "):
        local.check_readable(3)
    (tmp_path / "local" / "2" / "tree.npz").unlink()
    with pytest.raises(ValueError, match=r"^tree.npz: .*No such file"):
        local.check_readable(2)
    paths = np.array(["['b']", "['w']"])  # two key paths, one array
    np.savez(tmp_path / "local" / "1" / "tree.npz", np.int32(1), paths=paths)
    with pytest.raises(ValueError, match=r"^tree.npz lacks 1 of its 2 arrays$"):
        local.check_readable(1)
    with checkpointing.Checkpointer(tmp_path / "orbax") as manager:
        manager.save(4, {"w": jnp.zeros(2)}, {"done": 4})
        manager.check_readable(4)
        shutil.rmtree(tmp_path / "orbax" / "4" / checkpointing.TREE_ITEM)
        with pytest.raises(ValueError, match="'tree' item is missing"):
            manager.check_readable(4)


def test_local_checkpoints_place_leaves_on_the_target_shardings(tmp_path):
    """A single-process run restores onto its devices, as from an Orbax checkpoint."""
    device = jax.devices()[-1]
    sharding = jax.sharding.SingleDeviceSharding(device)
    local = checkpointing.LocalCheckpointer(tmp_path)
    local.save(1, {"w": jnp.ones((2, 3))})
    target = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32, sharding=sharding)}
    restored, _ = local.restore(target)
    assert isinstance(restored["w"], jax.Array) and restored["w"].sharding == sharding
    host, _ = local.restore({"w": np.zeros((2, 3), np.float32)})
    assert isinstance(host["w"], np.ndarray)


def test_checkpoint_format_follows_what_the_work_dir_holds(tmp_path):
    """An empty or NumPy-format directory is the local format; an Orbax step directory (a
    work dir an Orbax save wrote) keeps Orbax, so that it still resumes."""
    assert checkpointing.is_local_format(tmp_path / "missing")
    checkpointing.LocalCheckpointer(tmp_path / "local").save(4, {"w": np.zeros(2)})
    assert checkpointing.is_local_format(tmp_path / "local")
    with checkpointing.Checkpointer(tmp_path / "orbax") as manager:
        manager.save(4, {"w": jnp.zeros(2)})
    assert not checkpointing.is_local_format(tmp_path / "orbax")


def test_a_local_checkpoint_that_lost_its_tree_keeps_the_others_readable(tmp_path):
    """A step directory without its tree file (a disk that lost it) is no Orbax checkpoint: the
    work dir stays in the local format, so the checkpoint before it still restores."""
    local = checkpointing.LocalCheckpointer(tmp_path, max_to_keep=2)
    local.save(256, {"w": np.full(2, 1.0)}, {"done": 256})
    local.save(512, {"w": np.full(2, 2.0)}, {"done": 512})
    (tmp_path / "512" / checkpointing.LocalCheckpointer.TREE_FILE).unlink()
    assert checkpointing.is_local_format(tmp_path)
    reopened = checkpointing.for_directory(tmp_path, max_to_keep=2, saves_alone=True)
    assert isinstance(reopened, checkpointing.LocalCheckpointer)
    with pytest.raises(FileNotFoundError):
        reopened.restore({"w": np.zeros(2)}, 512)
    restored, metadata = reopened.restore({"w": np.zeros(2)}, 256)
    np.testing.assert_array_equal(restored["w"], [1.0, 1.0])
    assert metadata == {"done": 256}


def test_local_checkpoints_read_without_a_target_as_nested_dicts(tmp_path):
    """Away from the program that wrote it, a checkpoint reads back as Orbax's would: nested
    dicts keyed by field name, dict key and index."""
    State = collections.namedtuple("State", ["params", "step"])
    tree = State(params={"dense": [np.ones(2), np.zeros(3)]}, step=np.int32(5))
    local = checkpointing.LocalCheckpointer(tmp_path)
    local.save(5, tree, {"done": 5})
    nested, metadata = local.restore_nested()
    assert set(nested) == {"params", "step"} and metadata == {"done": 5}
    np.testing.assert_array_equal(nested["params"]["dense"][1], np.zeros(3))
    assert int(nested["step"]) == 5


def test_local_checkpoints_written_without_key_paths_still_restore(tmp_path):
    """A ``tree.npz`` from before the key paths were recorded restores against a target."""
    step = tmp_path / "3"
    step.mkdir()
    np.savez(step / "tree.npz", np.arange(3.0), np.int32(9))
    (step / "metadata.json").write_text('{"done": 3}')
    tree, metadata = checkpointing.LocalCheckpointer(tmp_path).restore(
        {"a": np.zeros(3), "b": np.int32(0)}
    )
    np.testing.assert_array_equal(tree["a"], np.arange(3.0))
    assert int(tree["b"]) == 9 and metadata == {"done": 3}


def test_local_checkpoints_order_steps_by_number_not_by_name(tmp_path):
    """Step 10 is newer than step 9, although its directory's name sorts first as text."""
    local = checkpointing.LocalCheckpointer(tmp_path, max_to_keep=2)
    for step in (8, 9, 10):
        local.save(step, {"w": np.full(2, float(step))}, {"done": step})
    assert local.all_steps() == [9, 10] and local.latest_step() == 10
    restored, metadata = local.restore({"w": np.zeros(2)})
    np.testing.assert_array_equal(restored["w"], [10.0, 10.0])
    assert metadata == {"done": 10}


def test_local_checkpoints_refuse_arrays_of_another_dtype(tmp_path):
    """An array saved as float64 does not restore silently into a float32 leaf (a program fed
    it would compile again, or compute in the other precision)."""
    local = checkpointing.LocalCheckpointer(tmp_path)
    local.save(1, {"w": np.ones(3, np.float64)})
    with pytest.raises(ValueError, match=r"float64\[3\] array where float32\[3\] was expected"):
        local.restore({"w": np.zeros(3, np.float32)})


def test_an_entry_without_leaves_inside_a_sequence_reads_back_as_none(tmp_path):
    """Read without a target, a sequence keeps the positions of its entries: an entry without
    arrays between two with arrays (an optimizer chain's stateless transform) becomes None."""
    local = checkpointing.LocalCheckpointer(tmp_path)
    local.save(1, {"chain": (np.ones(2), (), np.zeros(3))})
    nested, _ = local.restore_nested()
    assert len(nested["chain"]) == 3 and nested["chain"][1] is None
    np.testing.assert_array_equal(nested["chain"][0], np.ones(2))
    np.testing.assert_array_equal(nested["chain"][2], np.zeros(3))
