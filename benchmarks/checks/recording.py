"""What a section process writes: one row per figure, saved the moment it is measured.

Why incremental: the parent kills a section that runs past its time budget; every figure the
section measured before that point is already on disk and still reaches the table.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROW_KEYS = ("key", "section", "figure", "value", "unit", "target", "verdict")


@dataclass(frozen=True)
class Options:
    """What every section is told: dry run or not, where to write scratch files, its deadline."""

    dry_run: bool
    work: Path
    deadline: float  # time.monotonic() value after which a section starts nothing new
    imagenet_images: int = 6144
    imagenet_copies: int = 4

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    def left(self) -> float:
        """Seconds before the deadline."""
        return self.deadline - time.monotonic()

    def cpu_count(self) -> int:
        return os.cpu_count() or 1


def _plain(value):
    """JSON-safe: NaN and infinities become None (JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Recorder:
    """Rows and figures of one section, rewritten atomically to ``path`` after each change."""

    def __init__(self, section: str, path: Path) -> None:
        self.section = section
        self.path = Path(path)
        self.data = {"section": section, "status": "running", "rows": [], "figures": {},
                     "notes": []}
        self._save()

    def row(self, key: str, figure: str, value, unit: str = "", target: str = "",
            verdict: str = "", detail=None) -> None:
        """One line of the table; ``value`` also goes to ``figures[key]`` (with ``detail``,
        anything JSON-able that explains it, when given)."""
        value = _plain(value)
        self.data["rows"].append({"key": key, "section": self.section, "figure": figure,
                                  "value": value, "unit": unit, "target": target,
                                  "verdict": verdict})
        self.data["figures"][key] = value if detail is None else {"value": value,
                                                                  "detail": detail}
        self._save()

    def skipped(self, key: str, figure: str, why: str, unit: str = "", target: str = "") -> None:
        """A figure that was not measured, and why (the time guard, a missing package...)."""
        self.row(key, figure, None, unit, target, f"not measured ({why})")

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self._save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.data["status"] = status
        if error:
            self.data["error"] = error
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)
