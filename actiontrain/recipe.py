"""Recipes: a :class:`~actiontrain.config.Config` from a shipped name or a YAML file, plus ``key=value`` overrides.

Precedence: command-line overrides > recipe file > dataclass defaults. Unknown keys and values
of the wrong type fail with a message that names the dotted key and lists what is valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from actiontrain import storage
from actiontrain.config import Config
from actiontrain.errors import ConfigError

__all__ = ["RECIPES_DIR", "apply_overrides", "config_from_dict", "config_to_dict", "load_config", "shipped_recipes"]

RECIPES_DIR = Path(__file__).parent / "recipes"
"""Recipes that ship with the package (``x3d_s``; ``cpu_small``, which learns the sample data in minutes; ``cpu_smoke``, a few seconds for tests)."""


def shipped_recipes() -> list[str]:
    """Names accepted by ``--config`` besides paths and URLs."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def load_config(recipe: str = "x3d_s", overrides: Sequence[str] = ()) -> Config:
    """The configuration of a recipe with ``key=value`` overrides applied.

    Args:
        recipe: A shipped recipe's name, or a YAML file's path or URL.
        overrides: ``section.key=value`` strings; values are YAML (``data.clip_len=4``,
            ``optim.lr=5e-4``, ``data.train_short_side=[64,80]``).

    Raises:
        ConfigError: unknown recipe, key or override syntax; a value of the wrong type or range.
        StorageError: the recipe URL cannot be read.
    """
    return config_from_dict(apply_overrides(_read_recipe(recipe), overrides))


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of nested recipe ``values`` with ``section.key=value`` overrides applied.

    Raises:
        ConfigError: an override is not ``section.key=value``.
    """
    values = {section: dict(entries) if isinstance(entries, Mapping) else entries for section, entries in values.items()}
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"override {override!r} is not key=value; example: optim.lr=5e-4")
        section, _, name = key.strip().partition(".")
        if not name:
            raise ConfigError(f"override key {key!r} needs a section: one of {', '.join(_sections())}, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        values.setdefault(section, {})
        if not isinstance(values[section], dict):
            raise ConfigError(f"recipe section {section!r} must be a mapping")
        values[section][name] = value
    return values


def _read_recipe(recipe: str) -> dict[str, Any]:
    shipped = RECIPES_DIR / f"{recipe}.yaml"
    if "/" not in recipe and "." not in recipe:
        if not shipped.is_file():
            raise ConfigError(
                f"unknown recipe {recipe!r}; shipped: {', '.join(shipped_recipes())}, or pass a YAML path or URL"
            )
        text = shipped.read_text(encoding="utf-8")
    else:
        text = storage.read_text(recipe)
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"recipe {recipe} is not valid YAML{where}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {recipe} must be a mapping of sections ({', '.join(_sections())})")
    return values


def _sections() -> list[str]:
    return [field.name for field in dataclasses.fields(Config)]


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Builds a Config from nested plain values (a recipe, or a checkpoint's saved config)."""
    unknown = sorted(set(values) - set(_sections()))
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; valid: {', '.join(_sections())}")
    hints = typing.get_type_hints(Config)
    sections = {}
    for name in _sections():
        section_values = values.get(name) or {}
        if not isinstance(section_values, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping, got {section_values!r}")
        sections[name] = _build_section(name, hints[name], section_values)
    return Config(**sections)


def _build_section(section: str, cls: type, values: Mapping[str, Any]):
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}; valid keys of {section}: {', '.join(fields)}")
    kwargs = {name: _coerce(f"{section}.{name}", hints[name], value) for name, value in values.items()}
    return cls(**kwargs)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Checks ``value`` against the field's type hint, converting lists to tuples where asked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for option in args:
            try:
                return _coerce(key, option, value)
            except ConfigError:
                continue
        raise ConfigError(f"{key} has the wrong type: got {value!r}, expected {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{key} must be empty, got {value!r}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, e.g. [1, 2], got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(f"{key}[{i}]", arg, item) for i, (arg, item) in enumerate(zip(args, value)))
        item_hint = args[0] if args else Any
        items = [_coerce(f"{key}[{i}]", item_hint, item) for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")  # a field type this loader does not know


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested values (lists for tuples) for YAML, JSON and checkpoints; round-trips through config_from_dict."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return {
        section.name: {field.name: plain(getattr(getattr(config, section.name), field.name))
                       for field in dataclasses.fields(getattr(config, section.name))}
        for section in dataclasses.fields(config)
    }
