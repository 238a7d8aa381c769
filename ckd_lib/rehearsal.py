"""What makes a run a rehearsal, and the rule that keeps rehearsals out of real results.

A rehearsal (``python -m ckd_lib.study --profile NAME --rehearse``, :mod:`ckd_lib.study.rehearse`)
runs every run of a profile for a few steps on generated data. Each of its configs says so in its
``rehearsal`` field: what the run stands for (the real dataset and batch), never empty. The field
is hashed, so a rehearsal run never has the id of the run it rehearses; its record carries the
field at the top level too. And its weights never teach a real run: a config that is not a
rehearsal and whose teacher checkpoint is the ``model_last.pth`` of a rehearsal run (its record
beside it says so) is refused before anything loads (:func:`check_teacher`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ckd_lib.errors import ConfigError

RECORD_NAME = "record.json"


class RehearsalTeacherError(ConfigError):
    """A real run was given a rehearsal run's weights as its teacher."""


def is_rehearsal(record: dict) -> bool:
    """Whether a run record (or a config as a dict) is a rehearsal's."""
    return bool(record.get("rehearsal") or (record.get("config") or {}).get("rehearsal"))


def teacher_record(checkpoint: str | None) -> dict | None:
    """The run record beside a teacher checkpoint (a teacher run's ``model_last.pth``), if any."""
    if not checkpoint or checkpoint in ("untrained", "torchvision"):
        return None
    path = Path(checkpoint).parent / RECORD_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_teacher(checkpoint: str | None, rehearsal: dict | None) -> None:
    """Refuse, in one line, a rehearsal run's weights as the teacher of a real run."""
    if rehearsal:
        return
    record = teacher_record(checkpoint)
    if record is not None and isinstance(record, dict) and is_rehearsal(record):
        raise RehearsalTeacherError(
            f"teacher_checkpoint={checkpoint!r} holds the weights of rehearsal run "
            f"{record.get('run_id', '?')} (a few steps on generated data): a real run never "
            "learns from a rehearsal; train the teacher for real or use a published checkpoint")
