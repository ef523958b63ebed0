"""Declared settings: the type, range and default of every knob a probe (or the scorer) has.

A probe declares its settings in ``defaults`` (``{"threshold": rate(0.3), "shots":
integer(3)}``); ``audit.toml`` and the command line are checked against them by value before any
model loads, so ``threshold = "high"`` or a negative ε is one line and exit code 2, not an
``error`` finding after minutes of loading. The declaration is the single source: the checked
values are what the probe reads, and ``redteam list`` prints the same descriptions.

A plain value in ``defaults`` (as a third-party probe may write) is taken as a setting of that
value's type, without a range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One declared setting: ``kind`` is flag, integer, number, numbers (a non-empty list of
    numbers), text or choice; ``low``/``high`` bound numbers (``low_open``: strictly above)."""

    default: Any
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """What a valid value is, in words: 'a number in [0, 1]'."""
        if self.kind == "flag":
            return "true or false"
        if self.kind == "text":
            return "a string"
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        noun = {"integer": "an integer", "number": "a number",
                "numbers": "a non-empty list of numbers"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"{noun} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '≥'} {self.low:g}"
        return noun

    def _number(self, value: Any, integer: bool) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError
        if integer and not isinstance(value, int):
            raise ValueError
        if not math.isfinite(value):
            raise ValueError
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError
        if self.high is not None and value > self.high:
            raise ValueError
        return int(value) if integer else float(value)

    def check(self, value: Any) -> Any:
        """``value`` as the probe reads it; ``ValueError`` when it is not valid."""
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if self.kind == "text":
            if not isinstance(value, str):
                raise ValueError
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError
            return value
        if self.kind == "numbers":
            if not isinstance(value, list) or not value:
                raise ValueError
            return [self._number(v, integer=False) for v in value]
        return self._number(value, integer=self.kind == "integer")


def flag(default: bool) -> Setting:
    return Setting(default, "flag")


def text(default: str = "") -> Setting:
    return Setting(default, "text")


def choice(default: str, choices: tuple[str, ...]) -> Setting:
    return Setting(default, "choice", choices=choices)


def integer(default: int, low: int | None = 0, high: int | None = None) -> Setting:
    return Setting(default, "integer", low=low, high=high)


def number(default: float, low: float | None = 0.0, high: float | None = None,
           low_open: bool = False) -> Setting:
    return Setting(default, "number", low=low, high=high, low_open=low_open)


def rate(default: float) -> Setting:
    """A share, probability or score in [0, 1]."""
    return number(default, 0.0, 1.0)


def numbers(default: list[float], low: float | None = 0.0, high: float | None = None,
            low_open: bool = False) -> Setting:
    return Setting(list(default), "numbers", low=low, high=high, low_open=low_open)


def as_setting(value: Any) -> Setting:
    """A declared ``Setting`` as it is; a plain default as a setting of its type, no range."""
    if isinstance(value, Setting):
        return value
    if isinstance(value, bool):
        return flag(value)
    if isinstance(value, int):
        return integer(value, low=None)
    if isinstance(value, float):
        return number(value, low=None)
    if isinstance(value, list):
        return numbers(value, low=None)
    return text(str(value))


def default_values(declared: Mapping[str, Any]) -> dict[str, Any]:
    """The default value of every declared setting."""
    return {name: as_setting(value).default for name, value in declared.items()}


def resolve_settings(owner: str, declared: Mapping[str, Any],
                     given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults of ``declared`` overridden by ``given``, every given value checked.

    ``owner`` names the section in messages (a probe's name, or ``scoring``). Raises
    ``ValueError`` naming the first unknown setting or bad value.
    """
    if given is not None and not isinstance(given, Mapping):
        raise ValueError(f"{owner}: expected a table of settings, got {given!r}")
    values = default_values(declared)
    for name, value in (given or {}).items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ValueError(f"{owner}: unknown setting {name!r} (known: {known})")
        setting = as_setting(declared[name])
        try:
            values[name] = setting.check(value)
        except ValueError:
            raise ValueError(f"{owner}.{name} = {value!r}: expected {setting.describe()}") from None
    return values
