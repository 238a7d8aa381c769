"""Dataclass <-> plain-dict helpers shared by the run configs and the detector spec.

Why: configs and specs are stored in YAML, JSON records and checkpoints, so they travel as plain
dicts; reading one back must refuse a misspelt field (naming the accepted ones) rather than
drop it, must check every value against the field's declared type (naming the field and the
accepted form: ``milestones='abc' must be a list of integers``) rather than fail later inside
the trainer, and writing one must turn tuples into lists so YAML and JSON round-trip it unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from ckd_lib.errors import InputError


def check_known_fields(cls: type, data: Mapping, what: str,
                       error: type[Exception] = InputError) -> None:
    """Raise ``error`` naming the keys of ``data`` that are not fields of dataclass ``cls``."""
    if not isinstance(data, Mapping):
        raise error(f"expected a mapping of {what}, got {type(data).__name__} {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        raise error(f"unknown {what} {unknown}; accepted: {sorted(names)}")


def plain_dict(obj: object) -> dict:
    """``dataclasses.asdict`` with every top-level tuple turned into a list."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


# -- typed fields ----------------------------------------------------------------------------
def _split_optional(annotation) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else Any), optional
    return annotation, False


_FORMS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          dict: "a mapping"}


def form_of(annotation) -> str:
    """The accepted form of a field in words: "a list of integers", "a number or null"."""
    inner, optional = _split_optional(annotation)
    origin = typing.get_origin(inner)
    if inner is Any:
        text = "any value"
    elif origin in (list, tuple):
        item = typing.get_args(inner)[0] if typing.get_args(inner) else Any
        text = {int: "a list of integers", float: "a list of numbers",
                str: "a list of strings"}.get(item, "a list")
    elif origin is dict or inner is dict:
        text = "a mapping"
    else:
        text = _FORMS.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{text} or null" if optional else text


def coerce_scalar(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (int, float, bool, str), or raise ValueError.

    Integers are accepted as floats; integral floats (``1e3``) as integers; numeric strings
    (``"1e-3"``, as YAML 1.1 tools write it) as numbers. A bool is never a number, and NaN or
    infinity is no config value.
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if isinstance(value, bool):
        raise ValueError
    if kind is float:
        if isinstance(value, str):
            value = float(value.strip())
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        raise ValueError
    if kind is int:
        if isinstance(value, str):
            value = float(value.strip()) if any(c in value for c in ".eE") else int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError
    raise TypeError(f"unsupported field type {kind!r}")


def coerce_value(name: str, value: Any, annotation, error: type[Exception] = InputError,
                 form: str | None = None) -> Any:
    """``value`` checked against (and converted to) ``annotation``; ``error`` names the field
    and the accepted ``form`` (default: the annotation's, in words)."""
    form = form or form_of(annotation)
    inner, optional = _split_optional(annotation)
    if value is None:
        if optional or inner is Any:
            return None
        raise error(f"{name}=None is not accepted; {name} must be {form}")
    try:
        if inner is Any:
            return value
        origin = typing.get_origin(inner)
        if origin in (list, tuple):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            args = typing.get_args(inner)
            item = args[0] if args else Any
            items = [v if item is Any else coerce_scalar(v, item) for v in value]
            return tuple(items) if origin is tuple else items
        if origin is dict or inner is dict:
            if not isinstance(value, Mapping):
                raise ValueError
            return dict(value)
        return coerce_scalar(value, inner)
    except (ValueError, TypeError, OverflowError):
        raise error(f"{name}={value!r} is not accepted; {name} must be {form}") from None


def coerce_fields(cls: type, data: Mapping, what: str, error: type[Exception] = InputError,
                  forms: Mapping[str, str] | None = None) -> dict:
    """``data`` with every value checked against the dataclass field it names.

    Unknown keys and missing required fields raise ``error`` listing the accepted ones;
    ``forms`` gives the accepted form, in words, of fields whose type alone says too little.
    """
    forms = forms or {}
    check_known_fields(cls, data, what, error)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{what}: missing required field(s) {missing}")
    return {name: coerce_value(name, value, hints[name], error, forms.get(name))
            for name, value in data.items()}
