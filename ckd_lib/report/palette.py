"""How the report names and colours things: the method order, one colour per method, one name
per teacher→student pair. Every table and figure of the report asks this module, so a method has
the same colour and a pair the same words everywhere, in every build.

The method vocabulary belongs to the library (``ckd_lib.config.METHODS`` for classification,
``ckd_lib.detection.distill.DETECTION_METHODS`` for detection); :func:`method_order` is the one
place the report reads it. Colours are assigned from a fixed colour-blind-safe palette by a
method's position in that order, and for a name outside it by a CRC-32 of the name (Python's
``hash()`` of a string changes with every interpreter, so it would recolour a figure per build).
"""

from __future__ import annotations

import zlib
from functools import lru_cache

# seaborn's "colorblind" palette (Okabe–Ito based), written out so the colours do not depend on
# whether or which seaborn is installed.
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
           "#949494", "#ece133", "#56b4e9")
# The order distillation methods take colours from the palette: the three of the paper's tables
# (KD, DKD, CKD) get blue, green and vermillion, which stay apart for every kind of colour vision.
_DISTILL_SEQUENCE = (0, 2, 3, 4, 5, 1, 9, 6, 8)
TEACHER_COLOR = "#3b3b3b"
ALONE_COLOR = PALETTE[7]  # the student trained alone: grey, a reference line rather than a method
# The student trained without a teacher: "CE" in classification, "baseline" in detection.
STUDENT_ALONE = ("CE", "baseline")


@lru_cache(maxsize=1)
def method_order() -> tuple[str, ...]:
    """Every method the library knows, in the order tables and legends list them: the student
    alone first, then the distillation methods of classification, then those only detection has.
    """
    from ckd_lib.config import METHODS
    from ckd_lib.detection.distill import DETECTION_METHODS

    names = [m for m in (*METHODS, *DETECTION_METHODS) if m in STUDENT_ALONE]
    names += [m for m in (*METHODS, *DETECTION_METHODS) if m not in STUDENT_ALONE]
    return tuple(dict.fromkeys(names))


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
    if method == "teacher":
        return TEACHER_COLOR
    if method in STUDENT_ALONE:
        return ALONE_COLOR
    distill = [m for m in method_order() if m not in STUDENT_ALONE]
    if method in distill and distill.index(method) < len(_DISTILL_SEQUENCE):
        return PALETTE[_DISTILL_SEQUENCE[distill.index(method)]]
    return PALETTE[zlib.crc32(method.encode("utf-8")) % len(PALETTE)]


def pair_label(teacher: str | None, student: str, name=str) -> str:
    """The one name of a teacher→student pair, in tables and figures alike: the models that were
    trained (a profile's stand-ins, not the recipe's names), "<student> alone" without a teacher.
    `name` formats each model name (the HTML tables keep a name on one line)."""
    if not isinstance(teacher, str) or not teacher:
        return f"{name(student)} alone"
    return f"{name(teacher)} → {name(student)}"
