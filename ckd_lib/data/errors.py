"""One way to fail when dataset files are missing: say where, and how to get them.

Why: a missing CIFAR folder used to surface as a stack trace from deep inside a downloader.
Users need the expected path and the fix, and nothing else.
"""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are absent and could not be downloaded."""


def missing_files_error(
    dataset: str,
    expected: Path | list[Path],
    how_to_get: str,
    download_failure: BaseException | None = None,
) -> DatasetNotFoundError:
    """Build the error raised (``from None``) by every dataset reader."""
    places = expected if isinstance(expected, list) else [expected]
    where = "\n".join(f"  - {p}" for p in places)
    if download_failure is not None:
        reason = str(download_failure).strip() or type(download_failure).__name__
        tried = f"Downloading failed ({type(download_failure).__name__}: {reason})."
    else:
        tried = "Downloading was not attempted (download=False)."
    return DatasetNotFoundError(
        f"{dataset} files not found. Looked in:\n{where}\n{tried}\nHow to get them: {how_to_get}"
    )
