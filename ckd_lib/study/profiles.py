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

``rehearse-<name>`` is no file: it is ``<name>`` rehearsed (every run, a few steps, generated
data), derived in code by ``ckd_lib.study.rehearse``.

``profile`` and ``results_dir`` are set by the runner (or the notebook's caller) and ``devices``
by ``--devices``; a profile may not set the first two. Every name is checked against the
notebooks' parameters cells before anything runs (``ckd_lib.study.params``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckd_lib.study.params import ParameterError
from ckd_lib.study.paths import profiles_dir, resolve
from ckd_lib.study.slurm_options import SlurmOptions
from ckd_lib.yamlio import read_yaml

TOP_KEYS = ("description", "extends", "report", "plugins", "common", "notebooks", "slurm")
RESERVED = ("profile", "results_dir")
REHEARSAL_PREFIX = "rehearse-"  # ckd_lib.study.rehearse: "rehearse-paper" rehearses paper


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
    # set on the profile ``rehearse-<name>`` (ckd_lib.study.rehearse.Rehearsal), derived in code
    rehearsal: Any = None

    @property
    def reference(self) -> str:
        """How a notebook finds this profile again: its name when it lives in
        ``notebooks/profiles/``, else the path of its file."""
        if self.rehearsal is not None:
            return REHEARSAL_PREFIX + self.parent.reference
        shipped = profiles_dir() / f"{self.name}.yaml"
        if shipped.is_file() and shipped.resolve() == Path(self.path).resolve():
            return self.name
        return str(Path(self.path).resolve())

    @property
    def location(self) -> str:
        """What ``load_profile`` reads this profile back from in another process (a SLURM job):
        the path of its file, or ``rehearse-<that path>`` for a rehearsal."""
        if self.rehearsal is not None:
            return REHEARSAL_PREFIX + self.parent.location
        return str(self.path)

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
    if text.startswith(REHEARSAL_PREFIX) and not (folder / f"{text}.yaml").is_file():
        from ckd_lib.study.rehearse import rehearsal_profile

        return rehearsal_profile(load_profile(text[len(REHEARSAL_PREFIX):], folder, _seen))
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
