"""Fuzz pyneuro's model-file and checkpoint readers with mutations of valid files.

    PYTHONPATH=. python tests/fuzz_model_files.py SEED COUNT     (from the repository root)

It starts from valid files (models of both dtypes with every layer type, checkpoints
with a Dropout stream, Adam and SGD) and mutates each copy one to three times:
    raw bytes         flips, cuts, insertions, the 8-byte header length
    the header        a node of the safetensors JSON (tensor dtypes, shapes, offsets,
                      metadata strings) replaced, removed, wrapped or added to
    the documents     a node of the model, info or checkpoint JSON likewise
    the tensors       params or an optimizer state of another size, dtype, rank, or
                      with NaN, written as a consistent file
Every structured mutation rewrites a valid sha256, so the loader's content checks are
reached, not only the checksum. pyneuro.load and Trainer.from_checkpoint must answer
with a ValueError or with a model that predicts, pickles and passes the CLI's info
check (a trainer that then trains an epoch); anything else, a case slower than
10 s, or a MemoryError under the 1 GiB address-space limit set below is printed and
the exit status is 1. A crash kills this process, not the test runner
(tests/test_hostile_files.py runs it in a subprocess).
"""
import copy
import json
import math
import os
import pickle
import signal
import struct
import sys
import tempfile
import warnings

import numpy as np

import pyneuro as pn
from pyneuro import cli
from pyneuro import io as pio

MEMORY_LIMIT = 2**30
HOSTILE = [-1, 0, 1, 2, 3, 7, 2**31, 2**63, -2**63, 10**30, 10**400, 1e30, -1e30, 0.5, 1.5, math.nan,
           math.inf, -math.inf, "", "x", "float16", "float64", "relu", "Dense", "Dropout", "PCG64", "Adam",
           [], {}, None, True, False, [1, 2], [8, 8], {"a": 1}, {"state": 1, "inc": 1}]


# ---- files: split, rebuilt with a valid checksum, forged past write_file's checks ------------
def split(data: bytes):
    """(header dict, tensor bytes) of a well-formed safetensors file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def pack(header, body: bytes, checksum: bool = True) -> bytes:
    """A safetensors file of `header` and `body`; with checksum, the metadata's sha256 is
    recomputed from the tensors as safetensors reads them (when it can read them)."""
    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + body
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if checksum and isinstance(meta, dict):
        from safetensors.numpy import load
        try:
            tensors = load(data)
            meta["sha256"] = pio._digest({k: v for k, v in meta.items() if k != "sha256"}, tensors)
        except Exception:   # the layout itself is broken: the checksum does not matter
            return data
        return pack(header, body, checksum=False)
    return data


def forge(tensors: dict, documents: dict) -> bytes:
    """A pyneuro file holding these tensors and documents (JSON text where a document is a
    str) with a valid checksum, written without write_file's checks."""
    from safetensors.numpy import save
    meta = {"format": pio.FORMAT, "format_version": str(pio.FORMAT_VERSION), "pyneuro_version": pn.__version__}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in documents.items()})
    meta["sha256"] = pio._digest(meta, tensors)
    return save(tensors, metadata=meta)


# ---- JSON nodes --------------------------------------------------------------------------
def paths(value, at=()):
    yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from paths(v, at + (k,))


def mutate_json(rng, doc):
    """doc with one random node replaced, removed, wrapped, nudged or given a new entry."""
    doc = copy.deepcopy(doc)
    every = list(paths(doc))
    at = every[rng.integers(len(every))]
    parent = doc
    for k in at[:-1]:
        parent = parent[k]
    node = parent[at[-1]] if at else doc
    op = int(rng.integers(6))
    if op == 0 or not at:
        new = hostile(rng, node)
        if not at:
            return new
        parent[at[-1]] = new
    elif op == 1:
        del parent[at[-1]]
    elif op == 2:
        parent[at[-1]] = [node]
    elif op == 3 and isinstance(node, dict):
        node[str(rng.choice(["extra", "seed", "init", "n_in", "alpha", "schedule", "x"]))] = hostile(rng, None)
    elif op == 3 and isinstance(node, list):
        node.insert(int(rng.integers(len(node) + 1)), hostile(rng, None))
    else:
        parent[at[-1]] = hostile(rng, node)
    return doc


def hostile(rng, old):
    """A hostile value, often near the old one."""
    if isinstance(old, (int, float)) and not isinstance(old, bool) and rng.integers(2):
        if isinstance(old, float):
            return old * [-1.0, 2.0, 1e6, 1e-6][rng.integers(4)]
        return old + [-1, 1, -old - 1, old, 2**40][rng.integers(5)]
    if rng.integers(20) == 0:
        return json.loads("[" * 200 + "]" * 200)
    return copy.deepcopy(HOSTILE[rng.integers(len(HOSTILE))])


# ---- mutations of a file -----------------------------------------------------------------
def mutate(rng, data: bytes) -> bytes:
    kind = int(rng.integers(8))
    if not data:
        return rng.bytes(int(rng.integers(16)))
    if kind == 0:                                   # flipped bytes
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == 1:                                   # cut
        return data[:rng.integers(len(data))]
    if kind == 2:                                   # inserted bytes
        at = int(rng.integers(len(data) + 1))
        return data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:]
    if kind == 3:                                   # the 8-byte header length
        (n,) = struct.unpack("<Q", data[:8].ljust(8, b"\0"))
        choices = [n + 1, n - 1, n + 8, n - 8, 0, 2**64 - 1, 2**63, len(data) - 8, len(data), int(rng.integers(2**63))]
        n = choices[rng.integers(len(choices))] % 2**64
        return struct.pack("<Q", n) + data[8:]
    try:
        return mutate_structure(rng, kind, data)
    except Exception:   # an earlier mutation left nothing this one can parse
        return data[::-1]


def mutate_structure(rng, kind: int, data: bytes) -> bytes:
    header, body = split(data)
    meta = header["__metadata__"]
    if kind == 4:                                   # a node of the safetensors header
        return pack(mutate_json(rng, header), body)
    if kind in (5, 6):                              # a node of a JSON document
        names = [k for k in ("model", "info", "checkpoint") if k in meta]
        key = "checkpoint" if "checkpoint" in meta and rng.integers(2) else names[rng.integers(len(names))]
        doc = json.loads(meta[key])
        meta[key] = json.dumps(mutate_json(rng, doc)) if rng.integers(12) else \
            str(rng.choice(["[" * 100000, "{", "NaN", '"x"', "1e999", "[" * 50 + "]" * 50]))
        return pack(header, body)
    return mutate_tensors(rng, header, body)


def mutate_tensors(rng, header, body) -> bytes:
    """A consistent file whose params or an optimizer state has another size, dtype, rank or NaN."""
    from safetensors.numpy import load
    try:
        tensors = load(pack(header, body, checksum=False))
    except Exception:
        return pack(header, body)
    name = sorted(tensors)[rng.integers(len(tensors))]
    a = tensors[name]
    op = int(rng.integers(6))
    if op == 0:
        a = a[:rng.integers(a.size + 1)]
    elif op == 1:
        a = np.concatenate([a, a[:rng.integers(1, 4)]])
    elif op == 2:
        a = a.astype(rng.choice([np.float16, np.float32, np.float64, np.int32, np.uint8]))
    elif op == 3 and a.size % 2 == 0:
        a = a.reshape(2, -1)
    elif op == 4 and a.size:
        a = a.copy()
        a[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -1.0])
    else:
        del tensors[name]
    if name in tensors or op != 5:
        tensors[name] = np.ascontiguousarray(a)
    meta = header["__metadata__"]
    docs = {k: v for k, v in meta.items() if k not in ("format", "format_version", "pyneuro_version", "sha256")}
    return forge(tensors, docs)


# ---- valid starting points ----------------------------------------------------------------
def bases(folder):
    X, y = pn.datasets.load_digits()
    every = [pn.Dense(6, 12, "gelu"), pn.Dropout(0.3), pn.Dense(12, 10), pn.ReLU(), pn.LeakyReLU(0.2),
             pn.ELU(0.7), pn.Dense(10, 9, "elu", alpha=0.5), pn.Sigmoid(), pn.Tanh(), pn.Identity(),
             pn.GELU(), pn.Dense(9, 4, "leaky_relu", alpha=0.1), pn.Softmax()]
    out = []
    m = pn.Sequential(every, seed=1)
    m.save(os.path.join(folder, "a"), info={"image_shape": [2, 3], "pixel_max": 255, "background": "dark"})
    pn.Sequential([pn.Dense(5, 3, "tanh"), pn.Dense(3, 2)], seed=2, dtype="float64").save(os.path.join(folder, "b"))
    for name, opt in (("c", pn.Adam(lr=1e-3, schedule=pn.CosineDecay(4))),
                      ("d", pn.SGD(lr=0.05, momentum=0.9, nesterov=True, schedule=pn.StepDecay(2, 0.5)))):
        model = pn.Sequential([pn.Dense(64, 16, "relu"), pn.Dropout(0.2), pn.Dense(16, 10)], seed=3)
        t = pn.Trainer(model, "cross_entropy", opt, batch_size=8, epochs=3, seed=4, verbose=0)
        t.fit(X[:24], y[:24], epochs=1)
        t.save_checkpoint(os.path.join(folder, name))
    for name in "abcd":
        with open(os.path.join(folder, name), "rb") as f:
            out.append(f.read())
    return out


class Slow(Exception):
    pass


def check(path, rng):
    """Load `path` as a model and as a checkpoint; ValueError is an answer, and what loads must work."""
    try:
        model = pn.load(path)
    except ValueError:
        model = None
    if model is not None:
        if model.n_in * max(model.n_out, 1) <= 10**6:
            out = model.predict(np.zeros((2, model.n_in), model.dtype))
            assert out.shape == (2, model.n_out)
        assert np.array_equal(pickle.loads(pickle.dumps(model)).params, model.params)
        model.summary(print_fn=None)
        try:
            cli._input_info(model, path)
        except ValueError:
            pass
    try:
        trainer = pn.Trainer.from_checkpoint(path, verbose=0)
    except ValueError:
        return
    m = trainer.model
    if m.n_in > 10**4 or m.n_out > 10**4:
        return
    X = rng.random((12, m.n_in)).astype(m.dtype)
    y = rng.integers(0, m.n_out, 12) if trainer.loss.name == "cross_entropy" else \
        rng.random((12, m.n_out)).astype(m.dtype)
    try:
        trainer.fit(X, y, epochs=1)
    except (ValueError, FloatingPointError):   # e.g. a schedule that reaches factor 0, a diverging lr
        pass


def main(seed, count):
    rng = np.random.default_rng(seed)
    warnings.simplefilter("ignore")
    bad = 0
    memory_fs = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None    # creating files on disk is slow
    with tempfile.TemporaryDirectory(dir=memory_fs) as folder:
        valid = bases(folder)
        path = os.path.join(folder, "case.st")
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(Slow("slower than 10 s")))
        for i in range(count):
            data = valid[i % len(valid)]
            for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
                data = mutate(rng, data)
            with open(path, "wb") as f:
                f.write(data)
            signal.alarm(10)
            try:
                check(path, rng)
            except Exception as e:  # anything else is a defect
                bad += 1
                print(f"case {i}: {type(e).__name__}: {str(e)[:300]}")
                with open(os.path.join(os.environ.get("FUZZ_KEEP", folder), f"bad-{i}.st"), "wb") as f:
                    f.write(data)
            finally:
                signal.alarm(0)
    print(f"{count} mutated files, {bad} undocumented outcomes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
