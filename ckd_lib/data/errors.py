"""One way to fail when dataset files are missing: say where, and how to get them.

Why: a missing CIFAR folder used to surface as a stack trace from deep inside a downloader.
Users need the expected path and the fix, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from ckd_lib.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """Dataset files are absent and could not be downloaded."""


class DatasetFileError(UserError, ValueError):
    """A dataset file exists but is truncated, corrupt or of the wrong format; the message
    names the file and what is wrong with it."""


def missing_files_error(
    dataset: str,
    expected: Path | list[Path],
    how_to_get: str,
    download_failure: BaseException | None = None,
) -> DatasetNotFoundError:
    """Build the error raised (``from None``) by every dataset reader."""
    places = expected if isinstance(expected, list) else [expected]
    where = ", ".join(str(p) for p in places)
    if download_failure is not None:
        reason = str(download_failure).strip() or type(download_failure).__name__
        tried = f"Downloading failed ({type(download_failure).__name__}: {reason})."
    else:
        tried = "Downloading was not attempted (download=False)."
    return DatasetNotFoundError(
        f"{dataset} files not found in {where}\n{tried}\nHow to get them: {how_to_get}"
    )
