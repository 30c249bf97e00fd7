"""pyneuro's files: one safetensors file of tensors and JSON documents, written atomically.

A file holds the tensors (the model's flat parameter vector "params", and for a
checkpoint the optimizer's state "optimizer.<name>") and, as safetensors string
metadata, JSON documents:
    format, format_version   "pyneuro-model", FORMAT_VERSION
    pyneuro_version          the version that wrote it
    model                    {"dtype", "input_dim", "layers": [{"type", "config"}, ...]}
    info                     free-form JSON the application keeps with the model
                             (the CLI stores input preprocessing and the training set-up)
    checkpoint               (checkpoints only) epoch, optimizer, RNG states, history
    sha256                   of all the above and every tensor's bytes: any later change
                             to the file (corruption, hand edits) is detected on load
No pickle: loading a file never runs code from it. Reading checks the 8-byte header
length, the header and every tensor's offsets against the file's size before it
reads the tensors, so a hostile file costs memory in proportion to its own size,
never to the sizes it claims.
This module only reads and writes files; what the documents mean is the model's
(model.py) and the checkpoint's (checkpoint.py) business.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import stat
import struct
from typing import Any, Iterable, TypeGuard

import numpy as np

from ._version import __version__

FORMAT = "pyneuro-model"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 2**20
# bytes per element of each safetensors dtype
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
             "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_RESERVED = ("format", "format_version", "pyneuro_version", "sha256")
MAX_JSON_DEPTH = 64


def atomic_write(path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a
    mix: a temporary file in the same folder, flushed to disk, then renamed over
    `path`. If anything fails the temporary file is removed and `path` is untouched.
    A new file gets the mode open() would give it (0666 less the umask); a file
    written over keeps its permission bits."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        old = os.stat(path)
        keep = stat.S_IMODE(old.st_mode) & 0o777 if stat.S_ISREG(old.st_mode) else None
    except OSError:
        keep = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)   # the kernel applies the umask, as for open()
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, f"{path}: no free temporary name in {folder}")
    try:
        with os.fdopen(fd, "wb") as f:
            if keep is not None:
                os.chmod(tmp, keep)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _os_error(e: OSError, path: str, what: str) -> OSError:
    """`e` again, of its own type (FileNotFoundError, PermissionError, ...), naming the file."""
    message = f"{path}: cannot read the {what} ({e.strerror or e})"
    return type(e)(e.errno, message) if e.errno is not None else type(e)(message)


@contextlib.contextmanager
def open_regular(path, what: str):
    """(file, size) of a regular file opened for reading, closed afterwards.

    OSErrors keep their type and name the file and `what` it should be; a folder is an
    IsADirectoryError; a device, a FIFO or a socket is a ValueError (opened without
    blocking, never read)."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _os_error(e, path, what) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _os_error(IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), path, what)
        if not stat.S_ISREG(st.st_mode):
            kind = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a FIFO",
                    stat.S_ISSOCK: "a socket"}
            name = next((v for test, v in kind.items() if test(st.st_mode)), "not a regular file")
            raise ValueError(f"{path}: expected a {what}, got {name}")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def read_bytes(path, what: str) -> bytes:
    """The whole of a regular file; an OSError of the failure's own type naming it and
    `what` it should be otherwise (see open_regular)."""
    with open_regular(path, what) as (f, _):
        return f.read()


def _digest(meta: dict, tensors: dict) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.reshape(-1).view(np.uint8).data)   # the bytes, without a copy
    return h.hexdigest()


def write_file(path, tensors: dict, documents: dict) -> None:
    """Write tensors and JSON documents (name -> JSON-able) as one pyneuro safetensors file."""
    from safetensors.numpy import save
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "pyneuro_version": __version__}
    meta.update({k: json.dumps(v, sort_keys=True) for k, v in documents.items()})
    meta["sha256"] = _digest(meta, tensors)
    atomic_write(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta))


def json_fault(value, where: str, finite: bool = True) -> str | None:
    """What keeps `value` from being JSON that reads back as it was written (None: nothing):
    dicts with str keys, lists, tuples, str, int, float (finite unless finite=False), bool,
    None, at most MAX_JSON_DEPTH levels deep. `where` names value in the answer."""
    fault = _json_fault(value, finite, 0)
    if fault is None:
        return None
    at, what = fault
    return f"{where}{at if len(at) <= 80 else at[:80] + '...'} {what}"


def _json_fault(value, finite: bool, depth: int) -> tuple[str, str] | None:
    """(where below value, what) of the first fault json_fault describes."""
    if value is None or isinstance(value, (str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) or not finite else ("", f"is {value} (not a finite number)")
    if depth >= MAX_JSON_DEPTH:
        return "", f"is nested deeper than {MAX_JSON_DEPTH} levels"
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
        bad_key = next((k for k in value if not isinstance(k, str)), None)
        if bad_key is not None:
            return "", f"has the key {bad_key!r}, not a string"
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return "", f"is a {type(value).__name__} (expected dict, list, str, int, float, bool or None)"
    for k, v in items:
        fault = _json_fault(v, finite, depth + 1)
        if fault is not None:
            return f"[{k!r:.40}]{fault[0]}", fault[1]
    return None


def _json(text, path: str, what: str):
    """json.loads(text), at most MAX_JSON_DEPTH levels deep; a ValueError naming the file and
    `what` for anything else."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{path}: damaged {what} (not JSON, or nested too deeply)") from None
    fault = json_fault(value, what, finite=False)
    if fault:
        raise ValueError(f"{path}: damaged: {fault}")
    return value


def _tensor_bytes(header: dict, path: str) -> int:
    """How many bytes of tensors the safetensors header describes: every entry a known
    dtype, a shape of sizes >= 0 and offsets [begin, end) holding exactly its elements,
    the entries tiling the region from 0 without gaps or overlaps."""
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, offsets = (entry.get(k) for k in ("dtype", "shape", "data_offsets")) \
            if isinstance(entry, dict) else (None, None, None)
        if not (isinstance(dtype, str) and dtype in _ITEMSIZE and _sizes(shape) and _sizes(offsets) and len(offsets) == 2
                and offsets[0] <= offsets[1]):
            raise ValueError(f"{path}: damaged tensor entry {name!r} (expected a dtype among "
                             f"{sorted(_ITEMSIZE)}, a shape and data_offsets of integers >= 0), got {entry!r:.200}")
        need = math.prod(shape) * _ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != need:
            raise ValueError(f"{path}: damaged tensor {name!r}: {dtype} {shape} needs {need} bytes, "
                             f"its offsets {offsets} span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise ValueError(f"{path}: damaged tensor offsets: {name!r} starts at {begin}, expected {end} "
                             "(tensors must follow each other without gaps or overlaps)")
        end = stop
    return end


def _sizes(value) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def read_file(path) -> tuple[dict, dict]:
    """(tensors, documents) of a pyneuro safetensors file; ValueError for anything else."""
    from safetensors.numpy import load
    path = os.fspath(path)
    with open_regular(path, "model file") as (f, size):
        head = f.read(8)
        if size < 8 or len(head) < 8:
            raise ValueError(f"{path}: not a pyneuro model file (only {len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise ValueError(f"{path}: not a pyneuro model file, or truncated (its header claims {n} bytes, "
                             f"the file has {size - 8} after the length)")
        text = f.read(n)
        try:
            header = json.loads(text)
        except (ValueError, RecursionError):
            header = None
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(header, dict) or not isinstance(meta, dict):
            raise ValueError(f"{path}: not a pyneuro model file" if not isinstance(header, dict) else
                             f"{path}: not a pyneuro model file (a safetensors file without pyneuro metadata)")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a pyneuro model file (a safetensors file without pyneuro metadata)")
        odd = next((k for k, v in meta.items() if not isinstance(v, str)), None)
        if odd is not None:
            raise ValueError(f"{path}: damaged: metadata {odd!r} is a {type(meta[odd]).__name__}, "
                             "safetensors metadata are strings")
        version_text = meta.get("format_version", "")
        if not (version_text.isascii() and version_text.isdigit() and len(version_text) <= 9
                and int(version_text) >= 1):
            raise ValueError(f"{path}: damaged: format_version is {version_text!r:.40}, expected a whole "
                             "number >= 1")
        fault = json_fault(header, "its header", finite=False)
        if fault:
            raise ValueError(f"{path}: damaged: {fault}")
        version = int(version_text)
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: written by a newer pyneuro ({meta.get('pyneuro_version', '?')!s:.40}, "
                             f"format version {version}); this pyneuro reads format version {FORMAT_VERSION} "
                             "and older: upgrade pyneuro to load it")
        body = _tensor_bytes(header, path)
        if 8 + n + body != size:
            what = "truncated" if 8 + n + body > size else "has trailing bytes"
            raise ValueError(f"{path}: damaged ({what}): its header describes {body} bytes of tensors, "
                             f"the file holds {size - 8 - n}")
        data = head + text + f.read(body)
    if len(data) != size:
        raise ValueError(f"{path}: truncated while it was read ({len(data)} of {size} bytes)")
    try:
        tensors = load(data)
    except Exception as e:  # safetensors' own error type: offsets, sizes, dtypes
        raise ValueError(f"{path}: damaged or truncated tensor data ({e})") from None
    if meta.get("sha256") != _digest({k: v for k, v in meta.items() if k != "sha256"}, tensors):
        raise ValueError(f"{path}: the file was changed after pyneuro wrote it (checksum mismatch): "
                         "it is corrupted or was edited by hand")
    documents = {key: _json(value, path, f"metadata {key!r}") for key, value in meta.items() if key not in _RESERVED}
    documents["pyneuro_version"] = meta.get("pyneuro_version")
    return tensors, documents
