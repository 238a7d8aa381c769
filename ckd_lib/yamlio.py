"""Reading YAML the way users write it: configs, profiles and ``--set KEY=VALUE`` values.

Why not plain ``yaml.safe_load``: PyYAML implements YAML 1.1, where ``1e-3`` and ``5e4`` are
strings (a float needs a dot: ``1.0e-3``), so ``lr: 1e-3`` used to reach the trainer as text.
Here numbers in scientific notation are numbers, as in YAML 1.2 and in every other tool. A file
that is missing, empty or malformed is an :class:`~ckd_lib.errors.InputError` naming the file and
the line, not a traceback from the parser.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ckd_lib.errors import InputError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3``, ``2E5`` and ``.5e1`` as floats (YAML 1.2)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """The YAML document in ``text``; a syntax error names ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}" if mark is not None else source
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"{where}: not valid YAML ({problem})") from None


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The YAML document of the file ``path``; missing, unreadable or empty files are errors."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{what} {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{what} {str(path)!r} cannot be read ({error})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise InputError(f"{what} {str(path)!r} is empty")
    return data


def parse_value(text: str) -> Any:
    """One ``--set`` value: YAML scalars and lists (``5``, ``1e-3``, ``[150, 180]``, ``null``);
    text that is not valid YAML (``a: b`` inside a path, say) is kept as the string itself."""
    if text == "":
        return None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError:
        return text


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
