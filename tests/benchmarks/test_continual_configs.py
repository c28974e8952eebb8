"""Tests of the published continual configs' ``--experiment=FILE[:scale,arm]`` argument: a scale
and, as the RL configs take them, the arms to run, in the order given."""

from __future__ import annotations

import pytest

from benchmarks import continual_config
from benchmarks.configs import disentangling, dohare, nap_interventions, nap_label_reset
from plasticity import config_tools

CONFIGS = "benchmarks/configs"


@pytest.mark.parametrize("module", [nap_label_reset, dohare, disentangling, nap_interventions])
def test_every_continual_config_runs_only_the_named_arms_in_order(module):
    everything = module.get_config("smoke")
    assert everything.variant_order, "the default order names every arm"
    first, second = everything.variant_order[:2]
    config = module.get_config(f"smoke,{second},{first}")
    assert config.variant_order == (second, first)
    assert config.task.steps_per_task == everything.task.steps_per_task  # still the smoke scale
    assert module.get_config(f"paper,{first}").variant_order == (first,)
    assert module.get_config(None).variant_order == everything.variant_order


def test_an_arm_named_through_the_experiment_flag_is_the_only_one_run():
    spec = f"{CONFIGS}/nap_label_reset.py:smoke,layernorm_nap"
    config = config_tools.load_config_file(spec)
    assert [name for name, _ in config_tools.resolve_variants(config)] == ["layernorm_nap"]
    spec = f"{CONFIGS}/dohare.py:smoke,bit_flipping/layernorm"
    assert config_tools.load_config_file(spec).variant_order == ("bit_flipping/layernorm",)


def test_an_unknown_arm_is_one_line_listing_the_known_ones():
    with pytest.raises(ValueError) as raised:
        config_tools.load_config_file(f"{CONFIGS}/nap_label_reset.py:smoke,layernorm_nop")
    message = str(raised.value)
    assert "\n" not in message and "unknown config argument 'layernorm_nop'" in message
    assert message.endswith(
        "accepted: smoke, default, paper, no_norm, layernorm, layernorm_nap, layernorm_nap_l2"
    )


def test_the_nap_l2_arm_is_naps_arm_with_coupled_l2_and_only_there_when_named():
    """``layernorm_nap_l2`` resolves to the LayerNorm + NaP arm with coupled L2 1e-4 on the
    kernels (added to the gradient before Adam, not decoupled decay); the paper's three-arm sweep
    does not hold it, so that sweep's config.json (claims (a) and (c) read it) is unchanged."""
    config = config_tools.load_config_file(
        f"{CONFIGS}/nap_label_reset.py:layernorm_nap,layernorm_nap_l2"
    )
    nap_arm, l2_arm = (resolved for _, resolved in config_tools.resolve_variants(config))
    assert (l2_arm.optimizer.l2, l2_arm.optimizer.weight_decay) == (1e-4, 0.0)
    assert (nap_arm.optimizer.l2, l2_arm.optimizer.nap.enabled) == (0.0, True)
    l2_arm.optimizer.l2 = 0.0
    assert l2_arm.to_dict() == nap_arm.to_dict()
    for arg in (None, "smoke", "paper"):
        assert "layernorm_nap_l2" not in nap_label_reset.get_config(arg).variants


def test_disentangling_takes_a_task_and_its_arms():
    config = disentangling.get_config("smoke,large_offset_regression,layernorm_two_hot,no_norm")
    assert config.task.name == "large_offset_regression"
    assert config.variant_order == ("layernorm_two_hot", "no_norm")
    assert disentangling.get_config("smoke,large_offset_regression").variant_order == (
        "no_norm",
        "layernorm",
        "no_norm_two_hot",
        "layernorm_two_hot",
    )
    # The two-hot arms are large-offset regression's: elsewhere one line naming the task's arms.
    with pytest.raises(ValueError, match=r"^task label_reset has no variant no_norm_two_hot; "):
        disentangling.get_config("smoke,no_norm_two_hot")
    with pytest.raises(ValueError, match="choose one task per run"):
        disentangling.get_config("label_reset,class_permutation")


def test_a_schedule_fitted_to_tasks_shorter_than_its_warm_up_is_one_line_naming_it():
    optimizer = continual_config.default_config().optimizer
    optimizer.schedule.update(name="cosine_restarts", warmup_steps=1000)
    with pytest.raises(ValueError, match=r"^optimizer.schedule \(cosine_restarts\): a task of 20"):
        continual_config.task_schedule(optimizer, num_tasks=3, steps=20)
    optimizer.schedule.warmup_steps = 10
    fitted = continual_config.task_schedule(optimizer, num_tasks=3, steps=20)
    assert tuple(fitted.schedule.boundaries) == (20, 40) and fitted.schedule.total_steps == 60


def test_a_run_longer_than_the_int32_step_counts_is_one_line():
    """Global steps (and their keys) are int32: Dohare's permuted MNIST at 36,000 tasks of
    60,000 steps would wrap them without a word; 800 tasks (the paper's) are far below."""
    config = continual_config.default_config()
    config.task.steps_per_task = 60_000
    config.task.num_tasks = 800
    continual_config.check_config(config)
    config.task.num_tasks = 36_000
    with pytest.raises(ValueError, match=r"^task.num_tasks x task.steps_per_task counts 2,160,036"):
        continual_config.check_config(config)


def test_the_dohare_presets_follow_the_authors_code():
    """As the docstring says the preset follows shibhansh/loss-of-plasticity: every variant starts
    Kaiming-uniform and decays every parameter under L2, and bit flipping's targets use their
    FixLTUNet's thresholds."""
    for scale in ("smoke", "default", "paper"):
        variants = continual_config.variant_configs(dohare.get_config(scale))
        assert len(variants) == 4
        for name, variant in variants:
            assert variant.network.initialization == "kaiming_uniform", (scale, name)
            assert variant.optimizer.decay_biases_and_norms, (scale, name)
            if variant.task.name == "bit_flipping":
                assert variant.task.ltu_threshold == "reference_code", (scale, name)
