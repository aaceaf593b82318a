"""A tiny reader and writer for the IDX format (MNIST, Fashion-MNIST), gzipped or raw.

Why our own: the format is a few bytes of header followed by a big-endian array, and the usual
readers come with downloaders (torchvision) or heavy dependencies we do not want at run time.

Layout: two zero bytes, one type byte, one byte with the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the data in C order. For 3-D image files that is the well-known
16-byte header; for 1-D label files it is 8 bytes. Gzip is detected from the file's magic bytes, not
its name, so ``foo.gz`` that was already unpacked (a common accident) still reads.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from moerl.core.errors import ConfigError

__all__ = ["IDX_DTYPES", "DataFormatError", "IdxFormatError", "read_idx", "write_idx"]

#: IDX type byte -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataFormatError(ConfigError):
    """A data file was found but is corrupt, truncated or not what its name says.

    A subclass of :class:`~moerl.core.errors.ConfigError` (an unreadable user-given path) so that the
    CLI reports it as one line instead of a traceback.
    """


class IdxFormatError(DataFormatError):
    """An IDX file is corrupt or truncated; the message names the file and what is wrong."""


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == _GZIP_MAGIC else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:  # bad gzip stream, truncated archive
        raise IdxFormatError(f"{path}: cannot decompress IDX file ({exc})") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a native-endian numpy array.

    Raises :class:`IdxFormatError` when the header is malformed or the data size does not match
    the header, so that a half-downloaded file fails loudly instead of giving a short data set.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise IdxFormatError(f"{path}: not an IDX file (only {len(buf)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", buf[:4])
    if zero != 0:
        raise IdxFormatError(
            f"{path}: not an IDX file (first two bytes are {buf[:2]!r}, expected b'\\x00\\x00')"
        )
    if type_code not in IDX_DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0:
        raise IdxFormatError(f"{path}: IDX header says 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(buf) < header_len:
        raise IdxFormatError(f"{path}: truncated IDX header ({len(buf)} bytes, need {header_len})")
    shape = struct.unpack(f">{ndim}I", buf[4:header_len])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(buf) - header_len
    if got != expected:
        raise IdxFormatError(
            f"{path}: IDX data size mismatch: header shape {shape} needs {expected} bytes, file has {got}"
        )
    data = np.frombuffer(buf, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip it when ``compress`` is true (default: name ends in ``.gz``).

    Used by tests to build fixtures in the real format, and handy to export data for other tools.
    """
    path = Path(path)
    array = np.asarray(array)
    if compress is None:
        compress = path.suffix == ".gz"
    matches = [
        (c, dt)
        for c, dt in IDX_DTYPES.items()
        if array.dtype.kind == dt.kind and array.dtype.itemsize == dt.itemsize
    ]
    if not matches:
        raise TypeError(f"dtype {array.dtype} has no IDX type code")
    code, dtype = matches[0]
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path
