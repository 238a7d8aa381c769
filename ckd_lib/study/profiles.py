"""Profiles: which notebooks a study runs, in which order, with which parameters.

A profile is a YAML file in ``notebooks/profiles/``::

    description: what this profile is for and what it costs
    extends: paper               # optional: the profile whose values this one starts from
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
      partition: gpu             # gpus_per_task, ...; ckd_lib.study.slurm_options), on top of
                                 # those of the profile it extends

Why profiles are the source of every parameter: a notebook's parameters cell leaves them at
None, and the notebook asks its profile for them (``ckd_lib.study.notebook``), so
``python -m ckd_lib.study``, ``papermill -p profile X`` and Run All in JupyterLab compute the same
runs. The root profiles (``paper`` for CIFAR-100, ``imagenet``, ``coco``) set every parameter of
their notebooks: they *are* the paper's setting; every other profile ``extends`` one and states
only how it departs from it. Resolution for a notebook, root first, then each profile down the
chain: its ``common`` values (for parameters the notebook declares), then its own section.
A profile without ``notebooks`` runs its parent's; with them, those, in its order.

``profile`` and ``results_dir`` are set by the runner (or the notebook's caller) and ``devices``
by ``--devices``; a profile may not set the first two. Every name is checked against the
notebooks' parameters cells before anything runs (``ckd_lib.study.params``).

A profile may also be any YAML file given by its path (``--profile path/to/x.yaml``). Its file
name names its results folder (``results/x/``), so a file named like a built-in profile
(``demo.yaml`` elsewhere) is refused: it would mix its runs and report with the built-in's.
``results/<name>/profile.json`` says which file a results folder belongs to: another file of
the same name is refused too, and the report's commands and the index read it to name the
profile as a command line must (:func:`command_form`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ckd_lib.study.params import ParameterError
from ckd_lib.study.paths import StudyPaths, profiles_dir, project_root, resolve
from ckd_lib.study.slurm_options import SlurmOptions
from ckd_lib.yamlio import read_yaml

TOP_KEYS = ("description", "extends", "report", "plugins", "common", "notebooks", "slurm")
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
    parent: Profile | None = None

    @property
    def reference(self) -> str:
        """How a notebook finds this profile again: its name when it lives in
        ``notebooks/profiles/``, else the path of its file."""
        shipped = profiles_dir() / f"{self.name}.yaml"
        if shipped.is_file() and shipped.resolve() == Path(self.path).resolve():
            return self.name
        return str(Path(self.path).resolve())

    def chain(self) -> list[Profile]:
        """The profiles this one is built from, root first, this one last."""
        return (self.parent.chain() if self.parent else []) + [self]

    def values_for(self, notebook: str, declared) -> dict:
        """The parameters of ``notebook`` this profile (and the ones it extends) sets: for each
        profile from the root down, its ``common`` values the notebook declares, then its own
        section of the notebook (unknown names are kept, so that checking can name them)."""
        values: dict = {}
        for level in self.chain():
            values.update({k: v for k, v in level.common.items() if k in declared})
            values.update(level.notebooks.get(notebook) or {})
        return values

    def origin_of(self, notebook: str, name: str) -> str:
        """Which profile of the chain gives ``name`` its value for ``notebook``."""
        for level in reversed(self.chain()):
            if name in (level.notebooks.get(notebook) or {}) or name in level.common:
                return level.name
        return "-"


def available_profiles(folder: Path | None = None) -> list[str]:
    folder = folder or profiles_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(name_or_path: str | Path, folder: Path | None = None,
                 _seen: tuple[str, ...] = ()) -> Profile:
    """A profile by name (``notebooks/profiles/<name>.yaml``) or by path to a YAML file."""
    folder = folder or profiles_dir()
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) else folder / f"{text}.yaml"
    if not path.is_file():
        raise ParameterError(f"profile {text!r} not found ({path}); available: "
                             f"{available_profiles(folder)}")
    shipped = profiles_dir() / f"{path.stem}.yaml"
    if not _seen and shipped.is_file() and shipped.resolve() != path.resolve():
        raise ParameterError(
            f"profile file {text} is named like the built-in profile {path.stem} ({shipped}) "
            f"and would write into its results folder, results/{path.stem}/; rename the file "
            "(a profile's file name names its results folder)")
    data = read_yaml(path, "profile")
    where = f"profile {path.stem} ({path})"
    if not isinstance(data, dict):
        raise ParameterError(f"{where}: expected a mapping with keys {list(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {unknown}; accepted: {list(TOP_KEYS)}")
    parent = None
    extends = data.get("extends")
    if extends is not None:
        if not isinstance(extends, str) or not extends:
            raise ParameterError(f"{where}: 'extends' must name a profile, got {extends!r}")
        if path.stem in _seen or extends in _seen + (path.stem,):
            raise ParameterError(f"{where}: 'extends: {extends}' makes a cycle "
                                 f"({' -> '.join(_seen + (path.stem, extends))})")
        base = path.parent / f"{extends}.yaml" if text.endswith((".yaml", ".yml")) and \
            (path.parent / f"{extends}.yaml").is_file() else extends
        parent = load_profile(base, folder, _seen + (path.stem,))
    notebooks = data.get("notebooks")
    common = data.get("common") or {}
    if notebooks is None and parent is not None:
        notebooks = {n: {} for n in parent.notebooks}
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
    report = data.get("report", parent.report if parent else None)
    if report is not None and report not in notebooks:
        raise ParameterError(f"{where}: report notebook {report!r} is not among its notebooks "
                             f"{list(notebooks)}")
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ParameterError(f"{where}: 'plugins' must be a list of files or module names, got "
                             f"{plugins!r}")
    plugins = [str(resolve(p)) if p.endswith(".py") else p for p in plugins]
    inherited = parent.plugins if parent else []
    # the cluster options of the profile it extends, with this one's on top
    slurm = SlurmOptions.from_mapping(data.get("slurm"), f"{where}, slurm",
                                      base=parent.slurm if parent else None)
    return Profile(name=path.stem, path=path, description=str(data.get("description", "")),
                   common=common, notebooks={n: dict(p or {}) for n, p in notebooks.items()},
                   report=report, plugins=list(dict.fromkeys(inherited + plugins)),
                   slurm=slurm, parent=parent)


# -- which profile file a results folder belongs to -----------------------------------------------
MARKER = "profile.json"


def command_form(reference: str) -> str:
    """How a command line names a profile (``--profile X``, ``make reproduce PROFILE=X``): the
    name of a built-in one; else its file, relative to the project root when inside it (the
    Makefile and the runner run from there), shell-quoted."""
    path = Path(reference)
    if not reference.endswith((".yaml", ".yml")):
        return reference
    try:
        path = path.resolve().relative_to(project_root())
    except ValueError:
        pass
    return shlex.quote(str(path))


def _marker(name: str, results_dir) -> dict | None:
    try:
        data = json.loads((StudyPaths.of(name, results_dir).root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("reference"), str) else None


def check_results_owner(profile: Profile, results_dir) -> None:
    """Refuse a profile whose results folder holds another profile file's results."""
    marker = _marker(profile.name, results_dir)
    if marker is not None and marker["reference"] != profile.reference:
        root = StudyPaths.of(profile.name, results_dir).root
        raise ParameterError(
            f"{root} holds the results of profile {marker['reference']}, not of "
            f"{profile.reference}; rename this profile's file (its name names its results "
            f"folder), or delete {root / MARKER} if it is the same profile moved")


def claim_results(profile: Profile, results_dir) -> None:
    """Write ``results/<name>/profile.json`` (after :func:`check_results_owner`)."""
    from ckd_lib.results import atomic_write_json

    check_results_owner(profile, results_dir)
    atomic_write_json(StudyPaths.of(profile.name, results_dir).root / MARKER,
                      {"profile": profile.name, "reference": profile.reference,
                       "command": command_form(profile.reference)})


def results_profile(name: str, results_dir) -> Profile | None:
    """The profile whose results are ``<results_dir>/<name>/``: the file its ``profile.json``
    names, else the built-in profile ``name``; None when neither loads (a results folder may
    hold a profile this checkout lacks)."""
    import yaml

    marker = _marker(name, results_dir)
    for reference in ([marker["reference"]] if marker else []) + [name]:
        try:
            return load_profile(reference)
        except (ParameterError, OSError, yaml.YAMLError):
            continue
    return None


def results_command_form(name: str, results_dir) -> str:
    """How a command line names the profile of ``<results_dir>/<name>/`` (see
    :func:`command_form`): from its ``profile.json``, else the name."""
    marker = _marker(name, results_dir)
    return command_form(marker["reference"]) if marker else name
