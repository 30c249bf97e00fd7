"""IDX files, the format of MNIST: a header, then the array's bytes, big-endian.

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4·d bytes   the dimensions, big-endian uint32
    then        exactly Π dims elements, big-endian

Files may be gzip-compressed (recognised by their first bytes, not their name).
Anything else — a wrong magic, a truncated body, trailing bytes — is a ValueError
that names the file and what was wrong.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (raw or gzip), in native byte order.

    Parameters
    ----------
    path : str or os.PathLike

    Raises
    ------
    ValueError
        For a wrong magic, an unknown type, a truncated body or trailing bytes, naming the file.
    """
    from .io import read_bytes
    path = os.fspath(path)
    data = read_bytes(path, "IDX file")
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: a damaged or truncated gzip file ({e})") from None
    return parse_idx(data, path)


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array an IDX byte string holds.

    Parameters
    ----------
    data : bytes
    name : str
        Used in error messages.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file (expected the magic bytes 00 00 tt dd, "
                         f"got {data[:4].hex(' ') or 'an empty file'})")
    kind, ndim = data[2], data[3]
    if kind not in _TYPES:
        raise ValueError(f"{name}: unknown IDX element type 0x{kind:02X} "
                         f"(expected one of {', '.join(f'0x{k:02X}' for k in _TYPES)})")
    if ndim == 0:
        raise ValueError(f"{name}: the IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                         f"the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_TYPES[kind])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{name}: {what}: the header promises shape {shape} of {dtype.name} "
                         f"({expected} bytes in all), the file holds {len(data)} bytes")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` as an IDX file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    array : ndarray
        uint8, int8, int16, int32, float32 or float64, 1 to 255 dimensions.
    compress : bool, optional
        gzip the file (default: when the name ends in .gz).
    """
    from .io import atomic_write
    a = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}
    kind = codes.get(a.dtype.newbyteorder("="))
    if kind is None:
        raise TypeError(f"write_idx: cannot store dtype {a.dtype} (IDX holds {sorted(map(str, codes))})")
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"write_idx: expected 1 to 255 dimensions, got {a.ndim}")
    body = (bytes([0, 0, kind, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
            + np.ascontiguousarray(a, a.dtype.newbyteorder(">")).tobytes())
    if compress or (compress is None and os.fspath(path).endswith(".gz")):
        body = gzip.compress(body, mtime=0)
    atomic_write(path, body)
