"""Hostile files: every reader (model files, checkpoints, IDX, .npy, images) refuses a
malformed file with a ValueError that names it and the fault, at load time, within
memory bounded well below what the file claims (a subprocess under RLIMIT_AS) and in
bounded time; every writer creates files with the mode open() would give them; the
model-file fuzzer runs 10,000 mutations."""
import contextlib
import gzip
import hashlib
import json
import math
import os
import re
import signal
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import cli
from pyneuro import io as pio
from pyneuro.idx import parse_idx, read_idx, write_idx

from fuzz_model_files import forge, pack, split

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not (sys.platform.startswith("linux") and os.path.exists("/proc/self/status")),
                                reason="needs RLIMIT_AS and /proc (Linux)")
GiB = 2**30

LIMITED = """
import resource, sys, time
sys.path.insert(0, {repo!r})
import numpy, safetensors.numpy, pyneuro, pyneuro.cli, pyneuro.idx   # loaded before the limit
try:
    import PIL.Image, PIL.PngImagePlugin
except ImportError:
    pass
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + {headroom}, size + {headroom}))
t0 = time.perf_counter()
try:
    result = {call}
except ValueError as e:
    result = "ValueError: " + str(e)
print(result)
print(f"{{time.perf_counter() - t0:.2f}} s")
"""


def under_memory_limit(call: str, headroom: int = 256 * 2**20):
    """Evaluate `call` in a fresh Python whose address space may grow by `headroom` bytes
    only (a MemoryError is a traceback and a failed test); (its printed result, seconds, stderr)."""
    proc = subprocess.run([sys.executable, "-c", LIMITED.format(repo=str(REPO), headroom=headroom, call=call)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *result, seconds = proc.stdout.strip().splitlines()
    return "\n".join(result), float(seconds.split()[0]), proc.stderr


def run_cli(capsys, *args):
    """(exit status, the one stderr line) of pyneuro.cli.main in this process."""
    status = cli.main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 1 and "Traceback" not in "".join(err), err
    return status, err[0] if err else ""


def dense_doc(n_in, n_out, dtype="float32"):
    return {"dtype": dtype, "input_dim": n_in,
            "layers": [{"type": "Dense", "config": {"n_in": n_in, "n_out": n_out, "activation": "identity"}}]}


# ---- model files: sizes from the description and the header, before anything is allocated ------
@linux_only
def test_a_huge_layer_is_refused_before_its_parameters_are_allocated(tmp_path):
    """436 bytes declaring Dense(20000, 20000): 14.7 s and 4.7 GB before its ValueError, once."""
    path = tmp_path / "huge.st"
    path.write_bytes(forge({"params": np.zeros(4, np.float32)}, {"model": dense_doc(20000, 20000), "info": {}}))
    assert path.stat().st_size < 1000
    result, seconds, _ = under_memory_limit(f"pyneuro.load({str(path)!r})")
    assert result.startswith(f"ValueError: {path}: damaged: the architecture needs float32 params of shape "
                             "(400020000,), the file holds float32 (4,)"), result
    assert seconds < 5


def test_loading_draws_no_random_init(tmp_path, monkeypatch):
    model = pn.Sequential([pn.Dense(5, 4, "relu"), pn.Dropout(0.5), pn.Dense(4, 3)], seed=0)
    model.save(tmp_path / "m.st")

    def forbidden(self, rng):
        raise AssertionError("a random init drawn only to be overwritten")
    monkeypatch.setattr(pn.Dense, "init_params", forbidden)
    back = pn.load(tmp_path / "m.st")
    assert np.array_equal(back.params, model.params) and back.layers[1].rng is not None
    assert all("init_params" not in vars(layer) for layer in back.layers)   # the class's own again


@linux_only
@pytest.mark.parametrize("kind, message", [
    ("zeros", "not a pyneuro model file"),
    ("trailing", "damaged (has trailing bytes): its header describes 40 bytes of tensors, the file holds 3221"),
    ("claims", "damaged (truncated): its header describes 3221225472 bytes of tensors, the file holds 40"),
])
def test_large_files_are_judged_by_their_header_before_they_are_read(tmp_path, kind, message):
    """A 3 GiB file was read whole before its 8-byte header was looked at (MemoryError)."""
    path = tmp_path / "big.st"
    model = pn.Sequential([pn.Dense(4, 2)], seed=0)
    model.save(path)
    if kind == "zeros":
        path.write_bytes(b"")
    if kind == "claims":
        header, body = split(path.read_bytes())
        header["params"].update(shape=[3 * GiB // 4], data_offsets=[0, 3 * GiB])
        path.write_bytes(pack(header, body, checksum=False))
    else:
        with open(path, "r+b") as f:
            f.truncate(3 * GiB)                       # sparse: no disk space used
    result, seconds, _ = under_memory_limit(f"pyneuro.load({str(path)!r})")
    assert result.startswith(f"ValueError: {path}: ") and message in result, result


READERS = {"model file": pn.load, "IDX file": read_idx,
           "checkpoint": lambda p: pn.Trainer.from_checkpoint(p, verbose=0)}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_only_regular_files_are_read_and_os_errors_keep_their_type(tmp_path, reader):
    read = READERS[reader]
    what = "model file" if reader == "checkpoint" else reader
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}: cannot read the {what} \\(Is a directory\\)"):
        read(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'}: cannot read the {what}"):
        read(tmp_path / "none")
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match=f"/dev/zero: expected a {what}, got a character device"):
            read("/dev/zero")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        signal.alarm(10)                              # a blocking open() would hang here
        try:
            with pytest.raises(ValueError, match="got a FIFO"):
                read(tmp_path / "fifo")
        finally:
            signal.alarm(0)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(PermissionError, match=f"{locked}: cannot read the {what}"):
            read(locked)


# ---- JSON: depth, types, versions ---------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    path = tmp_path / "m.st"
    pn.Sequential([pn.Dense(4, 3, "relu"), pn.Dense(3, 2)], seed=0).save(path)
    return path


def edit_header(path, edit):
    """Rewrite the safetensors header with edit(header), the checksum made valid again."""
    header, body = split(path.read_bytes())
    edit(header)
    path.write_bytes(pack(header, body))


@pytest.mark.parametrize("where", ["info", "model", "header"])
@pytest.mark.parametrize("depth", [200, 100_000])
def test_deeply_nested_json_is_a_value_error(small, capsys, where, depth):
    """Once a RecursionError from pn.load and a traceback from the command line."""
    deep = "[" * depth + "]" * depth
    if where == "header":
        data = small.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        text = data[8:8 + n].rstrip().decode()
        text = text[:-1] + ', "extra": ' + deep + "}"
        small.write_bytes(struct.pack("<Q", len(text)) + text.encode() + data[8 + n:])
    else:
        edit_header(small, lambda h: h["__metadata__"].update({where: deep}))
    with pytest.raises(ValueError, match=f"^{re.escape(str(small))}: (damaged|not a pyneuro model file)") as info:
        pn.load(small)
    assert depth > 1000 or "nested deeper than 64 levels" in str(info.value)
    assert run_cli(capsys, "predict", small, small)[0] == 2


@pytest.mark.parametrize("version", [1, 1.0, None, [1], "abc", "-1", "0", "1.0", "1e3", "\u0661", "", " 1"])
def test_format_version_must_be_a_whole_number_in_a_string(small, version):
    """format_version 1 (not "1") was a TypeError without the file name."""
    edit_header(small, lambda h: h["__metadata__"].update(format_version=version))
    with pytest.raises(ValueError, match=f"^{small}: damaged"):
        pn.load(small)


@pytest.mark.parametrize("key, value", [("model", {"dtype": "float32"}), ("info", 3), ("pyneuro_version", None)])
def test_metadata_are_strings(small, key, value):
    edit_header(small, lambda h: h["__metadata__"].update({key: value}))
    with pytest.raises(ValueError, match=f"^{small}: damaged: metadata '{key}' is a"):
        pn.load(small)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(params=np.full(23, np.nan, np.float32)), "parameters hold NaN or infinity"),
    (lambda t: t.update(params=np.zeros(23, np.float64)), "needs float32 params of shape (23,), the file holds float64"),
    (lambda t: t.update(params=np.zeros((1, 23), np.float32)), "params of shape (23,), the file holds float32 (1, 23)"),
    (lambda t: t.update(params=np.zeros(23, np.int32)), "the file holds int32 (23,)"),
    (lambda t: t.pop("params"), "the file holds none"),
    (lambda t: t.update(weights=np.zeros(3, np.float32)), "unexpected tensors ['weights']"),
])
def test_tensors_of_the_wrong_kind_are_refused(small, edit, message):
    tensors, docs = pio.read_file(small)
    edit(tensors)
    small.write_bytes(forge(tensors, {k: v for k, v in docs.items() if k != "pyneuro_version"}))
    with pytest.raises(ValueError, match=f"^{small}: damaged") as info:
        pn.load(small)
    assert message in str(info.value)


@pytest.mark.parametrize("doc, message", [
    ([], "expected a JSON object, got list"),
    ({**dense_doc(4, 2), "input_dim": 10**30}, "receives 1000000000000000000000000000000 inputs"),
    ({**dense_doc(4, 2), "input_dim": -4}, "input_dim: expected an int >= 1"),
    ({**dense_doc(4, 2), "dtype": ["f4"]}, "dtype should be 'float32' or 'float64'"),
    ({**dense_doc(4, 2), "layers": "Dense"}, "'layers' should be a non-empty list"),
    ({**dense_doc(4, 2), "layers": [["Dense"]]}, "layer 0 should be"),
    ({**dense_doc(4, 2), "layers": [{"type": "Dense", "config": {"n_in": 4, "n_out": -2}}]}, "n_out"),
    ({**dense_doc(4, 2), "layers": [{"type": "Dense", "config": {"n_in": 4, "n_out": 2, "alpha": 10**400}}]},
     "OverflowError"),
    ({**dense_doc(4, 2), "layers": [{"type": {}, "config": {}}]}, "layer 0 should be"),
])
def test_model_descriptions_of_the_wrong_types_are_refused(small, doc, message):
    small.write_bytes(forge({"params": np.zeros(10, np.float32)}, {"model": doc, "info": {}}))
    with pytest.raises(ValueError, match=f"^{small}: damaged model description") as info:
        pn.load(small)
    assert message in str(info.value)


# ---- info: a JSON object at save, checked where the command line reads it -------------------------
@pytest.mark.parametrize("info, error, message", [
    ([1, 2], TypeError, "info: expected a dict (a JSON object), got list"),
    ({1: "a"}, ValueError, "info has the key 1, not a string"),
    ({"x": [math.nan]}, ValueError, "info['x'][0] is nan"),
    ({"x": {"y": math.inf}}, ValueError, "info['x']['y'] is inf"),
    ({"x": object()}, ValueError, "info['x'] is a object"),
    ({"x": np.float32(1)}, ValueError, "info['x'] is a float32"),
    ({"x": json.loads("[" * 100 + "]" * 100)}, ValueError, "nested deeper than 64 levels"),
])
def test_info_that_json_cannot_keep_is_refused_at_save(tmp_path, info, error, message):
    """model.save(p, info=[1, 2]) was accepted, and pyneuro predict then died."""
    model = pn.Sequential([pn.Dense(3, 2)], seed=0)
    with pytest.raises(error) as caught:
        model.save(tmp_path / "m.st", info=info)
    assert message in str(caught.value)
    model.info = info
    trainer = pn.Trainer(model, "cross_entropy", verbose=0)
    with pytest.raises(error):
        trainer.save_checkpoint(tmp_path / "ck.st")
    assert os.listdir(tmp_path) == []


def test_nonfinite_parameters_are_refused_at_save(tmp_path):
    model = pn.Sequential([pn.Dense(3, 2)], seed=0)
    model.params[1] = np.nan
    with pytest.raises(ValueError, match="parameters hold NaN or infinity"):
        model.save(tmp_path / "m.st")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("info, fragment", [
    ([1, 2], "damaged info (info: expected a dict"),
    ({"image_shape": [8]}, "image_shape should be [rows, cols] with rows x cols = 64"),
    ({"image_shape": [8, 9]}, "image_shape should be"),
    ({"image_shape": ["8", "8"]}, "image_shape should be"),
    ({"image_shape": "8x8"}, "image_shape should be"),
    ({"image_shape": [8, 8], "pixel_max": "16"}, "pixel_max should be a positive number"),
    ({"image_shape": [8, 8], "pixel_max": -1}, "pixel_max should be a positive number"),
    ({"image_shape": [8, 8], "pixel_max": 10**400}, "pixel_max should be a positive number"),
    ({"image_shape": [8, 8], "background": 3}, "background should be 'dark' or 'light'"),
])
@pytest.mark.parametrize("command", ["predict", "show"])
def test_command_line_checks_the_info_it_reads(tmp_path, capsys, info, fragment, command):
    """AttributeError, IndexError or KeyError tracebacks before."""
    path = tmp_path / "m.st"
    path.write_bytes(forge({"params": np.zeros(650, np.float32)}, {"model": dense_doc(64, 10), "info": info}))
    np.save(tmp_path / "x.npy", np.zeros(64, np.uint8))
    args = ["predict", path, tmp_path / "x.npy"] if command == "predict" else ["show", path, "--out", tmp_path / "w.png"]
    status, line = run_cli(capsys, *args)
    assert status == 2 and str(path) in line and fragment in line, line


# ---- checkpoints: every field's type and range at load -----------------------------------------
@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    X, y = pn.datasets.load_digits()
    model = pn.Sequential([pn.Dense(64, 16, "relu"), pn.Dropout(0.2), pn.Dense(16, 10)], seed=1)
    t = pn.Trainer(model, "cross_entropy", pn.Adam(schedule=pn.CosineDecay(3)), batch_size=16, epochs=3,
                   seed=2, verbose=0)
    t.fit(X[:64], y[:64], epochs=1)
    path = tmp_path_factory.mktemp("ck") / "ck.st"
    t.save_checkpoint(path)
    return path


def rng_state(**state):
    return {"bit_generator": "PCG64", "state": {"state": 1, "inc": 1}, "has_uint32": 0, "uinteger": 0, **state}


CHECKPOINT_EDITS = [
    (lambda ck: ck.update(step=1e30), "step should be an integer in [0, 4611686018427387904], got 1e+30"),
    (lambda ck: ck.update(step=10**30), "step should be an integer"),
    (lambda ck: ck.update(epoch=-1), "epoch should be an integer"),
    (lambda ck: ck.update(end_epoch=0), "end_epoch should be an integer in [1,"),
    (lambda ck: ck.update(batch_size=0), "batch_size should be"),
    (lambda ck: ck.update(epochs="3"), "epochs should be"),
    (lambda ck: ck.update(split_seed=-1), "split_seed should be"),
    (lambda ck: ck.update(allow_nonfinite="yes"), "allow_nonfinite should be true or false"),
    (lambda ck: ck.pop("rng"), "KeyError: 'rng'"),
    (lambda ck: ck.update(rng=[]), "rng should be a random generator's state"),
    (lambda ck: ck.update(rng={"bit_generator": "MT19937"}), "rng is not a state of PCG64"),
    (lambda ck: ck.update(rng=rng_state(state={"state": -1, "inc": 1})), "rng is not a state of PCG64"),
    (lambda ck: ck.update(rng=rng_state(state={"state": 1.5, "inc": 1})), "does not read back as written"),
    (lambda ck: ck.update(rng=rng_state(uinteger=2**40)), "rng is not a state of PCG64"),
    (lambda ck: ck.update(layer_rngs=[None, rng_state()]), "one entry per layer (3)"),
    (lambda ck: ck.update(layer_rngs=[rng_state(), rng_state(), None]), "layer 0 (Dense) has no random stream"),
    (lambda ck: ck.update(layer_rngs=[None, None, None]), "layer_rngs[1] should be a random generator's state"),
    (lambda ck: ck.update(history=[]), "history should be a dict of lists of numbers"),
    (lambda ck: ck.update(history={"loss": ["x"]}), "history['loss'] should be a list of numbers"),
    (lambda ck: ck.update(history={"loss": 1.0}), "history['loss'] should be a list of numbers"),
    (lambda ck: ck.update(loss={"name": "nope", "config": {}}), "loss should be {'name': one of"),
    (lambda ck: ck.update(loss={"name": "huber", "config": []}), "loss should be"),
    (lambda ck: ck.update(loss={"name": "huber", "config": {"delta": -1}}), "Huber delta"),
    (lambda ck: ck.update(optimizer="adam"), "optimizer should be a description"),
    (lambda ck: ck["optimizer"]["config"].update(lr=10**400), "OverflowError"),
    (lambda ck: ck["optimizer"]["config"].update(lr=-1), "lr: expected a finite number"),
    (lambda ck: ck["optimizer"]["config"].update(beta1=1.5), "beta1"),
    (lambda ck: ck["optimizer"].update(schedule={"type": "Nope", "config": {}}), "damaged optimizer description"),
    (lambda ck: ck["optimizer"].update(schedule={"type": "StepDecay", "config": {"step_size": 0}}), "step_size"),
]


@pytest.mark.parametrize("edit, message", CHECKPOINT_EDITS)
def test_hostile_checkpoint_documents_are_refused_at_load(checkpoint_file, tmp_path, edit, message):
    """AttributeError / OverflowError before, or step = 1e30 loaded and failed later in fit."""
    tensors, docs = pio.read_file(checkpoint_file)
    edit(docs["checkpoint"])
    path = tmp_path / "bad.st"
    path.write_bytes(forge(tensors, {k: v for k, v in docs.items() if k != "pyneuro_version"}))
    with pytest.raises(ValueError, match=f"^{path}: damaged checkpoint") as info:
        pn.Trainer.from_checkpoint(path, verbose=0)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("optimizer.m"), "optimizer.m is missing (Adam keeps it)"),
    (lambda t: t.update({"optimizer.zz": np.zeros(3, np.float32)}), "tensors ['optimizer.zz'] belong to no state"),
    (lambda t: t["optimizer.v"].__setitem__(0, -1.0), "optimizer.v holds NaN, infinity or (a second moment) negative"),
    (lambda t: t["optimizer.m"].__setitem__(0, np.inf), "optimizer.m holds NaN, infinity"),
    (lambda t: t.update({"optimizer.m": t["optimizer.m"].astype(np.float64)}), "optimizer.m should be float32"),
])
def test_hostile_optimizer_states_are_refused_at_load(checkpoint_file, tmp_path, edit, message):
    tensors, docs = pio.read_file(checkpoint_file)
    tensors = {k: v.copy() for k, v in tensors.items()}
    edit(tensors)
    path = tmp_path / "bad.st"
    path.write_bytes(forge(tensors, {k: v for k, v in docs.items() if k != "pyneuro_version"}))
    with pytest.raises(ValueError, match=f"^{path}: damaged checkpoint") as info:
        pn.Trainer.from_checkpoint(path, verbose=0)
    assert message in str(info.value), str(info.value)


def test_checkpoint_document_that_is_no_object_is_refused(checkpoint_file, tmp_path):
    tensors, docs = pio.read_file(checkpoint_file)
    path = tmp_path / "bad.st"
    path.write_bytes(forge(tensors, {**{k: v for k, v in docs.items() if k != "pyneuro_version"}, "checkpoint": []}))
    with pytest.raises(ValueError, match=f"^{path}: damaged checkpoint .*expected a JSON object, got list"):
        pn.Trainer.from_checkpoint(path, verbose=0)


def test_a_schedule_beyond_float_range_is_a_value_error():
    """ExponentialDecay(1e300) overflowed Python's float (OverflowError) at the second epoch:
    a growing ExponentialDecay is refused when made; a callable that overflows, when used."""
    with pytest.raises(ValueError, match="gamma"):
        pn.ExponentialDecay(1e300)
    opt = pn.Adam(schedule=lambda epoch: 1e300 ** epoch)
    opt.set_epoch(1)
    with pytest.raises(ValueError, match="learning-rate factor inf"):
        opt.set_epoch(2)


# ---- IDX: streamed, the header's size checked first --------------------------------------------
IDX_18 = bytes([0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 6])     # uint8 (3, 6): 18 bytes of data


@linux_only
def test_gzip_bomb_stops_at_the_declared_size(tmp_path):
    """1 MB of gzip declaring 18 bytes and expanding to 1 GiB: fully decompressed before (MemoryError)."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    member = gzip.compress(bytes(2**20), mtime=0)
    path.write_bytes(gzip.compress(IDX_18 + bytes(18), mtime=0) + member * 1024)
    assert path.stat().st_size < 2**21
    result, seconds, _ = under_memory_limit(f"pyneuro.idx.read_idx({str(path)!r})", headroom=128 * 2**20)
    assert result == (f"ValueError: {path}: has trailing bytes: the header promises shape (3, 6) of uint8 "
                      "(30 bytes in all), the file holds more than 30 bytes"), result
    assert seconds < 5


def test_multi_member_gzip_and_exact_sizes_still_read(tmp_path, rng):
    a = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    write_idx(tmp_path / "a.idx", a)
    raw = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw[:20]) + gzip.compress(raw[20:]))
    assert np.array_equal(read_idx(tmp_path / "b.gz"), a)


@linux_only
def test_raw_idx_size_is_checked_before_the_body_is_read(tmp_path):
    path = tmp_path / "big-idx1-ubyte"
    path.write_bytes(IDX_18 + bytes(18))
    with open(path, "r+b") as f:
        f.truncate(3 * GiB)
    result, _, _ = under_memory_limit(f"pyneuro.idx.read_idx({str(path)!r})")
    assert result == (f"ValueError: {path}: has trailing bytes: the header promises shape (3, 6) of uint8 "
                      f"(30 bytes in all), the file holds {3 * GiB} bytes"), result


@pytest.mark.parametrize("head, message", [
    (bytes([0, 0, 0x0E, 3]) + b"\xff" * 12,   # float64 (2³²−1)³: 6.3e29 bytes, beyond int64
     "truncated: the header promises shape (4294967295, 4294967295, 4294967295) of float64 "
     f"({16 + 8 * (2**32 - 1) ** 3} bytes in all), the file holds 26 bytes"),
    (bytes([0, 0, 8, 70]) + bytes(4 * 70), "cannot be a NumPy array"),
    (bytes([0, 0, 8, 4]) + bytes(4) + b"\xff" * 12, "cannot be a NumPy array"),
])
def test_idx_shapes_beyond_int64_or_numpy_name_the_file(tmp_path, head, message):
    """Once "-8589934579 bytes in all" or NumPy's bare reshape message."""
    path = tmp_path / "odd-idx1-ubyte"
    path.write_bytes(head + bytes(10) if "truncated" in message else head)
    for call, name in ((read_idx, str(path)), (lambda p: parse_idx(Path(p).read_bytes(), "the bytes"), "the bytes")):
        with pytest.raises(ValueError) as info:
            call(path)
        assert str(info.value).startswith(f"{name}: ") and message in str(info.value), str(info.value)


# ---- command-line inputs: images and .npy --------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.st"
    pn.Sequential([pn.Dense(64, 10)], seed=0).save(path, info={"image_shape": [8, 8], "pixel_max": 16,
                                                               "background": "dark"})
    return path


@linux_only
def test_a_huge_image_is_refused_from_its_header(digits_model, tmp_path):
    """A 76 KiB PNG of 9000 x 9000 pixels reached 889 MB before "the image is 9000x9000"."""
    Image = pytest.importorskip("PIL.Image")
    png = tmp_path / "big.png"
    Image.new("L", (9000, 9000)).save(png)
    assert png.stat().st_size < 200_000
    result, _, stderr = under_memory_limit(f"pyneuro.cli.main(['predict', {str(digits_model)!r}, {str(png)!r}])")
    assert result == "2" and stderr.strip() == (f"pyneuro: error: {png}: the image is 9000x9000 pixels, the model "
                                                "takes 8x8 images (resize it first)"), (result, stderr)


def test_decompression_bombs_are_one_line_errors(digits_model, tmp_path, capsys, monkeypatch):
    Image = pytest.importorskip("PIL.Image")
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)    # 64 pixels: more than twice the limit
    status, line = run_cli(capsys, "predict", digits_model, tmp_path / "x.png")
    assert status == 2 and "cannot read the image" in line and "decompression bomb" in line, line


@linux_only
def test_a_npy_header_promising_more_than_the_file_is_refused(digits_model, tmp_path):
    """A 128-byte .npy promising 745 GiB was a MemoryError traceback."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 100000), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    result, _, stderr = under_memory_limit(f"pyneuro.cli.main(['predict', {str(digits_model)!r}, {str(path)!r}])")
    assert result == "2" and f"{path}: cannot read the .npy file (its header promises float64 (1000000, 100000)" \
        in stderr, stderr


@pytest.mark.parametrize("make, fragment", [
    (lambda p: np.savez(p, a=np.zeros(64)), "cannot read the .npy file"),
    (lambda p: np.save(p, np.array([{}] * 64, dtype=object), allow_pickle=True), "Python objects"),
    (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr': 3}   \n"), "cannot read the .npy"),
])
def test_npy_files_that_are_not_arrays_of_numbers(digits_model, tmp_path, capsys, make, fragment):
    path = tmp_path / "x.npy"
    make(path)
    if not path.exists():                                  # np.savez appended .npz
        os.replace(str(path) + ".npz", path)
    status, line = run_cli(capsys, "predict", digits_model, path)
    assert status == 2 and str(path) in line and fragment in line, line


# ---- file modes: as open() gives them, kept on overwrite -----------------------------------------
@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def write_with(writer, folder: Path) -> Path:
    """Write one file with `writer` into folder; its path."""
    if writer == "model":
        pn.Sequential([pn.Dense(3, 2)], seed=0).save(folder / "m.st")
        return folder / "m.st"
    if writer == "checkpoint":
        pn.Trainer(pn.Sequential([pn.Dense(3, 2)], seed=0), verbose=0).save_checkpoint(folder / "ck.st")
        return folder / "ck.st"
    if writer == "idx":
        write_idx(folder / "a.idx.gz", np.zeros(3, np.uint8))
        return folder / "a.idx.gz"
    if writer == "onnx":
        pytest.importorskip("onnx")
        pn.Sequential([pn.Dense(3, 2)], seed=0).to_onnx(folder / "m.onnx")
        return folder / "m.onnx"
    if writer == "plot":
        pytest.importorskip("matplotlib")
        from pyneuro.plots import plot_history
        plot_history({"loss": [1.0, 0.5]}, folder / "curves.png")
        return folder / "curves.png"
    assert writer == "download"
    files = {"f": hashlib.sha256(b"data").hexdigest()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pn.datasets, "MNIST_FILES", files)
        pn.datasets.download_mnist(folder, mirrors=["https://m/"], fetch=lambda url: b"data")
    return folder / "f.gz"


WRITERS = ["model", "checkpoint", "idx", "onnx", "plot", "download"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("writer", WRITERS)
def test_files_are_created_with_the_mode_open_gives(tmp_path, writer):
    """mkstemp's 0600 stayed after the rename, and writing over a 0644 file downgraded it."""
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        folder = tmp_path / f"new{mask:o}"
        folder.mkdir()
        with umask(mask):
            path = write_with(writer, folder)
        assert stat.S_IMODE(path.stat().st_mode) == mode, (writer, oct(mask), oct(path.stat().st_mode))
    with umask(0o077):                                     # overwriting keeps the file's mode
        path.chmod(0o640)
        write_with(writer, path.parent)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_plot_format_comes_from_the_file_name_not_the_folder(tmp_path):
    pytest.importorskip("matplotlib")
    from pyneuro.plots import plot_history
    (tmp_path / "run.v2").mkdir()
    plot_history({"loss": [1.0, 0.5]}, tmp_path / "run.v2" / "curves")
    assert (tmp_path / "run.v2" / "curves").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_mirror_that_sends_without_end_is_cut_off(tmp_path, monkeypatch):
    import urllib.request
    served = []

    class Endless:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n=-1):
            assert n > 0, "read() without a size would read without end"
            served.append(n)
            return bytes(n)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Endless())
    with pytest.raises(OSError, match="more than 67108864 bytes"):
        pn.datasets.download_mnist(tmp_path, mirrors=["https://m/"])
    assert os.listdir(tmp_path) == [] and max(served) == 64 * 2**20 + 1


# ---- the fuzzer -----------------------------------------------------------------------------------
@linux_only
def test_model_files_survive_fuzzing_in_a_subprocess():
    """10,000 mutations of valid model files and checkpoints (bytes, header, documents, tensors,
    the checksum made valid again): a ValueError or a working model, under 1 GiB of address space."""
    script = Path(__file__).with_name("fuzz_model_files.py")
    proc = subprocess.run([sys.executable, str(script), "20261201", "10000"], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    assert "10000 mutated files, 0 undocumented outcomes" in proc.stdout


def test_an_idx_data_set_without_images_is_refused(tmp_path):
    """Empty IDX files loaded, and the command line then failed in NumPy ("zero-size array")."""
    for part, n in (("train", 0), ("t10k", 3)):
        write_idx(tmp_path / f"{part}-images-idx3-ubyte", np.zeros((n, 2, 2), np.uint8))
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte", np.zeros(n, np.uint8))
    with pytest.raises(ValueError, match=f"{tmp_path / 'train-images-idx3-ubyte'}: expected uint8 images"):
        pn.datasets.load_idx(tmp_path)
