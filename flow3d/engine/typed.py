"""Frozen dataclasses built from plain mappings (parsed YAML, ``key=value`` overrides), typed by
their annotations: unknown keys, wrong types and missing fields are one-line
:class:`~flow3d.errors.ConfigError` s naming the key (with the closest valid one) and where it
came from. Recipes (:mod:`flow3d.engine.config`) and sampling overrides
(:meth:`flow3d.engine.head.Head.sample_settings`) are both built here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from flow3d.engine.keys import suggest
from flow3d.errors import ConfigError

__all__ = ["coerce", "from_dict", "hints", "replace"]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert lists to tuples and dicts to
    dataclasses. Raises ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{where}: {key} = {value!r} is not a {_type_name(tp)}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: {key} = {value!r} is not one of {', '.join(map(repr, args))}"
                + suggest(str(value), [str(a) for a in args])
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.", where=where)
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} = {value!r} must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key} needs {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args))
            items = [coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in pairs]
        else:
            item_tp = args[0] if args else Any
            items = [coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return list(items) if origin is list or tp is list else tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} = {value!r} must be a mapping")
        return dict(value)
    if value is None:
        raise ConfigError(f"{where}: {key} must be a {_type_name(tp)}, got null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, str):  # YAML 1.1 reads `1e3` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: {key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        # YAML reads `precision: 32` or `name: 2024` as numbers; they are meant as text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} = {value!r} must be a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: {key} = {value!r} must be a {_type_name(tp)}")
    return value


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: Mapping[str, Any], *, prefix: str = "", where: str = "recipe"):
    """Build frozen dataclass ``cls`` from a mapping; unknown keys, wrong types and missing
    required fields raise a one-line ConfigError naming ``prefix + key`` and ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'recipe'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    types_ = hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key {prefix + str(key)!r}"
                + suggest(str(key), list(fields), prefix)
            )
        kwargs[key] = coerce(value, types_[key], prefix + key, where)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            raise ConfigError(f"{where}: missing required key {prefix + name!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a __post_init__ check that names its key
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:  # a __post_init__ check of the head's dataclass
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {e}") from None


def replace(obj: Any, overrides: Mapping[str, Any], *, prefix: str = "",
            where: str = "override") -> Any:
    """``dataclasses.replace(obj, **overrides)`` with the checks of :func:`from_dict`."""
    current = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    return from_dict(type(obj), {**current, **overrides}, prefix=prefix, where=where)
