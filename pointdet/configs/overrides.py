"""``key=value`` overrides parsed against field types, and dict round trips for YAML and checkpoints.

Values are read as YAML scalars/lists (data, never evaluated code) and then checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

import yaml

from pointdet.configs.schema import MODEL_FAMILIES
from pointdet.errors import ConfigError


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
    """The annotation of every dataclass field of ``cls`` (class variables such as ``RANGES`` left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Return ``config`` with ``section.key=value`` items applied; unknown keys and bad types raise ``ConfigError``.

    ``model.method=...`` is applied first: a method of another family replaces the model section with that
    family's defaults, and the other ``model.*`` keys are then checked against that family. The overrides edit a
    plain copy of the config that is built once at the end, so every section checks its ranges (and the
    experiment its cross-section rules) on the final values, never on a half-applied mix.
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=2e-4)")
        key, text = item.split("=", 1)
        parsed.append((key.strip(), _parse_value(key.strip(), text)))
    data = config_to_dict(config)
    for key, value in sorted(parsed, key=lambda item: item[0] != "model.method"):
        _set(type(config), data, key.split("."), value, key)
    return config_from_dict(type(config), data)


def _parse_value(key: str, text: str) -> Any:
    """The value of ``key=text``, read as YAML data (numbers, strings, true/false, null, lists); empty is None.

    Raises:
        ConfigError: the text is not YAML, nests too deeply, or asks for an object to be built (a ``!!python/...``
            tag: values are data, never code).
    """
    if not text.strip():
        return None
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        deep = isinstance(error, RecursionError)
        problem = "nested too deeply" if deep else getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"{key}={text[:60]}: not a value ({problem}); values are YAML data: numbers, strings, true/false, null "
            "or [lists]"
        ) from None


def apply_eval_overrides(config: Any, overrides: list[str]) -> Any:
    """``apply_overrides`` for evaluating a trained model: of the ``model.*`` keys only the family's decoding
    options (its ``DECODE_OPTIONS``) apply; data and eval keys are free.

    Raises:
        ConfigError: naming every architecture key given (they are fixed by the checkpoint's weights).
    """
    decode = type(config.model).DECODE_OPTIONS
    keys = [item.split("=", 1)[0].strip() for item in overrides if "=" in item]
    fixed = [key for key in keys if key.startswith("model.") and key.removeprefix("model.") not in decode]
    if fixed:
        allowed = ", ".join(f"model.{name}" for name in decode)
        raise ConfigError(
            f"{', '.join(fixed)}: fixed by the checkpoint (the network its weights belong to); at eval only the "
            f"decoding options of method={config.model.method} apply: {allowed}"
        )
    return apply_overrides(config, overrides)


def _family_of(value: Any, key: str) -> type:
    if value not in MODEL_FAMILIES:
        raise ConfigError(f"{key}: {value!r} is not one of {list(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[value]


def _section_class(annotation: Any, data: Any, key: str) -> type | None:
    """The config class of a section field — for the model union, the family of ``data['method']`` — else None."""
    union = typing.get_origin(annotation) in (Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    if not all(dataclasses.is_dataclass(option) for option in options):
        return None
    if len(options) == 1:
        return options[0]
    return _family_of(data.get("method", "centernet") if isinstance(data, dict) else None, f"{key}.method")


def _describe(cls: type, data: dict) -> str:
    method = data.get("method")
    return f" for method={method} ({cls.__name__})" if method is not None else ""


def _set(cls: type, data: dict, path: list[str], value: Any, full_key: str) -> None:
    """Set ``path`` of ``data`` (the plain dict of a ``cls``) to ``value`` checked against the field's type."""
    hints = _field_types(cls)
    name = path[0]
    if name not in hints:
        raise ConfigError(f"unknown config key {full_key!r}{_describe(cls, data)}; valid keys here: {sorted(hints)}")
    section = _section_class(hints[name], data.get(name), full_key.rsplit(".", len(path) - 1)[0])
    if section is not None:
        if len(path) == 1:
            first = dataclasses.fields(section)[0].name
            raise ConfigError(f"{full_key!r} is a section; set one of its keys, e.g. {full_key}.{first}=...")
        if path[1:] == ["method"] and section is not _family_of(value, full_key):
            data[name] = {"method": value}  # another family: its defaults
            return
        _set(section, data[name], path[1:], value, full_key)
        return
    if len(path) > 1:
        raise ConfigError(f"unknown config key {full_key!r}: {name!r} has no sub-keys")
    data[name] = _coerce(value, hints[name], full_key)


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
    model section) is resolved by the dict's ``method``. Building the classes checks their ranges."""
    hints = _field_types(cls)
    kwargs = {}
    for name, value in data.items():
        if name not in hints:
            raise ConfigError(f"unknown config key {name!r} for {cls.__name__}")
        section = _section_class(hints[name], value, name)
        if section is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a section (a mapping of keys), got {value!r}")
            kwargs[name] = config_from_dict(section, value)
        else:
            kwargs[name] = _coerce(value, hints[name], name)
    return cls(**kwargs)
