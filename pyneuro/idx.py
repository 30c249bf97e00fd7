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
import math
import os
import zlib
from typing import NoReturn

import numpy as np

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (raw or gzip), in native byte order.

    The header is read first: a raw file's size must match it before the body is read,
    and a gzip file is decompressed as a stream that stops one byte past the size the
    header declares, so a file never costs more memory than the array it should hold.

    Parameters
    ----------
    path : str or os.PathLike

    Raises
    ------
    ValueError
        For a wrong magic, an unknown type, a truncated body or trailing bytes, naming the file.
    """
    from .io import open_regular
    path = os.fspath(path)
    with open_regular(path, "IDX file") as (f, size):
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        try:
            stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
            head = _read_upto(stream, 4)
            dtype, header = _layout(head, path)
            head += _read_upto(stream, header - 4)
            shape, expected = _extent(head, dtype, path)
            if not compressed and size != expected:
                _wrong_size(path, shape, dtype, expected, size)
            body = _read_upto(stream, expected - header + 1)
        except (OSError, EOFError, zlib.error) as e:
            if not compressed:
                raise
            raise ValueError(f"{path}: a damaged or truncated gzip file ({e})") from None
    if header + len(body) != expected:
        _wrong_size(path, shape, dtype, expected, header + len(body), more=compressed)
    return _array(body, 0, dtype, shape, path)


def _read_upto(stream, n: int, block: int = 1 << 24) -> bytearray:
    """Up to n bytes of stream (fewer at its end), read in blocks so that a size claimed by
    a header is never allocated before the bytes are there."""
    data = bytearray()
    while len(data) < n:
        part = stream.read(min(block, n - len(data)))
        if not part:
            break
        data += part
    return data


def _layout(head: bytes | bytearray, name: str) -> tuple[np.dtype, int]:
    """(element dtype, header length) from the first 4 bytes."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise ValueError(f"{name}: not an IDX file (expected the magic bytes 00 00 tt dd, "
                         f"got {bytes(head[:4]).hex(' ') or 'an empty file'})")
    kind, ndim = head[2], head[3]
    if kind not in _TYPES:
        raise ValueError(f"{name}: unknown IDX element type 0x{kind:02X} "
                         f"(expected one of {', '.join(f'0x{k:02X}' for k in _TYPES)})")
    if ndim == 0:
        raise ValueError(f"{name}: the IDX header declares 0 dimensions")
    return np.dtype(_TYPES[kind]), 4 + 4 * ndim


def _extent(head: bytes | bytearray, dtype: np.dtype, name: str) -> tuple[tuple[int, ...], int]:
    """(shape, total file size) the complete header declares (Python ints: no overflow)."""
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} bytes, "
                         f"the file has {len(head)}")
    shape = tuple(int(d) for d in np.frombuffer(bytes(head[4:4 + 4 * ndim]), ">u4"))
    return shape, 4 + 4 * ndim + math.prod(shape) * dtype.itemsize


def _wrong_size(name: str, shape, dtype: np.dtype, expected: int, actual: int, more: bool = False) -> NoReturn:
    what = "truncated" if actual < expected else "has trailing bytes"
    holds = f"more than {expected} bytes" if more and actual > expected else f"{actual} bytes"
    raise ValueError(f"{name}: {what}: the header promises shape {shape} of {dtype.name} "
                     f"({expected} bytes in all), the file holds {holds}")


def _array(data, offset: int, dtype: np.dtype, shape: tuple, name: str) -> np.ndarray:
    try:
        return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))
    except ValueError as e:   # more dimensions than NumPy holds, or sizes beyond its index range
        raise ValueError(f"{name}: the IDX header's shape {shape} cannot be a NumPy array ({e})") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array an IDX byte string holds.

    Parameters
    ----------
    data : bytes
    name : str
        Used in error messages.
    """
    dtype, header = _layout(data[:4], name)
    shape, expected = _extent(data[:header], dtype, name)
    if len(data) != expected:
        _wrong_size(name, shape, dtype, expected, len(data))
    return _array(data, header, dtype, shape, name)


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
