"""The method registry: loss terms, and methods as named sums of terms.

Why: a distillation method used to be spread over a dozen places (an objective class, defaults,
the accepted names, the study's lists, the report's order and colours, the detection distiller).
Here a *term* (CE, KD, DKD, CKD, ReviewKD, or a user's) declares its parameters, what it needs
(``teacher_logits``, ``labels``, ``features`` of student and teacher) and how it computes its
weighted value; a *method* is a named sum of terms for one task (classification or detection).
Config validation and hashing, the command lines, the study's method lists, the report's order
and colours and the detection distiller all read this registry, so a new method is one
``register_method`` call in one file, inside ``ckd_lib`` or in a user's plugin
(:mod:`ckd_lib.methods.plugins`).

A term computes on a :class:`TermInputs` and returns its *weighted* value; the objective sums
the terms in the method's order and multiplies the ``warmup`` terms by the linear warm-up
factor. Terms with trainable parameters (a learnable temperature, ReviewKD's connectors) are
modules; they hand the trainer their own parameter groups (:meth:`TermModule.param_groups`).
"""

from __future__ import annotations

import colorsys
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ckd_lib.errors import ConfigError
from ckd_lib.methods.contract import caller_outside, defined_at
from ckd_lib.methods.params import Param

TASKS = ("classification", "detection")
NEEDS = ("teacher_logits", "labels", "features")
WARMUP_PARAM = "warmup_epochs"


@dataclass
class TermInputs:
    """What one training step hands every term: logits of the same samples (classification) or
    of the same sampled proposals (detection), their labels, and features when a term needs them
    (classification: ``forward_features`` dicts; detection: the FPN levels, shallow to deep)."""

    student_logits: Any
    teacher_logits: Any = None
    labels: Any = None
    student_features: Any = None
    teacher_features: Any = None


@dataclass(frozen=True)
class TermContext:
    """What a term's module is built from: the task and the two models (teacher may be None)."""

    task: str
    student: nn.Module | None = None
    teacher: nn.Module | None = None


class TermModule(nn.Module):
    """Base of every term's module: ``forward(inputs) -> weighted value``.

    ``param_groups(weight_decay)`` lists ``(parameters, weight_decay)`` pairs the optimizer must
    train (default: every parameter, with the run's weight decay); ``metrics()`` adds values to
    the epoch's history (a learnable temperature's τ).
    """

    def __init__(self, params: dict):
        super().__init__()
        self.params = dict(params)

    def param_groups(self, weight_decay: float) -> list[tuple[list, float]]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [(params, weight_decay)] if params else []

    def metrics(self) -> dict[str, float]:
        return {}


class FunctionTerm(TermModule):
    """A term without state: ``compute(inputs, params)``."""

    def __init__(self, params: dict, compute: Callable[[TermInputs, dict], Any]):
        super().__init__(params)
        self.compute = compute

    def forward(self, inputs: TermInputs):
        return self.compute(inputs, self.params)


@dataclass(frozen=True)
class Term:
    """A registered loss term; see the module docstring."""

    name: str
    params: tuple[Param, ...]
    needs: frozenset[str]
    tasks: tuple[str, ...]
    compute: Callable[[TermInputs, dict], Any] | None = None
    module: Callable[[dict, TermContext], TermModule] | None = None
    help: str = ""
    source: str = "ckd_lib"
    # checks a combination of parameters (raising ValueError) before any run starts
    check: Callable[[dict], None] | None = None
    # file:line of its compute function or module class: what errors about the term name
    defined_at: str = ""

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def build(self, params: dict, context: TermContext) -> TermModule:
        if self.module is not None:
            return self.module(params, context)
        return FunctionTerm(params, self.compute)


@dataclass(frozen=True)
class TermUse:
    """A term inside a method: its parameters' names there (``rename``: term name -> method
    name), the method's defaults (by method name), the parameters fixed at the term's defaults
    (``hidden``, term names), and whether the warm-up factor scales it."""

    term: Term
    rename: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    warmup: bool = False

    def method_params(self) -> list[tuple[str, Param]]:
        """(term parameter name, the parameter as the method exposes it)."""
        out = []
        for p in self.term.params:
            if p.name in self.hidden:
                continue
            name = self.rename.get(p.name, p.name)
            param = p.renamed(name)
            if name in self.defaults:
                param = param.with_default(param.check(self.defaults[name], "default"))
            out.append((p.name, param))
        return out


@dataclass(frozen=True)
class Method:
    """A named sum of terms for one task; see the module docstring.

    ``recipe_from``: the method whose published recipe (schedule, lr, batch) it borrows when the
    recipes hold no row of its own; ``recipe_params``: the only loss parameters whose per-pair
    values that recipe passes on (:meth:`recipe_rule`); ``main``: part of the study's main
    tables by default; ``color``: its colour in every figure (else :func:`method_color` picks
    one no other method has).
    """

    name: str
    task: str
    uses: tuple[TermUse, ...]
    warmup_epochs: int | None = None
    recipe_from: str | None = None
    main: bool = False
    color: str | None = None
    help: str = ""
    source: str = "ckd_lib"
    recipe_params: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(u.term.name for u in self.uses)

    @property
    def needs(self) -> frozenset[str]:
        return frozenset().union(*(u.term.needs for u in self.uses))

    @property
    def needs_teacher(self) -> bool:
        """Whether a teacher must run: for its logits, or for its features."""
        return bool(self.needs & {"teacher_logits", "features"})

    @property
    def needs_features(self) -> bool:
        return "features" in self.needs

    def params(self) -> dict[str, Param]:
        """Every parameter the method accepts in a config's ``loss``, with its default."""
        out: dict[str, Param] = {}
        for use in self.uses:
            for _, param in use.method_params():
                out[param.name] = param
        if self.warmup_epochs is not None:
            out[WARMUP_PARAM] = Param(WARMUP_PARAM, int, self.warmup_epochs,
                                      "epochs of linear warm-up of the distillation terms")
        return out

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.params().items()}

    def resolve(self, given: Mapping | None = None, where: str = "loss") -> dict:
        """The method's defaults updated by ``given``, every value converted and checked."""
        accepted = self.params()
        given = dict(given or {})
        unknown = sorted(set(map(str, given)) - set(accepted))
        if unknown:
            raise ConfigError(f"{where} parameter(s) {unknown} do not apply to method "
                             f"{self.name}; accepted: {sorted(accepted)}")
        resolved = {name: param.check(given.get(name, param.default), where)
                     for name, param in accepted.items()}
        for use in self.uses:
            if use.term.check is not None:
                try:
                    use.term.check(self.term_params(use, resolved))
                except ValueError as error:
                    raise ConfigError(f"{where} of method {self.name}: {error}") from None
        return resolved

    def term_params(self, use: TermUse, resolved: Mapping) -> dict:
        """The parameters of ``use``'s term under the term's own names (hidden at defaults)."""
        names = dict(use.method_params())
        return {p.name: resolved[names[p.name].name] if p.name in names else p.default
                for p in use.term.params}

    def build_terms(self, resolved: Mapping, context: TermContext) -> dict[str, TermModule]:
        return {use.term.name: use.term.build(self.term_params(use, resolved), context)
                for use in self.uses}

    def warmup_terms(self) -> tuple[str, ...]:
        return tuple(u.term.name for u in self.uses if u.warmup)

    def recipe_rule(self) -> str:
        """What a recipe borrowed from ``recipe_from`` gives this method, in words: the rule
        that --print-config, --list-methods and the report's provenance state."""
        if not self.recipe_from:
            return ""
        passed = (f"only {', '.join(self.recipe_params)} of {self.recipe_from}'s per-pair loss "
                  "values (its recipe_params)" if self.recipe_params
                  else f"none of {self.recipe_from}'s per-pair loss values (no recipe_params)")
        return (f"{self.name} borrows {self.recipe_from}'s recipe of each pair (epochs, "
                f"schedule, lr, batch, weight decay) and takes {passed}; every other loss "
                f"parameter keeps {self.name}'s own default")

    def describe(self) -> str:
        lines = [f"{self.name} ({self.task}): {' + '.join(self.terms) or 'no distillation term'}"
                 + (f"; {self.recipe_rule()}" if self.recipe_from else "")]
        lines += [f"  {p.describe()}" for p in self.params().values()]
        return "\n".join(lines)


# -- the registry --------------------------------------------------------------------------------
_TERMS: dict[str, Term] = {}
_METHODS: dict[tuple[str, str], Method] = {}
# Who is registering: "ckd_lib", or the plugin file being loaded (set by ckd_lib.methods.plugins).
_SOURCE = ["ckd_lib"]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not accepted; choose one of {list(TASKS)}")


def register_term(name: str, *, params: Iterable[Param] = (), needs: Iterable[str] = (),
                  tasks: Iterable[str] = TASKS, compute=None, module=None, help: str = "",
                  source: str | None = None, check=None) -> Term:
    """Register a loss term; give ``compute(inputs, params)`` (stateless) or ``module(params,
    context)`` (a :class:`TermModule` with trainable parameters). Registering the same name
    again from the same source replaces it (a plugin reloaded); from another source is an error.
    """
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"term name {name!r}: use a lower-case identifier (it names the "
                         f"history's loss_{name} column)")
    if (compute is None) == (module is None):
        raise ValueError(f"term {name}: give exactly one of compute= or module=")
    needs = frozenset(needs)
    if needs - set(NEEDS):
        raise ValueError(f"term {name}: needs {sorted(needs - set(NEEDS))} unknown; "
                         f"accepted: {list(NEEDS)}")
    for task in tasks:
        _check_task(task)
    source = source or _SOURCE[-1]
    old = _TERMS.get(name)
    if old is not None and old.source != source:
        raise ValueError(f"term {name!r} is already registered by {old.source}")
    where = defined_at(compute or module) or caller_outside(__file__)
    term = Term(name, tuple(params), needs, tuple(tasks), compute, module, help, source, check,
                where)
    _TERMS[name] = term
    return term


def use(term: str, *, rename: Mapping[str, str] | None = None, hide: Iterable[str] = (),
        **defaults) -> dict:
    """A term inside :func:`register_method`, with renamed parameters, hidden ones (fixed at
    the term's defaults) and the method's own defaults (by their names in the method)."""
    return {"term": term, "rename": dict(rename or {}), "hide": tuple(hide),
            "defaults": defaults}


def register_method(name: str, terms: Iterable[str | dict], *, task: str = "classification",
                    warmup: Iterable[str] = (), warmup_epochs: int = 20,
                    recipe_from: str | None = None, recipe_params: Iterable[str] = (),
                    main: bool = False, color: str | None = None, help: str = "",
                    source: str | None = None) -> Method:
    """Register a method: the named sum of ``terms`` (names, or :func:`use` entries) for ``task``.

    ``warmup``: the terms scaled by the linear warm-up factor (the method then accepts
    ``warmup_epochs``, default ``warmup_epochs``); ``recipe_from``: borrow that method's
    published recipes (epochs, schedule, lr, batch, weight decay) where it has none;
    ``recipe_params``: the loss parameters (of this method, by the same name in the lender)
    whose per-pair values the borrowed recipe passes on; every other keeps this method's
    default, whatever the lender's row says; ``main``: in the study's main tables by default;
    ``color``: ``#rrggbb``, one no other method has (default: :func:`method_color` picks one).
    """
    _check_task(task)
    source = source or _SOURCE[-1]
    if not name or any(c.isspace() for c in name) or "/" in name:
        raise ValueError(f"method name {name!r}: no spaces or slashes")
    uses = []
    for item in terms:
        spec = use(item) if isinstance(item, str) else dict(item)
        term = _TERMS.get(spec["term"])
        if term is None:
            raise ValueError(f"method {name}: term {spec['term']!r} is not registered; "
                             f"registered terms: {sorted(_TERMS)}")
        if task not in term.tasks:
            raise ValueError(f"method {name}: term {term.name} does not apply to {task}")
        uses.append(TermUse(term, spec["rename"], spec["defaults"], frozenset(spec["hide"]),
                            term.name in set(warmup)))
    warmup = tuple(warmup)
    missing = sorted(set(warmup) - {u.term.name for u in uses})
    if missing:
        raise ValueError(f"method {name}: warm-up terms {missing} are not among its terms")
    recipe_params = tuple(recipe_params)
    if recipe_params and not recipe_from:
        raise ValueError(f"method {name}: recipe_params {list(recipe_params)} without "
                         "recipe_from (the method whose recipe passes them on)")
    if color is not None and not _HEX.fullmatch(str(color)):
        raise ValueError(f"method {name}: color={color!r}; give '#rrggbb' (figures and the "
                         "HTML report both use it)")
    method = Method(name, task, tuple(uses), warmup_epochs if warmup else None, recipe_from,
                    main, color, help, source, recipe_params)
    unknown = sorted(set(recipe_params) - set(method.params()))
    if unknown:
        raise ValueError(f"method {name}: recipe_params {unknown} are not its parameters; "
                         f"its parameters: {sorted(method.params())}")
    names = [p.name for u in method.uses for _, p in u.method_params()]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"method {name}: parameters {clash} are declared by several terms; "
                         "rename them with use(term, rename={...})")
    if len({u.term.name for u in uses}) != len(uses):
        raise ValueError(f"method {name}: a term appears twice")
    old = _METHODS.get((task, name))
    if old is not None and old.source != source:
        raise ValueError(f"method {name!r} ({task}) is already registered by {old.source}")
    holder = next((m for (_, n), m in _METHODS.items() if color and n != name
                   and m.color and m.color.lower() == color.lower()
                   and not m.source == source == "ckd_lib"),
                  None)
    if holder is not None:
        raise ValueError(f"method {name}: color {color} is {holder.name}'s ({holder.source}); "
                         "choose another, or leave color out to get one no method has")
    _METHODS[(task, name)] = method
    return method


def _plugins_loaded() -> None:
    from ckd_lib.methods.plugins import load_env_plugins

    load_env_plugins()


def get_method(name: str, task: str = "classification") -> Method:
    """The registered method ``name`` of ``task``; a ConfigError lists the accepted names."""
    _check_task(task)
    _plugins_loaded()
    method = _METHODS.get((task, name))
    if method is None:
        raise ConfigError(f"method={name!r} is not accepted: {name!r} is not one of "
                          f"{', '.join(method_names(task))} (the {task} methods)")
    return method


def method_names(task: str = "classification") -> list[str]:
    """The registered methods of ``task`` in registration order (built-in first)."""
    _check_task(task)
    _plugins_loaded()
    return [m.name for (t, _), m in _METHODS.items() if t == task]


def main_methods(task: str = "classification") -> list[str]:
    """The methods of the study's main tables (``main=True``), in order."""
    return [n for n in method_names(task) if _METHODS[(task, n)].main]


def all_method_names() -> list[str]:
    """Every method name of every task, once, in registration order: the report's order."""
    _plugins_loaded()
    return list(dict.fromkeys(name for _, name in _METHODS))


# seaborn's "colorblind" palette (Okabe-Ito based), written out so that colours do not depend on
# whether or which seaborn is installed: the built-in methods take theirs from it.
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
           "#949494", "#ece133", "#56b4e9")
# Paul Tol's "muted" scheme (colour-blind safe), less those close to a PALETTE colour: with
# PALETTE, the colours a method registered without one may get (see method_color).
MORE_COLORS = ("#332288", "#882255", "#999933", "#44aa99", "#aa4499", "#cc6677", "#117733",
               "#88ccee", "#ddcc77")
# the report draws the teacher in this colour; no method may take it
TEACHER_COLOR = "#3b3b3b"
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def _free_color(name: str, taken: set[str]) -> str:
    """The first colour not in ``taken``, from a start fixed by the CRC-32 of ``name`` (stable
    across processes and builds, unlike Python's salted ``hash``); beyond the listed colours,
    golden-ratio steps of hue from the same start."""
    pool = PALETTE + MORE_COLORS
    start = zlib.crc32(name.encode())
    for i in range(len(pool)):
        color = pool[(start + i) % len(pool)]
        if color not in taken:
            return color
    hue = start / 2**32
    while True:
        hue = (hue + 0.618033988749895) % 1.0
        color = "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in
                                                 colorsys.hsv_to_rgb(hue, 0.65, 0.7)))
        if color not in taken:
            return color


def method_colors() -> dict[str, str]:
    """Every registered method's colour, no two alike (except where ckd_lib gives two methods
    one colour on purpose: CE and detection's baseline, the student alone): a method's own
    colour, else, in registration order, :func:`_free_color` past every colour already taken."""
    _plugins_loaded()
    own: dict[str, str] = {}
    for (_, name), method in _METHODS.items():
        if method.color and name not in own:
            own[name] = method.color.lower()
    taken = set(own.values()) | {TEACHER_COLOR}
    out = {}
    for name in all_method_names():
        out[name] = own.get(name) or _free_color(name, taken)
        taken.add(out[name])
    return out


def method_color(name: str) -> str:
    """A method's colour in every figure (:func:`method_colors`); a name not registered (a
    record of a plugin not loaded now) gets one no registered method has."""
    colors = method_colors()
    return colors.get(name) or _free_color(name, set(colors.values()) | {TEACHER_COLOR})
