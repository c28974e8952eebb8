"""Config overrides and sweeps (`plasticity.config_tools`): what a command line or a sweep file
may set, and the one-line refusals of what it may not."""

import ml_collections
import pytest

from plasticity import config_tools


def _config():
    return ml_collections.ConfigDict(
        {
            "seeds": 2,
            "learning_rate": 0.1,
            "intervention": {"name": "none", "options": {}},
            "variants": {},
            "variant_order": (),
        }
    )


def test_an_int_field_refuses_a_fraction_instead_of_truncating_it():
    """``--config.seeds=2.5`` is a typo to report, not 2 seeds; '1e3' and '1_000' are ints."""
    config = _config()
    with pytest.raises(ValueError, match=r"--config.seeds='2.5' is not a valid int"):
        config_tools.apply_overrides(config, {"seeds": "2.5"})
    config_tools.apply_overrides(config, {"seeds": "1e3"})
    assert config.seeds == 1000


def test_a_variant_sets_options_of_a_section_the_base_leaves_empty():
    """A sweep's variants give each arm its intervention options (e.g. ReDo's tau) while the
    base config's options dict is empty: the variant's dict is taken whole, not refused field by
    field as unknown."""
    config = _config()
    config.variants = {
        "redo": {"intervention": {"name": "redo", "options": {"tau": 0.025}}},
        "none": {},
    }
    resolved = dict(config_tools.resolve_variants(config))
    assert resolved["redo"].intervention.options.to_dict() == {"tau": 0.025}
    assert resolved["none"].intervention.options.to_dict() == {}


def test_a_variant_order_naming_one_variant_twice_is_refused():
    """Running one arm twice would write its work dir twice (the second run resuming or
    clobbering the first): a one-line error instead."""
    config = _config()
    config.variants = {"a": {"seeds": 1}, "b": {"seeds": 3}}
    config.variant_order = ("a", "b", "a")
    with pytest.raises(ValueError, match="must list distinct variants"):
        config_tools.resolve_variants(config)
