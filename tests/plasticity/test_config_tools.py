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


def test_a_users_get_config_with_or_without_an_argument_and_its_failures(tmp_path):
    """A config file of one's own may define ``get_config()`` without a parameter (called with
    none) or ``get_config(arg)`` (given the text after the colon, or None); ARGS given to one that
    takes none, and any exception in it, are one-line ValueErrors naming the file."""
    plain = tmp_path / "plain.py"
    plain.write_text("def get_config():\n    return {'lr': 0.1}\n")
    assert config_tools.load_config_file(str(plain)).to_dict() == {"lr": 0.1}
    with pytest.raises(
        ValueError, match=r"get_config\(\) of .*plain\.py takes no argument; drop ':x'$"
    ):
        config_tools.load_config_file(f"{plain}:x")
    echo = tmp_path / "echo.py"
    echo.write_text("def get_config(arg):\n    return {'arg': arg}\n")
    assert config_tools.load_config_file(str(echo)).to_dict() == {"arg": None}
    assert config_tools.load_config_file(f"{echo}:a,b").to_dict() == {"arg": "a,b"}
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg):\n    return {}['missing']\n")
    with pytest.raises(ValueError) as raised:
        config_tools.load_config_file(str(broken), flag="--config")
    assert str(raised.value) == f"--config={broken}: get_config failed: KeyError: 'missing'"
    keywords = tmp_path / "keywords.py"  # no positional parameter: called with none
    keywords.write_text("def get_config(*, scale='s', **rest):\n    return {'scale': scale}\n")
    assert config_tools.load_config_file(str(keywords)).to_dict() == {"scale": "s"}
    builtin = tmp_path / "builtin.py"  # no signature Python can read: given the text, as usual
    builtin.write_text("get_config = dict\n")
    with pytest.raises(ValueError, match=rf"^--experiment={builtin}: get_config failed: TypeError"):
        config_tools.load_config_file(str(builtin))
    silent = tmp_path / "silent.py"
    silent.write_text("def get_config(arg):\n    assert arg\n")
    with pytest.raises(ValueError, match=r"get_config failed: AssertionError$"):
        config_tools.load_config_file(str(silent))
    for returned, kind in (("5", "int"), ("[('lr', 0.1)]", "list")):
        odd = tmp_path / f"returns_{kind}.py"
        odd.write_text(f"def get_config():\n    return {returned}\n")
        with pytest.raises(ValueError) as raised:
            config_tools.load_config_file(str(odd))
        assert str(raised.value) == (
            f"--experiment={odd}: get_config of {odd} returned a {kind}, not a config (an "
            "ml_collections.ConfigDict or a dict)"
        )
    frozen = tmp_path / "frozen.py"
    frozen.write_text(
        "import ml_collections\ndef get_config():\n"
        "    return ml_collections.FrozenConfigDict({'lr': 0.1})\n"
    )
    assert config_tools.load_config_file(str(frozen)).to_dict() == {"lr": 0.1}
    (tmp_path / "constant.py").write_text("get_config = {'lr': 0.1}\n")
    with pytest.raises(ValueError, match="defines no get_config function"):
        config_tools.load_config_file(str(tmp_path / "constant.py"))
