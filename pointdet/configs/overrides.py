"""``key=value`` overrides parsed against field types, and dict round trips for YAML and checkpoints.

Values are read as YAML scalars/lists (data, never evaluated code) and then checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

import yaml

from pointdet.errors import PointdetError


class ConfigError(PointdetError, ValueError):
    """An unknown key or a value of the wrong type."""


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(v, args[0], key) for v in items)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if annotation in (int, str, bool) and type(value) is annotation:
        return value
    raise ConfigError(f"{key}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Return ``config`` with ``section.key=value`` items applied; unknown keys and bad types raise ``ConfigError``.

    ``model.method=...`` is applied first: a method of another family replaces the model section with that
    family's defaults, and the other ``model.*`` keys are then checked against that family.
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=2e-4)")
        key, text = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(text) if text.strip() else None))
    for key, value in sorted(parsed, key=lambda item: item[0] != "model.method"):
        config = _set(config, key.split("."), value, key)
    return config


def _family_of(value: Any, key: str) -> type:
    from pointdet.configs.schema import MODEL_FAMILIES

    if value not in MODEL_FAMILIES:
        raise ConfigError(f"{key}: {value!r} is not one of {list(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[value]


def _describe(config: Any) -> str:
    method = getattr(config, "method", None)
    return f" for method={method} ({type(config).__name__})" if method is not None else ""


def _set(config: Any, path: list[str], value: Any, full_key: str) -> Any:
    names = {f.name for f in dataclasses.fields(config)}
    if path[0] not in names:
        raise ConfigError(f"unknown config key {full_key!r}{_describe(config)}; valid keys here: {sorted(names)}")
    current = getattr(config, path[0])
    if path == ["method"] and not isinstance(config, _family_of(value, full_key)):
        return _family_of(value, full_key)(method=value)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown config key {full_key!r}: {path[0]!r} has no sub-keys")
        return dataclasses.replace(config, **{path[0]: _set(current, path[1:], value, full_key)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(
            f"{full_key!r} is a section; set one of its keys, e.g. {full_key}.{dataclasses.fields(current)[0].name}=..."
        )
    annotation = _field_types(type(config))[path[0]]
    return dataclasses.replace(config, **{path[0]: _coerce(value, annotation, full_key)})


def config_to_dict(config: Any) -> dict:
    """Plain nested dict (tuples become lists) for YAML files and checkpoints."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def config_from_dict(cls: type, data: dict) -> Any:
    """Inverse of ``config_to_dict``, with the same type checks as overrides; a union of config classes (the
    model section) is resolved by the dict's ``method``."""
    hints = _field_types(cls)
    kwargs = {}
    for name, value in data.items():
        if name not in hints:
            raise ConfigError(f"unknown config key {name!r} for {cls.__name__}")
        annotation = hints[name]
        options = typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else ()
        if options and all(dataclasses.is_dataclass(option) for option in options):
            annotation = _family_of(value.get("method", "centernet"), f"{name}.method")
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = config_from_dict(annotation, value)
        else:
            kwargs[name] = _coerce(value, annotation, name)
    return cls(**kwargs)
