"""Distillation methods as named sums of registered loss terms; user plugins add their own.

See :mod:`ckd_lib.methods.registry` for the model, :mod:`ckd_lib.methods.builtin` for the
study's methods and ``docs/examples/foo_method.py`` for a plugin that adds one.
"""

from ckd_lib.methods import builtin  # noqa: E402,F401  (registers the study's methods)
from ckd_lib.methods.params import Param
from ckd_lib.methods.plugins import load_plugin, load_plugins, loaded_plugins
from ckd_lib.methods.registry import (
    TASKS,
    Method,
    Term,
    TermContext,
    TermInputs,
    TermModule,
    all_method_names,
    get_method,
    main_methods,
    method_color,
    method_names,
    register_method,
    register_term,
    use,
)

__all__ = [
    "TASKS",
    "Method",
    "Param",
    "Term",
    "TermContext",
    "TermInputs",
    "TermModule",
    "all_method_names",
    "get_method",
    "load_plugin",
    "load_plugins",
    "loaded_plugins",
    "main_methods",
    "method_color",
    "method_names",
    "register_method",
    "register_term",
    "use",
]
