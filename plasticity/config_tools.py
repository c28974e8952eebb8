"""Config files, command-line overrides and sweeps: one format for every launcher.

* ``--config.<field>=<value>`` (`split_overrides`, `apply_overrides`): the value is parsed as the
  field's type (bool, int, float, str, tuple; a placeholder's declared type); an unknown field is
  a one-line error naming the closest known one, except inside an ``options`` section (e.g.
  ``--config.intervention.options.tau=0.025``), whose fields are parsed as Python literals and
  checked by what receives them.
* ``--experiment=FILE[:ARGS]`` (`load_config_file`): a Python file whose ``get_config(ARGS)``
  returns the experiment's config. ``ARGS`` is a comma-separated list that every published file
  reads with `parse_config_arg`: one scale (``smoke``, the default scale, ``paper``) and,
  optionally, variant names to run only those.
* **Sweeps** (`resolve_variants`): a config may hold ``variants`` (name -> nested overrides of the
  rest of the config) and ``variant_order`` (the names to run, in order; empty: all, by name).
  Each variant is the base config with its overrides deep-merged; a variant may not override
  the sweep-level fields its trainer names, nor add fields the base does not have.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import inspect
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

CONFIG_PREFIX = "--config."
# Sections whose fields are keyword arguments of what the config names (an intervention's, the
# diagnostics' options): the command line may add any field to them, and its consumer checks it.
FREE_FORM_SECTIONS = ("options",)
SCALES = ("smoke", "default", "paper")
DEFAULT_VARIANT = "default"


def split_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(argv without ``--config.<field>=<value>`` arguments, {field: raw value}) in order."""
    rest, overrides = [], {}
    for arg in argv:
        if not arg.startswith(CONFIG_PREFIX):
            rest.append(arg)
            continue
        field, equals, value = arg[len(CONFIG_PREFIX) :].partition("=")
        if not equals or not field:
            raise ValueError(f"{arg!r}: write config overrides as --config.<field>=<value>")
        overrides[field] = value
    return rest, overrides


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted field: value} of every leaf of a nested config (ConfigDict or dict)."""
    items = config.items() if hasattr(config, "items") else ()
    flat = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)) and len(value):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _field_type(parent: ml_collections.ConfigDict, key: str) -> type | None:
    """The declared type of a field: its value's, or a placeholder's declared one."""
    try:
        reference = parent.get_ref(key)
        declared = reference.get_type()
    except (AttributeError, KeyError, TypeError):
        declared = None
    value = parent[key]
    return type(value) if value is not None else declared


def parse_value(raw: str, kind: type | None, field: str) -> Any:
    """``raw`` as a value of ``kind`` (one-line ValueError naming ``field`` otherwise)."""
    text = raw.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text.replace("_", ""))
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            return float(text.replace("_", ""))
        if kind is str:
            return raw
        if kind in (tuple, list):
            value = _sequence_literal(text)
            if not isinstance(value, (tuple, list)):
                value = (value,)
            return tuple(value) if kind is tuple else list(value)
        if text.lower() == "none":
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return raw
    except (ValueError, SyntaxError):
        name = kind.__name__ if kind is not None else "value"
        raise ValueError(f"--config.{field}={raw!r} is not a valid {name}") from None


def _sequence_literal(text: str) -> Any:
    """A Python literal, or bare comma-separated words as strings: ``breakout,asterix`` means
    ``('breakout', 'asterix')``, as absl's list flags read it."""
    if not text:
        return ()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        words = [word.strip() for word in text.strip("()[]").split(",")]
        if not all(word.isidentifier() or word.replace(".", "").isalnum() for word in words):
            raise
        return tuple(words)


def closest_field(field: str, known: Sequence[str]) -> str:
    """' (did you mean x.y?)' for the closest known field, or '' when none is close: one with the
    same last name, else the same words in another order (another launcher's name for the
    concept, e.g. ``run.checkpoints_to_keep`` for ``keep_checkpoints``), else the closest
    spelling; among several, the one whose full name is spelt most alike."""
    leaf = field.rsplit(".", 1)[-1]
    by_leaf = [name for name in known if name.rsplit(".", 1)[-1] == leaf]
    by_words = [name for name in known if _leaf_words(name) == _leaf_words(field)]
    close = by_leaf or by_words or difflib.get_close_matches(field, list(known), n=1, cutoff=0.5)
    if not close:
        return ""
    best = max(close, key=lambda name: difflib.SequenceMatcher(None, field, name).ratio())
    return f" (did you mean {best}?)"


def check_some_intervention_named(settings: Sequence[Any], schedule: Sequence[str]) -> None:
    """One-line ValueError when the ``intervention`` sections of a launch's variants
    (``settings``) set a ``schedule`` field but none names an intervention: the schedule would
    run nothing (a 'none' baseline beside intervening variants may share their schedule)."""
    scheduled = any(section[field] for section in settings for field in schedule)
    if scheduled and all(section.name == "none" for section in settings):
        raise ValueError(
            f"intervention.{' / '.join(schedule)} are set but intervention.name is 'none': "
            "name the intervention (e.g. --config.intervention.name=redo)"
        )


def _leaf_words(field: str) -> frozenset[str]:
    """The words of a field's last name, without the small ones ('checkpoints_to_keep' ->
    {'checkpoints', 'keep'})."""
    words = field.rsplit(".", 1)[-1].split("_")
    return frozenset(word for word in words if word not in ("", "to", "of", "per", "at", "the"))


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> list[str]:
    """Applies every ``--config.<field>=<value>`` to ``config`` in place, each parsed as its field's
    type; a field a variant overrides too is set there as well (`force_fields`: the command line
    wins, and the variants' values it replaced are returned).

    One-line ValueErrors: an unknown field (naming the closest known one), a section given a
    value, or a value that does not parse as the field's type.
    """
    known = list(flatten(config))
    parsed = {}
    for field, raw in overrides.items():
        parent, key = config, None
        parts = field.split(".")
        for depth, part in enumerate(parts):
            new_option = depth == len(parts) - 1 and depth > 0 and parts[-2] in FREE_FORM_SECTIONS
            if not isinstance(parent, ml_collections.ConfigDict) or (
                part not in parent and not new_option
            ):
                raise ValueError(f"unknown config field {field!r}{closest_field(field, known)}")
            if depth < len(parts) - 1:
                parent = parent[part]
            key = part
        if key not in parent:  # a new entry of a free-form section: a Python literal or a string
            parsed[field] = parse_value(raw, None, field)
            continue
        if isinstance(parent[key], ml_collections.ConfigDict):
            raise ValueError(f"--config.{field} is a section; set one of its fields instead")
        parsed[field] = parse_value(raw, _field_type(parent, key), field)
    return force_fields(config, parsed, skip_none=False)


# Where the project's packages are installed (the checkout's root for an editable install):
# published config files are found here when the working directory does not hold them.
INSTALL_ROOT = Path(__file__).resolve().parents[1]


def load_config_file(spec: str, flag: str = "--experiment") -> ml_collections.ConfigDict:
    """``get_config(ARGS)`` of the config file ``FILE[:ARGS]``, with one-line errors for a missing
    file, a file without ``get_config`` and arguments it refuses.

    A relative FILE is looked for in the working directory, then beside the installed packages
    (`INSTALL_ROOT`), so that the published ``benchmarks/configs/...`` files can be named the
    same way from anywhere and from a non-editable install."""
    path, _, argument = spec.partition(":")
    file = Path(path)
    if not file.is_file() and not file.is_absolute() and (INSTALL_ROOT / file).is_file():
        file = INSTALL_ROOT / file
    if not file.is_file() or file.suffix != ".py":
        where = "" if file.is_absolute() else f" (looked in . and {INSTALL_ROOT})"
        raise ValueError(f"{flag}={spec}: no Python config file {path}{where}")
    module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any failure of a user's file is bad input
        raise ValueError(f"{flag}={spec}: cannot load {path}: {type(error).__name__}: {error}")
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{flag}={spec}: {path} defines no get_config function")
    takes_argument = _takes_a_positional_argument(module.get_config)
    if argument and not takes_argument:
        raise ValueError(
            f"{flag}={spec}: get_config() of {path} takes no argument; drop ':{argument}'"
        )
    try:
        config = module.get_config(argument or None) if takes_argument else module.get_config()
    except ValueError as error:
        raise ValueError(f"{flag}={spec}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any failure of a user's file is bad input
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise ValueError(f"{flag}={spec}: get_config failed: {reason}")
    if config is not None and not isinstance(config, (ml_collections.ConfigDict, Mapping)):
        raise ValueError(
            f"{flag}={spec}: get_config of {path} returned a {type(config).__name__}, not a "
            "config (an ml_collections.ConfigDict or a dict)"
        )
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    return config


def _takes_a_positional_argument(function) -> bool:
    """Whether ``function`` can be given one positional argument (True where Python cannot tell,
    e.g. a builtin: it is then called as the published files are)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    return any(parameter.kind in positional for parameter in parameters)


def check_config_kind(config: Any, reference: Any, spec: str, kind: str) -> None:
    """One-line ValueError when the config file ``spec`` is not ``kind`` config ('an Atari',
    'a continual'): it lacks a section of ``reference`` (a default config of that kind), or a
    field of one, e.g. an RL experiment given to the continual launcher."""
    missing = [key for key in reference if key not in config]
    for key, section in reference.items():
        if key in config and hasattr(section, "keys") and hasattr(config[key], "keys"):
            missing += [f"{key}.{field}" for field in section if field not in config[key]]
    if missing:
        raise ValueError(f"{spec} is not {kind} config (it has no {', '.join(missing[:3])})")


def describe_config(config: ml_collections.ConfigDict) -> str:
    """Every field of ``config`` as ``--config.<field>=<value>`` lines: the top-level fields
    first, then one group per section."""
    fields = sorted(flatten(config).items(), key=lambda item: ("." in item[0], item[0]))
    lines, section = [], None
    for field, value in fields:
        head = field.split(".", 1)[0] if "." in field else ""
        if head != section:
            section = head
            lines.append(f"  [{head}]" if head else "  [top level]")
        if isinstance(value, ml_collections.ConfigDict):  # an empty free-form section: {}
            value = value.to_dict()
        lines.append(f"    --config.{field}={value!r}")
    return "\n".join(lines)


def parse_config_arg(
    arg: str | None, variants: Sequence[str] = (), options: Sequence[str] = ()
) -> tuple[str, list[str], list[str]]:
    """(scale, chosen variants, other options) of a config file's ``ARGS``.

    ``ARGS`` is comma-separated: at most one of `SCALES` ('default' when absent), any of
    ``variants`` (run only those, in the order given) and any of ``options`` (file-specific
    switches). Anything else is a one-line ValueError listing what is accepted.
    """
    scale, chosen, extra = None, [], []
    for part in (p.strip() for p in (arg or "").split(",")):
        if not part:
            continue
        if part in SCALES:
            if scale is not None and scale != part:
                raise ValueError(f"two scales given: {scale} and {part}")
            scale = part
        elif part in variants:
            chosen.append(part)
        elif part in options:
            extra.append(part)
        else:
            accepted = ", ".join([*SCALES, *variants, *options])
            raise ValueError(f"unknown config argument {part!r}; accepted: {accepted}")
    return scale or "default", chosen, extra


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any], where: str) -> None:
    """Deep-merges ``overrides`` into ``base`` in place, refusing fields ``base`` does not have.

    A dict field that is empty in ``base`` (a free-form options dict) takes the override whole.
    """
    for key, value in overrides.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise ValueError(f"{where}: unknown config field {key!r}; known: {known}")
        if isinstance(base[key], dict) and isinstance(value, Mapping) and base[key]:
            deep_merge(base[key], value, f"{where}.{key}")
        else:
            base[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value


def as_dict(config: Any) -> dict[str, Any]:
    """A deep, plain-dict copy of a ConfigDict or mapping."""
    if isinstance(config, ml_collections.ConfigDict):
        return config.to_dict()
    return copy.deepcopy(dict(config))


def resolve_variants(
    config: Any, reserved: Sequence[str] = ("variants", "variant_order")
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """[(name, resolved config)] of a sweep, in ``variant_order`` (see the module docstring).

    With no variants the config itself is the single variant `DEFAULT_VARIANT`. Resolved configs
    keep ``variants`` and ``variant_order`` as they are (the sweep they belong to).
    """
    base = as_dict(config)
    variants = base.get("variants") or {}
    order = tuple(base.get("variant_order") or ())
    if not variants:
        if order and order != (DEFAULT_VARIANT,):
            raise ValueError(f"variant_order {order} names variants, but the config defines none")
        return [(DEFAULT_VARIANT, ml_collections.ConfigDict(base))]
    unknown = [name for name in order if name not in variants]
    if unknown or len(set(order)) != len(order):
        raise ValueError(
            f"variant_order {order} must list distinct variants among {', '.join(sorted(variants))}"
        )
    resolved = []
    for name in order or sorted(variants):
        overrides = variants[name]
        if not isinstance(overrides, Mapping):
            raise ValueError(
                f"variant {name!r} must be a dict of config overrides, got {overrides!r}"
            )
        clash = sorted(set(overrides) & set(reserved))
        if clash:
            raise ValueError(f"variant {name!r} overrides sweep-level field(s) {', '.join(clash)}")
        merged = copy.deepcopy(base)
        deep_merge(merged, overrides, f"variant {name!r}")
        resolved.append((str(name), ml_collections.ConfigDict(merged)))
    return resolved


def check_each_field_given_once(
    named_flags: Mapping[str, str], named: Mapping[str, Any], overrides: Mapping[str, str]
) -> None:
    """One-line ValueError when a named flag (``--norm``: ``named_flags`` maps it to its field)
    and a ``--config.*`` override set the same field (or one inside it): one would silently
    win over the other."""
    for flag, field in named_flags.items():
        if named.get(flag) is None:
            continue
        both = [key for key in overrides if key == field or key.startswith(field + ".")]
        if both:
            raise ValueError(f"--{flag} and --config.{both[0]} both set {field}; give it once")


def force_fields(
    config: ml_collections.ConfigDict, values: Mapping[str, Any], skip_none: bool = True
) -> list[str]:
    """Sets dotted fields of ``config`` and of every variant that overrides them (None values are
    skipped with ``skip_none``: flags left unset).

    What the command line says wins over what a config file's variants say: ``--norm=layernorm``
    makes every variant use LayerNorm, not only the base config. Returns one line for each
    variant that runs whose value is replaced where it sets the field itself or the variants
    disagree on it: that variant's name (and its work dir's) may no longer describe what it
    runs, so a launcher says so before training.
    """
    values = {f: v for f, v in values.items() if v is not None or not skip_none}
    replaced = _replaced_variant_values(config, values)
    for field, value in values.items():
        parent = config
        *path, key = field.split(".")
        for part in path:
            parent = parent[part]
        with parent.ignore_type():
            parent[key] = value
    variants = config.get("variants") or {}
    for name in list(variants.keys()) if variants else []:
        for field, value in values.items():
            parent, key = _variant_parent(variants[name], field)
            if parent is not None:
                with parent.ignore_type():
                    parent[key] = value
    return replaced


def _variant_parent(overrides: Any, field: str) -> tuple[Any, str]:
    """(the mapping of a variant's overrides that sets ``field``, its key), or (None, key)."""
    *path, key = field.split(".")
    parent = overrides
    for part in path:
        parent = parent.get(part) if hasattr(parent, "get") else None
        if parent is None:
            return None, key
    return (parent, key) if hasattr(parent, "keys") and key in parent else (None, key)


def _replaced_variant_values(config: Any, values: Mapping[str, Any]) -> list[str]:
    """One line per (running variant, field) whose value `force_fields` changes, when the variant
    sets that field itself or the running variants disagree on it (a field none of them sets
    and all share, such as the frames per game, names none of them)."""
    variants = config.get("variants") or {}
    names = tuple(config.get("variant_order") or ()) or tuple(sorted(variants.keys()))
    names = tuple(name for name in names if name in variants)  # `resolve_variants` names the rest
    lines = []
    for field, value in values.items():
        base = as_dict(config)
        for part in field.split("."):
            base = base.get(part) if isinstance(base, Mapping) else None
        own, effective = set(), {}
        for name in names:
            parent, key = _variant_parent(variants[name], field)
            if parent is not None:
                own.add(name)
            effective[name] = parent[key] if parent is not None else base
        disagree = len({repr(_plain(v)) for v in effective.values()}) > 1
        lines += [
            f"variant {name!r} runs with {field}={_plain(old)!r} but the command line makes it "
            f"{_plain(value)!r}; its work dir keeps the variant's name"
            for name, old in effective.items()
            if (name in own or disagree) and _plain(old) != _plain(value)
        ]
    return lines


def _plain(value: Any) -> Any:
    """A config value with lists as tuples, to compare and print them alike."""
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_range(
    field: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """One-line ValueError unless ``value`` is a finite number within the bounds (closed unless
    ``low_open`` / ``high_open``; None: unbounded), before anything is built from it."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    inside = math.isfinite(number) and not isinstance(value, bool)
    if inside and low is not None:
        inside = number > low if low_open else number >= low
    if inside and high is not None:
        inside = number < high if high_open else number <= high
    if not inside:
        raise ValueError(f"{field} must be a number {' and '.join(bounds)}, got {value!r}")


def check_layer_sizes(field: str, sizes: Any) -> None:
    """One-line ValueError unless ``sizes`` (a config's layer widths, or one width) is a sequence
    of positive integers (a positive integer), before anything is built from it."""
    sequence = isinstance(sizes, (list, tuple))
    values = tuple(sizes) if sequence else (sizes,)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        expected = "a sequence of positive integers" if sequence else "a positive integer"
        raise ValueError(f"{field} must be {expected}, got {sizes!r}")


def check_conv_layers(field: str, layers: Any) -> None:
    """One-line ValueError unless ``layers`` is a sequence of (features, kernel, stride) triples of
    positive integers."""
    triples = tuple(layers) if isinstance(layers, (list, tuple)) else (layers,)
    for layer in triples:
        if not (isinstance(layer, (list, tuple)) and len(layer) == 3):
            raise ValueError(
                f"{field} must be (features, kernel, stride) triples of positive integers, "
                f"got {layers!r}"
            )
        check_layer_sizes(field, layer)
