"""How the report names and colours things: the method order, one colour per method, one name
per teacher→student pair. Every table and figure of the report asks this module, so a method has
the same colour and a pair the same words everywhere, in every build.

The methods, their order and their colours belong to the method registry (``ckd_lib.methods``:
a method's own colour, else one that no other registered method has, picked in registration
order from a start fixed by a CRC-32 of its name, never Python's salted ``hash()``); this module
only adds the teacher, and puts the student trained alone first.
"""

from __future__ import annotations

from ckd_lib.methods import all_method_names
from ckd_lib.methods import method_color as _registry_color
from ckd_lib.methods.registry import PALETTE, TEACHER_COLOR

__all__ = ["PALETTE", "STUDENT_ALONE", "TEACHER_COLOR", "method_color", "method_order",
           "method_rank", "pair_label", "sort_methods"]

# The student trained without a teacher: "CE" in classification, "baseline" in detection.
STUDENT_ALONE = ("CE", "baseline")


def method_order() -> tuple[str, ...]:
    """Every registered method (plugins included), in the order tables and legends list them:
    the student alone first, then the distillation methods in registration order."""
    names = all_method_names()
    return tuple([m for m in names if m in STUDENT_ALONE]
                 + [m for m in names if m not in STUDENT_ALONE])


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: the teacher, then :func:`method_order`, then unknown names alphabetically."""
    if method == "teacher":
        return (-1, method)
    order = method_order()
    return (order.index(method) if method in order else len(order), method)


def sort_methods(methods) -> list[str]:
    return sorted(set(methods), key=method_rank)


def method_color(method: str) -> str:
    """The colour of `method` in every figure (a hex string)."""
    return TEACHER_COLOR if method == "teacher" else _registry_color(method)


def pair_label(teacher: str | None, student: str, name=str) -> str:
    """The one name of a teacher→student pair, in tables and figures alike: the models that were
    trained (a profile's stand-ins, not the recipe's names), "<student> alone" without a teacher.
    `name` formats each model name (the HTML tables keep a name on one line)."""
    if not isinstance(teacher, str) or not teacher:
        return f"{name(student)} alone"
    return f"{name(teacher)} → {name(student)}"
