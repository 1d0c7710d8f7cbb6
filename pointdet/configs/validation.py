"""Ranges of the numeric and list settings, checked once when a config section is built (its ``__post_init__``).

Each config class lists its rules in ``RANGES`` (field name -> ``Rule``) beside its fields; a value outside its
range raises ``ConfigError`` naming the key, the value and what is allowed, instead of failing later inside
PyTorch or the trainer (``optim.batch_size=0``, ``eval.every=0``, ``data.scales=[]``). ``None`` always passes: it
means "off" or "the default" wherever a field allows it.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pointdet.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A test of one value and the phrase saying what it allows (``must be <allowed>``)."""

    test: Callable[[Any], bool]
    allowed: str


def at_least(low: float) -> Rule:
    return Rule(lambda value: value >= low, f">= {low}")


def above(low: float) -> Rule:
    return Rule(lambda value: value > low, f"> {low}")


def within(low: float, high: float) -> Rule:
    """The closed interval ``[low, high]``."""
    return Rule(lambda value: low <= value <= high, f"in [{low}, {high}]")


def fraction(low_open: bool = False, high_open: bool = False) -> Rule:
    """A number in [0, 1], either end open if asked."""
    low, high = ("(" if low_open else "["), (")" if high_open else "]")
    return Rule(
        lambda value: (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1),
        f"in {low}0, 1{high}",
    )


def each(rule: Rule, non_empty: bool = True) -> Rule:
    """A list whose every item passes ``rule`` (and that has at least one item when ``non_empty``)."""
    allowed = f"a {'non-empty ' if non_empty else ''}list of numbers {rule.allowed}"
    return Rule(lambda values: (bool(values) or not non_empty) and all(rule.test(v) for v in values), allowed)


def is_box_range(pair: Any) -> bool:
    """Whether ``pair`` is a valid box-size range ``(low, high)``: two numbers with ``0 <= low < high`` (``high`` may
    be ``inf``; NaN is not)."""
    return len(pair) == 2 and 0 <= pair[0] < pair[1]


def shown(value: Any) -> str:
    """A value as the user typed it: lists (of lists) in brackets."""

    def plain(item: Any) -> Any:
        return [plain(part) for part in item] if isinstance(item, tuple) else item

    return repr(plain(value))


def _finite(value: Any) -> bool:
    items = value if isinstance(value, tuple) else (value,)
    return all(not isinstance(v, float) or math.isfinite(v) for v in items)


def check_ranges(config: Any) -> None:
    """Check every field of ``config`` named in its class's ``RANGES``.

    Raises:
        ConfigError: ``<section>.<key>=<value>: must be <allowed>`` for the first value out of its range.
    """
    prefix = f"{config.SECTION}." if config.SECTION else ""
    for name, rule in config.RANGES.items():
        value = getattr(config, name)
        if value is not None and not (_finite(value) and rule.test(value)):
            raise ConfigError(f"{prefix}{name}={shown(value)}: must be {rule.allowed}")


_TIMM_BACKBONE = re.compile(r"timm:[A-Za-z0-9][A-Za-z0-9_.\-]*")


def check_backbone_name(config: Any) -> None:
    """Accept ``config.backbone`` when it is one of the literals of its annotation or ``timm:NAME``.

    Whether timm has ``NAME`` is checked when the model is built (timm is imported there, not here).

    Raises:
        ConfigError: any other value (``vgg``, ``timm:``).
    """
    annotation = typing.get_type_hints(type(config))["backbone"]
    builtin = [value for option in typing.get_args(annotation) for value in typing.get_args(option)]
    name = config.backbone
    if name not in builtin and not (isinstance(name, str) and _TIMM_BACKBONE.fullmatch(name)):
        raise ConfigError(
            f"model.backbone: {name!r} is not one of {builtin} or 'timm:NAME' "
            "(a timm model, e.g. timm:efficientnet_lite0)"
        )


SIZE_DIVISORS = {"hourglass104": 128, "hourglass52": 128}
"""Backbones whose input sides must be multiples of more than 32 (the stride of every other backbone)."""


def size_divisor(backbone: str) -> int:
    """The multiple ``backbone`` needs its input sides in (its ``size_divisor``; 32 for ResNet, DLA, timm)."""
    return SIZE_DIVISORS.get(backbone, 32)


def check_input_size(config: Any) -> None:
    """``data.input_size`` and ``data.input_height`` of an experiment are multiples of its backbone's stride.

    Raises:
        ConfigError: naming the key, the stride and the nearest allowed sizes.
    """
    divisor = size_divisor(config.model.backbone)
    for name in ("input_size", "input_height"):
        value = getattr(config.data, name)
        if value is not None and value % divisor:
            below, above_ = value // divisor * divisor, (value // divisor + 1) * divisor
            nearest = f"{below} or {above_}" if below else str(above_)
            raise ConfigError(
                f"data.{name}={value}: must be a multiple of {divisor}, the stride of the {config.model.backbone} "
                f"backbone (e.g. {nearest})"
            )
