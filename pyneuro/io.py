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
No pickle: loading a file never runs code from it. This module only reads and
writes files; what the documents mean is the model's (model.py) and the
checkpoint's (checkpoint.py) business.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile

import numpy as np

from ._version import __version__

FORMAT = "pyneuro-model"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 2**20


def atomic_write(path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a
    mix: a temporary file in the same folder, flushed to disk, then renamed over
    `path`. If anything fails the temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
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


def read_bytes(path, what: str) -> bytes:
    """The whole file; a FileNotFoundError naming it and `what` it should be otherwise."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise FileNotFoundError(f"{os.fspath(path)}: cannot read the {what} ({e.strerror})") from None


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


def read_file(path) -> tuple[dict, dict]:
    """(tensors, documents) of a pyneuro safetensors file; ValueError for anything else."""
    from safetensors.numpy import load
    path = os.fspath(path)
    data = read_bytes(path, "model file")
    if len(data) < 8:
        raise ValueError(f"{path}: not a pyneuro model file (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, _MAX_HEADER):
        raise ValueError(f"{path}: not a pyneuro model file, or truncated (its header claims {n} bytes, "
                         f"the file has {len(data) - 8} after the length)")
    try:
        header = json.loads(data[8:8 + n])
        meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise ValueError(f"{path}: not a pyneuro model file (its header is not safetensors JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pyneuro model file (a safetensors file without pyneuro metadata)"
                         if isinstance(meta, dict) and header else f"{path}: not a pyneuro model file")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ValueError(f"{path}: damaged: format_version is {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: written by a newer pyneuro ({meta.get('pyneuro_version', '?')}, format "
                         f"version {version}); this pyneuro reads format version {FORMAT_VERSION} and "
                         f"older: upgrade pyneuro to load it")
    try:
        tensors = load(data)
    except Exception as e:  # safetensors' own error type: offsets, sizes, dtypes
        raise ValueError(f"{path}: damaged or truncated tensor data ({e})") from None
    claimed = meta.get("sha256")
    if claimed != _digest({k: v for k, v in meta.items() if k != "sha256"}, tensors):
        raise ValueError(f"{path}: the file was changed after pyneuro wrote it (checksum mismatch): "
                         "it is corrupted or was edited by hand")
    documents = {}
    for key, text in meta.items():
        if key in ("format", "format_version", "pyneuro_version", "sha256"):
            continue
        try:
            documents[key] = json.loads(text)
        except ValueError:
            raise ValueError(f"{path}: damaged metadata {key!r} (not JSON)") from None
    documents["pyneuro_version"] = meta.get("pyneuro_version")
    return tensors, documents
