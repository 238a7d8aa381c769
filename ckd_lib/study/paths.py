"""Where the study reads and writes: the project root, the notebooks, a profile's results tree.

Notebooks run from ``notebooks/`` in JupyterLab and from the repository root under the runner,
so relative paths are resolved against one root, never against the working directory:
``$CKD_STUDY_ROOT`` if set, else the source checkout ckd_lib runs from, else the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CKD_STUDY_ROOT"


def project_root() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "notebooks").is_dir():
        return repo
    return Path.cwd().resolve()


def resolve(path: str | os.PathLike) -> Path:
    """``path`` itself when absolute, else relative to the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def profiles_dir() -> Path:
    return notebooks_dir() / "profiles"


@dataclass(frozen=True)
class StudyPaths:
    """The results tree of one profile (docs/CONTRACTS.md, "Study layout")."""

    results_dir: Path
    profile: str

    @classmethod
    def of(cls, profile: str, results_dir: str | os.PathLike = "results") -> StudyPaths:
        return cls(resolve(results_dir), profile)

    @property
    def root(self) -> Path:
        return self.results_dir / self.profile

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def executed(self) -> Path:
        return self.root / "executed"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
