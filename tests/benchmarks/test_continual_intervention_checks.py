"""Tests of the order in which the continual launcher checks an intervention: its name, then its
options, then its schedule, as the RL launchers do (`agents.configs`)."""

from __future__ import annotations

import ml_collections
import pytest

from benchmarks import continual_config, continual_sweep


def _config(**intervention):
    config = continual_config.default_config()
    config.data.max_train_examples = 64
    config.task.num_tasks, config.task.steps_per_task = 2, 4
    config.network.hidden_sizes = (8,)
    config.diagnostics.every = 2
    config.intervention.update(intervention)
    return config


def _error(config) -> str:
    with pytest.raises(ValueError) as error:
        continual_sweep.plan_experiment(config)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_a_misspelt_intervention_is_named_before_its_schedule():
    """A typo in the name (with no schedule set) is the RL launchers' unknown-intervention line,
    not advice to set intervention.every."""
    message = _error(_config(name="rdeo"))
    assert "Unknown intervention 'rdeo': expected one of none, redo, cbp" in message
    assert "never runs" not in message
    message = _error(_config(name="redo", options={"bogus": 1}))
    assert "intervention 'redo' has no option 'bogus'" in message
    # A known intervention with its options right but no schedule still says how to run it.
    assert "intervention 'redo' never runs: set intervention.every" in _error(_config(name="redo"))


def test_a_schedule_without_an_intervention_or_an_unknown_diagnostics_option_is_refused():
    """An intervention schedule while no variant names an intervention, or an unknown
    diagnostics option while no diagnostic name reads them (the continual default), would be
    accepted and do nothing; a 'none' baseline beside an intervening variant shares its
    schedule."""
    message = _error(_config(every=5))
    assert "intervention.name is 'none'" in message
    message = _error(_config(at_task_boundaries=True))
    assert "intervention.name is 'none'" in message
    config = _config()
    config.diagnostics.options.bogus = 1
    assert "Unknown diagnostics options ['bogus']" in _error(config)
    config = _config(every=2)
    config.variants = ml_collections.ConfigDict(
        {"baseline": {}, "redo": {"intervention": {"name": "redo"}}}
    )
    config.variant_order = ("baseline", "redo")
    plan = continual_sweep.plan_experiment(config)
    assert [name for name, _ in plan.variants] == ["baseline", "redo"]


def test_cbp_adaptable_contribution_on_a_crelu_network_is_refused_in_one_line():
    config = _config(name="cbp", every=1, options={"utility": "adaptable_contribution"})
    config.network.activation = "crelu"
    assert "a CReLU unit has two features" in _error(config)


def test_an_unknown_probe_is_refused_and_auto_gives_continual_backprop_its_last_batch():
    assert "intervention.probe must be one of auto, fresh, last_batch" in _error(
        _config(name="redo", every=1, probe="newest")
    )
    for name, probe, last_batch in [
        ("cbp", "auto", True),
        ("redo", "auto", False),
        ("cbp", "fresh", False),
        ("redo", "last_batch", True),
    ]:
        intervention = _config(name=name, every=1, probe=probe).intervention
        assert continual_config.probes_last_batch(intervention) is last_batch, (name, probe)
