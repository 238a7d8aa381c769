"""What a loss term's value must be, checked on the term's first call, and who is to blame.

Why: a term is the one piece of a run that a user's plugin supplies, and its mistakes used to
surface far from their cause: a vector or a Python float as the value crashed in autograd (39
lines naming neither the term nor the plugin), a NaN from the plugin term was recorded as a
divergence of ``ce`` (whose value turned non-finite one step later, through the weights), and
a plugin's own ``ValueError`` was a traceback. So every term's value is checked once, on the
first call (always eager, also under the CUDA-graph step, whose first steps run uncaptured), to
be a 0-d floating tensor on the student's device that carries a gradient and is finite when its
inputs are; an exception from a plugin's compute becomes one line; both name the term and the
file:line that defines it. Later steps pay no host synchronisation: the objective only keeps,
on the device, which terms were the first to turn non-finite (:class:`FirstNonFinite`).
"""

from __future__ import annotations

import inspect
import os
import sys
import traceback

import torch

from ckd_lib.errors import InputError, UserError


class TermError(InputError):
    """A loss term broke its contract or raised; the message names the term and its file:line."""


def _short(path: str) -> str:
    """``path`` relative to the working folder when inside it (what a user typed), else as is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def defined_at(code) -> str:
    """``file.py:LINE`` of a function or class (a term's compute or module), '' if unknown."""
    target = getattr(code, "__func__", code)
    try:
        path = inspect.getsourcefile(target)
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return ""
    return f"{_short(path)}:{line}" if path else ""


def caller_outside(*files: str) -> str:
    """``file.py:LINE`` of the innermost caller outside ``files`` (where a term is registered)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in files:
        frame = frame.f_back
    return f"{_short(frame.f_code.co_filename)}:{frame.f_lineno}" if frame else ""


def _label(term) -> str:
    where = term.defined_at or term.source
    kind = "plugin " if term.source != "ckd_lib" else ""
    return f"term {term.name!r} ({kind}{where})"


def _raised_where(error: BaseException, term) -> str:
    """The innermost frame of ``error`` in the term's own file, else the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    own = term.defined_at.rsplit(":", 1)[0]
    inside = [f for f in frames if own and _short(f.filename) == own] or frames[-1:]
    return f" at {_short(inside[-1].filename)}:{inside[-1].lineno}" if inside else ""


def call_term(term, part, inputs):
    """``part(inputs)``; an exception from a plugin's term becomes one line naming it (a term of
    ckd_lib's own keeps its traceback: that is a bug, not a user's mistake)."""
    try:
        return part(inputs)
    except UserError:
        raise
    except SystemExit as error:  # never "exit 0 having trained nothing"
        raise TermError(f"{_label(term)} called sys.exit({error.code!r})"
                        f"{_raised_where(error, term)}; a term returns its value") from None
    except Exception as error:
        if term.source == "ckd_lib":
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TermError(f"{_label(term)} raised {type(error).__name__}"
                        f"{': ' + message if message else ''}"
                        f"{_raised_where(error, term)}") from error


def _finite(value) -> bool:
    return value is None or not torch.is_tensor(value) or bool(torch.isfinite(value).all())


def check_value(term, value, inputs) -> None:
    """Refuse a first value that is not a term's weighted value; see the module docstring."""
    logits = inputs.student_logits
    expected = ("return the term's weighted value as a 0-d floating tensor computed from the "
                "inputs with torch operations (e.g. weight * loss.mean())")
    if not torch.is_tensor(value):
        raise TermError(f"{_label(term)} returned {type(value).__name__} {value!r:.60}, not a "
                        f"tensor; {expected}")
    if value.dim() != 0:
        raise TermError(f"{_label(term)} returned a tensor of shape {list(value.shape)}, not a "
                        f"scalar; {expected}")
    if not value.is_floating_point():
        raise TermError(f"{_label(term)} returned a {value.dtype} tensor; {expected}")
    if torch.is_tensor(logits) and value.device != logits.device:
        raise TermError(f"{_label(term)} returned a tensor on {value.device}, but the student's "
                        f"logits are on {logits.device}; create tensors on "
                        "inputs.student_logits.device")
    if torch.is_grad_enabled() and torch.is_tensor(logits) and logits.requires_grad \
            and not value.requires_grad:
        raise TermError(f"{_label(term)} returned a value that carries no gradient (made with "
                        ".item(), torch.tensor(...) or under no_grad?), so it would not train "
                        f"the student; {expected}")
    if not bool(torch.isfinite(value)) and _finite(logits) and _finite(inputs.teacher_logits):
        raise TermError(f"{_label(term)} returned {value.item()} on the first step, from finite "
                        "logits; make its value finite (clamp before log, sqrt, division)")


class FirstNonFinite:
    """Which terms turned non-finite first, kept on the device without a host sync per step.

    Why: a NaN in one term reaches the weights through its gradient, and every term is
    non-finite from the next step on; only the step where it started says which term to blame.
    ``update`` latches the first non-zero mask of non-finite terms (a few device operations,
    capturable in a CUDA graph); ``names`` reads it (one sync, when a divergence is reported).
    """

    def __init__(self, terms: tuple[str, ...]):
        self.terms = terms
        self.mask: torch.Tensor | None = None

    def update(self, values: list[torch.Tensor]) -> None:
        bad = ~torch.isfinite(torch.stack([v.detach().float().reshape(()) for v in values]))
        if self.mask is None:
            self.mask = torch.zeros_like(bad)
        self.mask.copy_(torch.where(self.mask.any(), self.mask, bad))

    def names(self) -> list[str]:
        if self.mask is None:
            return []
        return [name for name, bad in zip(self.terms, self.mask.tolist(), strict=True) if bad]

