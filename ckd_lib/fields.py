"""Dataclass <-> plain-dict helpers shared by the run configs and the detector spec.

Why: configs and specs are stored in YAML, JSON records and checkpoints, so they travel as plain
dicts; reading one back must refuse a misspelt field (naming the accepted ones) rather than
drop it, and writing one must turn tuples into lists so YAML and JSON round-trip it unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


def check_known_fields(cls: type, data: Mapping, what: str,
                       error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the keys of ``data`` that are not fields of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise error(f"unknown {what} {unknown}; accepted: {sorted(names)}")


def plain_dict(obj: object) -> dict:
    """``dataclasses.asdict`` with every top-level tuple turned into a list."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}
