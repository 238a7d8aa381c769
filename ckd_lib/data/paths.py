"""Where datasets live when the caller does not say.

Why an explicit rule instead of a relative path: notebooks run from ``notebooks/``, tests from
the repository root, so ``./data`` would point to different places. The order is:
``$CKD_DATA_ROOT``, else ``<repository>/data`` when ckd_lib runs from a source checkout
(the folder is git-ignored), else ``~/.cache/ckd_lib/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CKD_DATA_ROOT"


def default_data_root() -> Path:
    """The data folder used when ``data_root`` is None (see the module docstring)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "ckd_lib").is_dir():
        return repo / "data"
    return Path.home() / ".cache" / "ckd_lib" / "data"


def resolve_root(data_root: str | os.PathLike | None) -> Path:
    """``data_root`` as a Path, or the default when it is None."""
    return default_data_root() if data_root is None else Path(data_root).expanduser()
