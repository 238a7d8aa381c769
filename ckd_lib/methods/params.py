"""A loss term's parameter: its type, default and constraint, declared once.

Why declarations rather than name patterns: the old rule ("names ending in _weight or
temperature are real numbers") let ``gamma: 2`` and ``gamma: 2.0`` become two different runs and a
negative ``gamma`` pass. A declared parameter is converted to its type before hashing (so equal
values hash equally) and checked against its constraint before any data loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ckd_lib.errors import ConfigError
from ckd_lib.fields import coerce_scalar


@dataclass(frozen=True)
class Param:
    """One parameter of a loss term.

    ``kind``: int, float, bool or str. ``minimum`` (inclusive) and ``positive`` (> 0) bound
    numbers; ``choices`` lists the accepted values; ``optional`` accepts None ("not used").
    Numbers default to ``minimum=0``: weights, temperatures and counts are never negative.
    """

    name: str
    kind: type
    default: Any
    help: str = ""
    choices: tuple = ()
    minimum: float | None = 0.0
    positive: bool = False
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float, bool, str):
            raise TypeError(f"parameter {self.name}: kind must be int, float, bool or str")
        if not self.name.isidentifier():
            raise ValueError(f"parameter name {self.name!r} must be an identifier")
        self.check(self.default, "default")

    def renamed(self, name: str) -> Param:
        return Param(name, self.kind, self.default, self.help, self.choices, self.minimum,
                     self.positive, self.optional)

    def with_default(self, default: Any) -> Param:
        return Param(self.name, self.kind, default, self.help, self.choices, self.minimum,
                     self.positive, self.optional)

    def form(self) -> str:
        """The accepted values in words, for error messages and listings."""
        if self.choices:
            text = f"one of {list(self.choices)}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "a string"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.positive:
                text += " > 0"
            elif self.minimum is not None:
                text += f" >= {self.minimum:g}"
        return text + (" or null" if self.optional else "")

    def check(self, value: Any, where: str = "loss") -> Any:
        """``value`` converted to this parameter's type; an InputError names it otherwise."""
        label = f"{where}.{self.name}" if where else self.name
        if value is None and self.optional:
            return None
        try:
            if value is None:
                raise ValueError
            converted = coerce_scalar(value, self.kind)
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(f"{label}={value!r} is not accepted; it must be {self.form()}") \
                from None
        bad = (self.choices and converted not in self.choices) or (
            self.kind in (int, float) and ((self.positive and not converted > 0) or (
                self.minimum is not None and converted < self.minimum)))
        if bad:
            raise ConfigError(f"{label}={value!r} is not accepted; it must be {self.form()}")
        return converted

    def describe(self) -> str:
        default = "null" if self.default is None else repr(self.default)
        note = f" - {self.help}" if self.help else ""
        return f"{self.name}: {self.form()} (default {default}){note}"
