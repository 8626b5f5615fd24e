"""Strict loading of YAML-shaped data into frozen dataclasses.

Every dataclass field is a setting; its type hint is its type. Unknown keys, wrong types
and failed checks raise ConfigError with one line naming the setting by its dotted path
("capture.snaplen must be an integer, not 'big'"). A dataclass may define
`check(self, path: str) -> None` for rules across fields.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from recorder.errors import ConfigError

T = TypeVar("T")

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def load_section(cls: type[T], data: object, path: str) -> T:
    """Build dataclass `cls` from a mapping, applying defaults for missing keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'the config'} must be a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown setting {where!r} (known here: {known})")
    values: dict[str, Any] = {}
    for name in fields:
        if name in data:
            where = f"{path}.{name}" if path else name
            values[name] = convert(hints[name], data[name], where)
    try:
        obj = cls(**values)
    except TypeError as exc:  # a required setting is missing
        raise ConfigError(f"{path or 'the config'}: {exc}") from None
    check = getattr(obj, "check", None)
    if check is not None:
        check(path)
    return obj


def convert(hint: Any, value: object, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return convert(inner, value, path)
    if dataclasses.is_dataclass(hint):
        return load_section(hint, value, path)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, not {_show(value)}")
        (inner, *_) = get_args(hint)
        items = [convert(inner, item, f"{path}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, not {_show(value)}")
        _key_type, inner = get_args(hint)
        return {str(k): convert(inner, v, f"{path}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        choices = get_args(hint)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{path} must be one of {listed}, not {_show(value)}")
        return value
    return _scalar(hint, value, path)


def _scalar(hint: Any, value: object, path: str) -> Any:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"unsupported setting type {hint!r} at {path}")
    if not ok:
        raise ConfigError(f"{path} must be {_TYPE_WORDS[hint]}, not {_show(value)}")
    return value


def _show(value: object) -> str:
    if value is None:
        return "empty"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def require(condition: bool, path: str, message: str) -> None:
    """For `check` methods: raise ConfigError('<path> <message>') unless `condition`."""
    if not condition:
        raise ConfigError(f"{path} {message}")
