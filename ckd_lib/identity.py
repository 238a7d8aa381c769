"""What a run's identity covers: its config, and the inputs its record says it was computed from.

Why more than the config hash: the run id names a config (the method by name, the teacher by its
path), so a plugin whose code was edited, or a teacher file replaced at the same path, would leave
every run "done" with a record citing code and weights that no longer exist. A record already says
what it was computed from; this module compares that with what the same config would use now:

- the code of the method: the sha256 of every plugin file that registers the method or one of its
  terms (the registry knows each one's ``source``), against the plugins the record lists
  (``provenance.plugins``, path and sha256 of every plugin loaded when it trained);
- the teacher: the sha256 of the checkpoint file the config names (``teacher.sha256``), for runs
  that distil from a file (not ``untrained``; torchvision's detection weights are pinned by
  torchvision itself);
- the data: the fingerprints of the training and test sets (``data.train_fingerprint``,
  ``test_fingerprint``). They cannot be known before the data loads, and loading every dataset
  to skip a finished run would cost more than most runs of the demo, so only ``--verify``
  (``ckd_lib.study.audit``) checks them.

A record whose inputs differ is *stale*: the engine moves it aside (``record.stale-<time>.json``),
says why in one line, and trains the run again (``ckd_lib.results.finished_record``); plan mode,
``--status`` and ``torchrun.launch`` ask the same question through ``RunBook.for_config``.
ckd_lib's own code (the commit a record names) only warns: the report lists the commits and the
table cells each one produced (``ckd_lib.report.provenance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ckd_lib.results import file_sha256

UNTRAINED = "untrained"
TORCHVISION = "torchvision"


def short(sha: str | None) -> str:
    return f"{sha[:8]}.." if sha else "none"


@dataclass(frozen=True)
class RunIdentity:
    """The inputs a config would be computed from now; see the module docstring.

    ``code``: ``(plugin, path, sha256)`` of each plugin file that registers the method or one of
    its terms; ``teacher``: ``(checkpoint, sha256)`` of the teacher file it distils from, None
    when it loads none (or the file does not exist yet: a teacher that a planned run will write).
    """

    method: str
    code: tuple[tuple[str, str, str], ...] = ()
    teacher: tuple[str, str] | None = None

    def stale_reasons(self, record: dict) -> list[str]:
        """Why ``record`` was computed from other inputs than these (empty: it was not)."""
        reasons = []
        loaded = [p for p in (record.get("provenance") or {}).get("plugins") or []
                  if isinstance(p, dict)]
        shas = {p.get("sha256") for p in loaded}
        for plugin, path, sha in self.code:
            if sha in shas:
                continue
            name = Path(path).name if path else plugin
            old = next((p for p in loaded if p.get("path") == path or p.get("plugin") == plugin
                        or (path and Path(p.get("path") or "").name == name)), None)
            if old is not None:
                reasons.append(f"plugin {name} changed since this run (sha256 "
                               f"{short(old.get('sha256'))} -> {short(sha)})")
            else:
                reasons.append(f"plugin {name} (sha256 {short(sha)}) defines method "
                               f"{self.method} now, but this run was trained without it")
        if self.teacher is not None:
            checkpoint, sha = self.teacher
            recorded = (record.get("teacher") or {}).get("sha256")
            if recorded != sha:
                reasons.append(f"teacher checkpoint {checkpoint} changed since this run (sha256 "
                               f"{short(recorded)} -> {short(sha)})")
        return reasons


def method_code(method) -> tuple[tuple[str, str, str], ...]:
    """``(plugin, path, sha256)`` of the plugins that register ``method`` or its terms, as
    loaded in this process (ckd_lib's own code is the commit's business)."""
    from ckd_lib.methods import loaded_plugins

    sources = dict.fromkeys([method.source, *(use.term.source for use in method.uses)])
    plugins = loaded_plugins()
    out = []
    for source in sources:
        info = next((p for p in plugins if source in (p.get("path"), p.get("plugin"))), None)
        if info is not None and info.get("sha256"):
            out.append((info["plugin"], info.get("path") or "", info["sha256"]))
    return tuple(out)


def teacher_file(config) -> Path | None:
    """The teacher checkpoint file ``config`` distils from, if it loads one and it exists."""
    checkpoint = getattr(config, "teacher_checkpoint", None)
    if config.teacher is None or checkpoint in (None, UNTRAINED):
        return None
    if checkpoint == TORCHVISION:
        if getattr(config, "TASK", "") == "detection":
            return None  # torchvision's COCO weights, loaded and hash-checked by torchvision
        from ckd_lib.engine.teachers import torchvision_weights_file

        path = torchvision_weights_file(config.teacher)[0]
    else:
        path = Path(checkpoint)
    return path if path.is_file() else None


def of_config(config) -> RunIdentity:
    """What ``config`` (a RunConfig or DetectionConfig) would be computed from now."""
    path = teacher_file(config)
    teacher = (str(config.teacher_checkpoint), file_sha256(path)) if path is not None else None
    return RunIdentity(config.method, method_code(config.method_spec), teacher)
