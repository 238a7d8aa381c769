"""A notebook's parameters: read from its ``parameters`` cell and checked against a profile.

papermill injects whatever it is given and accepts unknown names silently, so a typo in a profile
would run a whole notebook with its defaults. Here every parameter a profile sets is checked,
before anything runs, against the notebook's parameters cell: the name must be declared there, and
the value must fit the declared annotation (``epochs: int = None  # epochs per run``). A default
of None means "the profile's value" (``ckd_lib.study.notebook``).

The cell is read with :mod:`ast`, not with papermill's regular expression, so that multi-line
values parse; ``tests/test_notebooks.py`` checks that papermill's own inspection (what
``papermill --help-notebook`` prints) finds the same names, types and help texts.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from ckd_lib.errors import InputError

# Annotations a parameter may use. Union types (``int | None``) are left out on purpose: the
# regular expression of papermill's inspection does not recognise them, so such a parameter would
# disappear from ``papermill --help-notebook``. Use "" or 0 for "not set" instead.
SIMPLE_TYPES = {"int", "float", "str", "bool", "list", "dict", "Any"}
CONTAINERS = {"list", "dict"}


class ParameterError(InputError):
    """A profile sets a parameter a notebook does not declare, or a value of the wrong type."""


@dataclass(frozen=True)
class Parameter:
    """One line of a parameters cell: ``name: annotation = default  # help``."""

    name: str
    annotation: str
    default: Any
    help: str

    def describe(self) -> str:
        return f"{self.name}: {self.annotation} = {self.default!r}  # {self.help}"


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """A notebook from a jupytext script (``.py``, percent format) or an ``.ipynb`` file."""
    path = Path(path)
    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    import jupytext

    return jupytext.read(path, fmt="py:percent")


def parameters_cell(nb: nbformat.NotebookNode, where: str = "notebook"):
    """The one code cell tagged ``parameters``; an error if there is none or more than one."""
    cells = [c for c in nb.cells
             if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{where}: expected exactly one code cell tagged 'parameters' "
                             f"(`# %% tags=[\"parameters\"]`), found {len(cells)}")
    return cells[0]


def _comments(source: str) -> dict[int, str]:
    """Line number -> text of the comment on that line."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def parse_parameters(source: str, where: str = "notebook") -> dict[str, Parameter]:
    """Every ``name: type = value  # help`` of a parameters cell, in order.

    Anything else in the cell (a statement, a value that is not a literal, a missing annotation or
    help comment) is an error: the cell is the notebook's documented interface.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ParameterError(f"{where}: the parameters cell does not parse: {error}") from error
    comments = _comments(source)
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        line = stmt.lineno
        if isinstance(stmt, ast.Assign):
            raise ParameterError(f"{where}, parameters cell line {line}: annotate the parameter "
                                 f"(`name: type = value  # help`), got `{ast.unparse(stmt)}`")
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and stmt.value is not None):
            raise ParameterError(f"{where}, parameters cell line {line}: only "
                                 f"`name: type = value  # help` lines belong here, got "
                                 f"`{ast.unparse(stmt)}`")
        name = stmt.target.id
        lines = source.splitlines()[stmt.lineno - 1:stmt.end_lineno]
        if lines[0].count("=") != 1 or any("=" in text for text in lines[1:]):
            raise ParameterError(f"{where}: parameter {name!r}: keep '=' out of its default "
                                 "value and its comment (papermill --help-notebook skips lines "
                                 "with more than one '=')")
        annotation = ast.unparse(stmt.annotation)
        check_annotation(annotation, f"{where}: parameter {name!r}")
        try:
            default = ast.literal_eval(stmt.value)
        except ValueError as error:
            raise ParameterError(f"{where}: the default of {name!r} must be a literal, got "
                                 f"`{ast.unparse(stmt.value)}`") from error
        help_text = comments.get(stmt.end_lineno, "")
        if not help_text:
            raise ParameterError(f"{where}: parameter {name!r} needs a trailing comment that says "
                                 "what it does (papermill --help-notebook shows it)")
        if default is not None and not matches(default, annotation):
            raise ParameterError(f"{where}: the default {default!r} of {name!r} does not fit its "
                                 f"annotation {annotation}")
        params[name] = Parameter(name, annotation, default, help_text)
    return params


def notebook_parameters(notebook: str | Path | nbformat.NotebookNode,
                        where: str | None = None) -> dict[str, Parameter]:
    """The declared parameters of a notebook (a path to .py/.ipynb, or a notebook object)."""
    if isinstance(notebook, (str, Path)):
        where = where or Path(notebook).stem
        notebook = read_notebook(notebook)
    where = where or "notebook"
    return parse_parameters(parameters_cell(notebook, where).source, where)


# -- types ------------------------------------------------------------------------------------
def _parse_annotation(annotation: str) -> ast.expr:
    try:
        return ast.parse(annotation, mode="eval").body
    except SyntaxError as error:
        raise ParameterError(f"annotation {annotation!r} does not parse") from error


def check_annotation(annotation: str, where: str = "") -> None:
    """Raise unless ``annotation`` uses only int, float, str, bool, Any, list[T], dict[K, V]."""

    def walk(node):
        if isinstance(node, ast.Name) and node.id in SIMPLE_TYPES:
            return
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in CONTAINERS:
            args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if len(args) != (2 if node.value.id == "dict" else 1):
                raise ParameterError(f"{where}: annotation {annotation!r}: list[T] or dict[K, V]")
            for arg in args:
                walk(arg)
            return
        raise ParameterError(f"{where}: annotation {annotation!r} is not supported; use int, "
                             f"float, str, bool, Any, list[T] or dict[K, V] (no unions: "
                             f"papermill's inspection does not read them)")

    walk(_parse_annotation(annotation))


def matches(value: Any, annotation: str) -> bool:
    """Whether ``value`` (as read from YAML) fits ``annotation``. An int fits float; a bool is
    not an int."""

    def fits(v, node) -> bool:
        if isinstance(node, ast.Name):
            kind = node.id
            if kind == "Any":
                return True
            if kind == "bool":
                return isinstance(v, bool)
            if kind == "int":
                return isinstance(v, int) and not isinstance(v, bool)
            if kind == "float":
                return isinstance(v, (int, float)) and not isinstance(v, bool)
            if kind == "str":
                return isinstance(v, str)
            if kind == "list":
                return isinstance(v, list)
            if kind == "dict":
                return isinstance(v, dict)
            return False
        if isinstance(node, ast.Subscript):
            args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if node.value.id == "list":
                return isinstance(v, list) and all(fits(item, args[0]) for item in v)
            return isinstance(v, dict) and all(fits(k, args[0]) and fits(x, args[1])
                                               for k, x in v.items())
        return False

    return fits(value, _parse_annotation(annotation))


def type_name(value: Any) -> str:
    """A short description of a YAML value's type, for error messages."""
    if isinstance(value, list):
        inner = sorted({type_name(v) for v in value})
        return f"list[{' | '.join(inner)}]" if inner else "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def check_parameters(values: dict, declared: dict[str, Parameter], notebook: str,
                     origin: str = "profile") -> None:
    """Raise a :class:`ParameterError` naming every bad parameter of ``values``."""
    problems = []
    for name, value in values.items():
        if name not in declared:
            problems.append(f"unknown parameter {name!r}")
        elif not matches(value, declared[name].annotation):
            problems.append(f"parameter {name!r} must be {declared[name].annotation}, got "
                            f"{value!r} ({type_name(value)})")
    if problems:
        accepted = "\n".join(f"    {p.describe()}" for p in declared.values())
        raise ParameterError(f"{origin}, notebook {notebook}: " + "; ".join(problems)
                             + f"\n  accepted parameters of {notebook}:\n{accepted}")
