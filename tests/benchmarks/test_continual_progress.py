"""Tests of the fields the continual runner shows after its progress bar."""

from __future__ import annotations

import jax
import ml_collections

from benchmarks import continual_config, continual_sweep
from plasticity import run as run_lib


def _two_kinds_of_variant() -> ml_collections.ConfigDict:
    """A classification variant, then a regression one (no accuracy): tiny, one run each."""
    config = continual_config.default_config()
    config.data.max_train_examples = 64
    config.task.name = "label_reset"
    config.task.num_tasks = 2
    config.task.steps_per_task = 4
    config.task.batch_size = 8
    config.network.hidden_sizes = (8,)
    config.diagnostics.every = 2
    config.diagnostics.probe_size = 16
    config.eval.max_examples = 32
    config.num_seeds = 1
    config.run.tasks_per_chunk = 1
    config.run.tensorboard = False
    regression = {"task": {"name": "large_offset_regression", "offset_tasks": 1}}
    config.variants = ml_collections.ConfigDict({"classify": {}, "regress": regression})
    config.variant_order = ("classify", "regress")
    return config


def test_a_variant_switch_replaces_the_bar_fields_not_merges_them(tmp_path, monkeypatch):
    """The regression variant's bar shows its loss, never the classification variant's acc."""
    shown, described = [], set()
    for method in ("advance", "show"):
        original = getattr(run_lib.Run, method)

        def record(self, *args, _original=original, **postfix):
            _original(self, *args, **postfix)
            shown.append(self._shown())
            described.add(self.description)

        monkeypatch.setattr(run_lib.Run, method, record)
    with jax.threefry_partitionable(False):
        result = continual_sweep.run_experiment(_two_kinds_of_variant(), tmp_path / "run")
    assert result.completed
    classify = [fields for fields in shown if fields.get("variant") == "classify"]
    regress = [fields for fields in shown if fields.get("variant") == "regress"]
    assert any("acc" in fields for fields in classify)
    assert regress and all("acc" not in fields for fields in regress)
    assert "loss" in regress[-1] and regress[-1]["task"] == "2/2"
    # The switch itself shows the new variant with no score until its first chunk ends.
    assert regress[0] == {"variant": "regress", "task": "0/2"}
    # The bar names the launcher and the work dir, as the RL launchers' bars do.
    (description,) = described
    # With several devices, their layout, named so that it does not read as a seed.
    layout = f" [mesh seed:{jax.device_count()}]" if jax.device_count() > 1 else ""
    assert description == f"{continual_sweep.NAME} run{layout}", description
