"""Profiles: which notebooks a study runs, in which order, with which parameters.

A profile is a YAML file in ``notebooks/profiles/``::

    description: what this profile is for and what it costs
    report: 90_report            # optional: the notebook whose executed copy becomes report.html
    plugins: [my_method.py]      # optional: files or modules registering methods (relative
                                 # paths: from the repository root)
    common:                      # given to every notebook that declares the parameter
      dataset: fashion_mnist
    notebooks:                   # in execution order; each with its own parameters
      00_environment: {}
      20_same_arch:
        seeds: [0, 1]
    slurm:                       # optional: options of --executor slurm (partition, time_min,
      partition: gpu             # gpus_per_task, ...; ckd_lib.study.slurm_options)

``profile`` and ``results_dir`` are set by the runner, and ``devices`` by ``--devices``; a
profile may not set the first two. Every name is checked against the notebooks' parameters cells
before anything runs (``ckd_lib.study.params``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ckd_lib.study.params import ParameterError
from ckd_lib.study.paths import profiles_dir, resolve
from ckd_lib.study.slurm_options import SlurmOptions
from ckd_lib.yamlio import read_yaml

TOP_KEYS = ("description", "report", "plugins", "common", "notebooks", "slurm")
RESERVED = ("profile", "results_dir")


@dataclass
class Profile:
    name: str
    path: Path
    description: str = ""
    common: dict = field(default_factory=dict)
    notebooks: dict[str, dict] = field(default_factory=dict)
    report: str | None = None
    plugins: list[str] = field(default_factory=list)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


def available_profiles(folder: Path | None = None) -> list[str]:
    folder = folder or profiles_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(name_or_path: str | Path, folder: Path | None = None) -> Profile:
    """A profile by name (``notebooks/profiles/<name>.yaml``) or by path to a YAML file."""
    folder = folder or profiles_dir()
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) else folder / f"{text}.yaml"
    if not path.is_file():
        raise ParameterError(f"profile {text!r} not found ({path}); available: "
                             f"{available_profiles(folder)}")
    data = read_yaml(path, "profile")
    where = f"profile {path.stem} ({path})"
    if not isinstance(data, dict):
        raise ParameterError(f"{where}: expected a mapping with keys {list(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {unknown}; accepted: {list(TOP_KEYS)}")
    notebooks = data.get("notebooks") or {}
    common = data.get("common") or {}
    if not isinstance(notebooks, dict) or not notebooks:
        raise ParameterError(f"{where}: 'notebooks' must map notebook names to parameters")
    if not isinstance(common, dict):
        raise ParameterError(f"{where}: 'common' must map parameter names to values")
    for name, params in notebooks.items():
        if params is not None and not isinstance(params, dict):
            raise ParameterError(f"{where}: the parameters of {name} must be a mapping, got "
                                 f"{params!r}")
    for scope, params in [("common", common)] + [(n, p or {}) for n, p in notebooks.items()]:
        reserved = sorted(set(params) & set(RESERVED))
        if reserved:
            raise ParameterError(f"{where}, {scope}: {reserved} are set by the runner "
                                 f"(--profile, --results-dir), not by a profile")
    report = data.get("report")
    if report is not None and report not in notebooks:
        raise ParameterError(f"{where}: report notebook {report!r} is not among its notebooks "
                             f"{list(notebooks)}")
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ParameterError(f"{where}: 'plugins' must be a list of files or module names, got "
                             f"{plugins!r}")
    plugins = [str(resolve(p)) if p.endswith(".py") else p for p in plugins]
    slurm = SlurmOptions.from_mapping(data.get("slurm"), f"{where}, slurm")
    return Profile(name=path.stem, path=path, description=str(data.get("description", "")),
                   common=common, notebooks={n: dict(p or {}) for n, p in notebooks.items()},
                   report=report, plugins=plugins, slurm=slurm)
