"""Orbax checkpoints of a pytree plus a JSON metadata dict, keeping the last k.

Each checkpoint is one numbered step directory written by an Orbax `CheckpointManager`: the
tree (arrays, sharded or not) and a small JSON dict (e.g. where a run stands and how far its
metrics file had got) are saved together. Orbax writes into a temporary directory and renames
it when complete, so a crash during a save leaves the previous checkpoint intact and the
half-written one invisible; the oldest checkpoints beyond `max_to_keep` are deleted only after
a new one is finalized. Saves are synchronous: when `save` returns the checkpoint is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

TREE_ITEM = "tree"
METADATA_ITEM = "metadata"


class Checkpointer:
    """Saves and restores (pytree, metadata) pairs under `directory`, keeping the last k.

    Args:
      directory: where the numbered checkpoint directories live (created when needed).
      max_to_keep: how many of the most recent checkpoints to keep (>= 1).
      independent: this process saves alone (a run of its own in a multi-process job, e.g. one
        Atari run per process); by default every process of the job takes part in each save.
    """

    def __init__(
        self, directory: str | os.PathLike, max_to_keep: int = 2, independent: bool = False
    ):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = Path(directory).absolute()
        processes = ocp.options.MultiprocessingOptions()
        if independent:
            me = jax.process_index()
            processes = ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process_{me}"
            )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            multiprocessing_options=processes,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(TREE_ITEM, METADATA_ITEM)
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every complete checkpoint kept, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """Writes checkpoint `step` (a tree of arrays and a JSON-serializable dict) and waits."""
        args = ocp.args.Composite(
            **{
                TREE_ITEM: ocp.args.StandardSave(tree),
                METADATA_ITEM: ocp.args.JsonSave(dict(metadata or {})),
            }
        )
        self._manager.save(int(step), args=args, force=True)
        self._manager.wait_until_finished()

    def restore_metadata(self, step: int | None = None) -> dict[str, Any]:
        """The metadata dict of checkpoint `step` (default: the latest)."""
        step = self._resolve(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{METADATA_ITEM: ocp.args.JsonRestore()})
        )
        return dict(restored[METADATA_ITEM])

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """(tree, metadata) of checkpoint `step` (default: the latest).

        `target` is a tree of arrays (or `jax.ShapeDtypeStruct`s with shardings) of the saved
        structure; restored arrays take its shapes, dtypes and shardings.
        """
        step = self._resolve(step)
        abstract = jax.tree.map(_abstract_leaf, target)
        args = ocp.args.Composite(
            **{TREE_ITEM: ocp.args.StandardRestore(abstract), METADATA_ITEM: ocp.args.JsonRestore()}
        )
        restored = self._manager.restore(step, args=args)
        return restored[TREE_ITEM], dict(restored[METADATA_ITEM])

    def _resolve(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {self.directory}")
        return int(step)

    def reload(self) -> None:
        """Re-reads which checkpoints exist (after one was moved away by hand or by a fallback)."""
        self._manager.reload()

    def close(self) -> None:
        """Releases the manager's resources."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _abstract_leaf(leaf: Any) -> Any:
    """A ShapeDtypeStruct for a leaf, keeping a jax.Array's sharding."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    leaf = np.asarray(leaf)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
