"""Reader for the IDX format of (Fashion-)MNIST, gzipped or not.

Why our own reader: Debian's ``dataset-fashion-mnist`` installs the four original ``.gz`` files,
which torchvision only accepts inside its own folder layout. The format is tiny: two zero
bytes, a type code, the number of dimensions, that many big-endian int32 sizes, then the data
in big-endian order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetFileError

_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file into an array of its declared type and shape; a
    malformed or truncated file is a DatasetFileError naming ``source``."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetFileError(f"{source}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DatasetFileError(f"{source}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFileError(f"{source}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFileError(
            f"{source}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file; gzip compression is detected from the content, not the name."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise DatasetFileError(f"{path}: the gzip file is truncated or corrupt ({error}); "
                                   "delete it to download it again, or reinstall "
                                   "dataset-fashion-mnist") from None
    return parse_idx(raw, source=str(path))
