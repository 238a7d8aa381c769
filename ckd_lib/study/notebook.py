"""What a notebook calls first: its parameters, from its profile, with what was given explicitly.

Why the notebook resolves them itself (rather than the runner injecting every value): the same
notebook is run three ways — ``python -m ckd_lib.study --profile X``, ``papermill ... -p profile
X``, and Run All in JupyterLab after editing the ``profile`` line — and all three must compute the
same runs. So a parameters cell leaves every profile-controlled parameter at ``None``; a value
that is not None was given explicitly (papermill ``-p``, or an edit of the cell), overrides the
profile, and is shown as an override in the notebook's banner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ckd_lib.study.params import ParameterError, check_parameters, notebook_parameters
from ckd_lib.study.paths import notebooks_dir
from ckd_lib.study.profiles import Profile, available_profiles, load_profile

RUNNER_SET = ("profile", "results_dir")


@dataclass
class NotebookParameters:
    """A notebook's resolved parameters (attribute access), where each came from, and the
    explicit overrides."""

    notebook: str
    source: Profile  # the profile (with its chain) the values come from
    values: dict
    overrides: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(f"notebook {self.notebook} has no parameter {name!r}") \
                from None

    def origin(self, name: str) -> str:
        if name in self.overrides:
            return "given"
        return f"profile {self.source.origin_of(self.notebook, name)}"


def parameters(notebook: str, namespace: dict) -> NotebookParameters:
    """Resolve the parameters of ``notebook`` (its name, e.g. "20_same_arch") from the values
    its parameters cell left in ``namespace`` (the notebook's ``globals()``): ``profile``
    names the profile; every other parameter that is None takes the profile's value; one that
    is not None is an explicit override (type-checked). Loads the profile's plugins."""
    declared = notebook_parameters(notebooks_dir() / f"{notebook}.py", where=notebook)
    undeclared = sorted(_injected(namespace) - set(declared))
    if undeclared:
        raise ParameterError(
            f"notebook {notebook} declares no parameter {', '.join(map(repr, undeclared))} "
            f"(given with papermill -p); its parameters: {', '.join(declared)} "
            "(papermill --help-notebook describes them)")
    given = {name: namespace.get(name) for name in declared}
    name = given.get("profile") or "demo"
    if name not in available_profiles() and not str(name).endswith((".yaml", ".yml")) and all(
            given[k] is not None for k in declared if k not in RUNNER_SET):
        # every value given: the profile only names the results folder (ad-hoc reports, tests)
        profile = Profile(name=str(name), path=notebooks_dir() / "profiles" / f"{name}.yaml",
                          notebooks={notebook: {}})
    else:
        profile = load_profile(name)
    if notebook not in profile.notebooks:
        runs = [name for name in available_profiles()
                if notebook in _notebooks_of(name)]
        raise ParameterError(f"profile {profile.name!r} does not run {notebook}; profiles that "
                             f"do: {runs}")
    from ckd_lib.methods import load_plugins

    load_plugins(profile.plugins)
    from_profile = profile.values_for(notebook, declared)
    check_parameters(from_profile, declared, notebook, origin=f"profile {profile.name}")
    given = {k: _parsed(v, declared[k].annotation) for k, v in given.items()
             if v is not None and k not in RUNNER_SET}
    check_parameters(given, declared, notebook, origin="given")
    # a value equal to the profile's (as the study runner passes them all) is no override
    explicit = {k: v for k, v in given.items() if from_profile.get(k) != v}
    values = {**from_profile, **given}
    values.update({k: namespace.get(k) for k in RUNNER_SET if k in declared})
    if "profile" in values:  # a profile given by its file: its name names the results folder
        values["profile"] = profile.name
    missing = [k for k in declared if values.get(k) is None]
    if missing:
        chain = " -> ".join(p.name for p in reversed(profile.chain()))
        raise ParameterError(f"notebook {notebook}: parameter(s) {missing} have no value in "
                             f"profile {chain}; set them there or pass them explicitly")
    return NotebookParameters(notebook, profile, values, explicit)


def _injected(namespace: dict) -> set[str]:
    """The names papermill's injected-parameters cell assigned: it runs right after the
    parameters cell, and IPython keeps its source (which starts with papermill's "# Parameters"
    comment) in the input history ``In``. Outside IPython (plan mode): none."""
    import ast

    names: set[str] = set()
    for source in namespace.get("In") or ():
        if isinstance(source, str) and source.startswith("# Parameters\n"):
            try:
                body = ast.parse(source).body
            except SyntaxError:
                continue
            names.update(target.id for node in body if isinstance(node, ast.Assign)
                         for target in node.targets if isinstance(target, ast.Name))
    return names


def _parsed(value, annotation: str):
    """papermill's ``-p NAME VALUE`` passes lists and mappings as text (``"[1, 2]"``): read
    such text as YAML, as ``--set`` does, when the parameter is not a string."""
    if isinstance(value, str) and annotation != "str":
        from ckd_lib.yamlio import parse_value

        return parse_value(value)
    return value


def _notebooks_of(name: str) -> list[str]:
    try:
        return list(load_profile(name).notebooks)
    except ParameterError:
        return []
