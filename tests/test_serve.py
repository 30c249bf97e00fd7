"""The draw-a-digit page and its JSON API (pyneuro/serve.py, pyneuro/web/).

The API is tested over real sockets; the page in headless Chromium driven by Selenium with
real pointer events (skipped, saying why, where Chromium, its driver or Selenium is missing).
The page's downsampling is checked against a NumPy re-implementation that resizes by exact
area averaging in another way (each pixel repeated, then block means).
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import _core
from pyneuro.serve import MAX_BODY_BYTES, DigitPage, make_server

REPO = Path(__file__).resolve().parents[1]
DIGITS_INFO = {"image_shape": [8, 8], "pixel_max": 16, "background": "dark", "dataset": "digits"}


# ---- models and servers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A small classifier of the bundled 8×8 digits (a fraction of a second), saved and loaded back."""
    X, y = pn.datasets.load_digits()
    model = pn.Sequential.mlp(64, [64, 32], 10, seed=0)
    _core.set_num_threads(1)           # small batches: one thread is fastest, also on a busy machine
    try:
        pn.Trainer(model, loss="cross_entropy", optimizer=pn.Adam(lr=3e-3), batch_size=32, epochs=20, seed=0,
                   verbose=0).fit(X, y)
    finally:
        _core.set_num_threads(None)
    path = tmp_path_factory.mktemp("serve") / "digits.safetensors"
    model.save(path, info=DIGITS_INFO)
    return pn.load(path), path


class Running:
    """A server serving from a thread, for a with-block."""

    def __init__(self, model, **kwargs):
        self.server = make_server(model, **kwargs)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.server

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(digits_model):
    with Running(digits_model[0]) as s:
        yield s


def ask(server, method, path, doc=None, headers=None, body=None):
    """(status, headers, parsed JSON body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    if doc is not None:
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), json.loads(data) if data and "json" in r.getheader("Content-Type") else data


def raw(server, request: bytes):
    """(status, headers, body text) of bytes sent as they are."""
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)      # all sent: a body cut short ends here
        r = http.client.HTTPResponse(sock)
        r.begin()
        return r.status, dict(r.getheaders()), r.read().decode()


# ---- which layers are shown, which image shape ----------------------------------------------
@pytest.mark.parametrize("layers, shown", [
    ([pn.Dense(4, 3, "relu"), pn.Dense(3, 2)], [0]),
    ([pn.Dense(4, 3, "relu"), pn.Dropout(0.5), pn.Dense(3, 5, "tanh"), pn.Identity(), pn.Dense(5, 2)], [0, 2]),
    ([pn.Dense(4, 3), pn.ReLU(), pn.Dense(3, 2)], [1]),                    # f(X·W + b) shown once
    ([pn.Dense(4, 3), pn.Dropout(0.2), pn.Tanh(), pn.Dense(3, 2), pn.Softmax()], [2]),
    ([pn.Dense(4, 3, "relu"), pn.ReLU(), pn.Dense(3, 2), pn.Dropout(0.1)], [0, 1]),
    ([pn.Dense(4, 2)], []),
])
def test_hidden_layers_are_the_outputs_a_reader_would_count(layers, shown):
    assert pn.Sequential(layers, seed=0).shown_layers()[:-1] == shown


def test_image_shape_from_info_flag_or_a_square_width():
    model = pn.Sequential.mlp(784, [8], 10, seed=0)
    assert model.image_shape() == (28, 28)
    model.info = {"image_shape": [14, 56]}
    assert model.image_shape() == (14, 56)
    assert model.image_shape([14, 56]) == (14, 56)
    with pytest.raises(ValueError, match="disagrees with the model's info"):
        model.image_shape([28, 28])
    odd = pn.Sequential.mlp(60, [8], 10, seed=0)
    with pytest.raises(ValueError, match="pass --image-shape H W"):
        odd.image_shape()
    assert odd.image_shape((6, 10)) == (6, 10)
    with pytest.raises(ValueError, match="rows x cols = 60 .*8x8 holds 64 pixels"):
        odd.image_shape((8, 8))
    with pytest.raises(ValueError, match="two positive integers"):
        odd.image_shape((0, 60))


def test_a_regressor_or_an_unknown_background_is_refused():
    X = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    model = pn.Sequential.mlp(4, [3], 1, seed=0)
    pn.Trainer(model, loss="mse", epochs=1, batch_size=16, verbose=0).fit(X, X[:, :1])
    with pytest.raises(ValueError, match="regressor"):
        DigitPage(model)
    classifier = pn.Sequential.mlp(4, [3], 3, seed=0)
    classifier.info = {"background": "grey"}
    with pytest.raises(ValueError, match="background: expected 'dark' or 'light'"):
        DigitPage(classifier)


def test_a_port_out_of_range_or_taken_is_refused(digits_model, server):
    with pytest.raises(ValueError, match="port: expected a whole number from 0 to 65535"):
        make_server(digits_model[0], port=70000)
    with pytest.raises(OSError, match="Address already in use; try --port 0"):
        make_server(digits_model[0], port=server.server_address[1])


# ---- the API --------------------------------------------------------------------------------
def test_model_describes_the_architecture(server, digits_model):
    model = digits_model[0]
    status, headers, doc = ask(server, "GET", "/model")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [layer["repr"] for layer in doc["layers"]] == [repr(layer) for layer in model.layers]
    assert doc["widths"] == [64, 64, 32, 10]
    assert [h["index"] for h in doc["hidden"]] == [0, 1] and [h["width"] for h in doc["hidden"]] == [64, 32]
    assert (doc["input_shape"], doc["n_in"], doc["n_out"], doc["classes"]) == ([8, 8], 64, 10, 10)
    assert (doc["pixel_max"], doc["ink"], doc["downsample"]) == (16, "high", "uci-digits")


def test_predict_answers_as_the_model_does(server, digits_model, rng):
    model = digits_model[0]
    X = rng.random((5, 64)).astype(np.float32)
    P, A = model.predict_proba(X), model.activations(X)
    for i in range(5):
        status, _, doc = ask(server, "POST", "/predict", {"pixels": X[i].tolist()})
        assert status == 200
        assert doc["class"] == int(np.argmax(P[i]))
        np.testing.assert_array_equal(np.array(doc["probabilities"], np.float32), P[i])
        assert len(doc["activations"]) == 2
        for got, layer in zip(doc["activations"], (0, 1)):
            np.testing.assert_array_equal(np.array(got, np.float32), A[layer][i])
    status, _, doc = ask(server, "POST", "/predict", {"pixels": [0] * 32 + [1] * 32})   # integers are numbers
    assert status == 200 and len(doc["probabilities"]) == 10


def _post(body: bytes, content_type="application/json", length=None, extra=b""):
    length = len(body) if length is None else length
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type.encode() + b"\r\n"
            + b"Content-Length: " + str(length).encode() + b"\r\n" + extra + b"\r\n" + body)


GOOD = json.dumps({"pixels": [0.5] * 64}).encode()
BAD_REQUESTS = {
    "unknown path": (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such path '/nothing'"),
    "GET /predict": (b"GET /predict HTTP/1.1\r\nHost: x\r\n\r\n", 405, "use POST"),
    "DELETE /predict": (b"DELETE /predict HTTP/1.1\r\nHost: x\r\n\r\n", 405, "use POST"),
    "POST /model": (b"POST /model HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "use GET"),
    "unknown method": (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "BREW /: not allowed"),
    "query string": (b"GET /model?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "takes no query string"),
    "not HTTP": (b"hello there you\r\n\r\n", 400, "Bad request version"),
    "form body": (_post(GOOD, "application/x-www-form-urlencoded"), 415, "POST /predict takes Content-Type: application/json"),
    "no content type": (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 415, "got 'none'"),
    "no length": (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411, "POST /predict needs a Content-Length"),
    "bad length": (_post(GOOD, length="-5"), 400, "Content-Length: expected a whole number"),
    "over the limit": (_post(b"", length=MAX_BODY_BYTES + 1), 413, f"at most {MAX_BODY_BYTES} are read"),
    "body cut short": (_post(b'{"pix', length=100), 400, "the body ended after 5 of 100 bytes"),
    "bad JSON": (_post(b'{"pixels": [0.5,'), 400, "not JSON"),
    "not UTF-8": (_post(b'{"pixels": "\xff"}'), 400, "not JSON"),
    "NaN": (_post(b'{"pixels": [NaN]}'), 400, "NaN is not a number JSON allows"),
    "Infinity": (_post(b'{"pixels": [Infinity]}'), 400, "Infinity is not a number JSON allows"),
    "not an object": (_post(b"[0.5, 0.5]"), 422, 'expected a JSON object {"pixels": [...]}'),
    "other keys": (_post(json.dumps({"pixels": [0.5] * 64, "label": 7}).encode()), 422, "['label', 'pixels']"),
    "too few": (_post(json.dumps({"pixels": [0.5] * 63}).encode()), 422, "expected a list of 64 numbers"),
    "too many": (_post(json.dumps({"pixels": [0.5] * 65}).encode()), 422, "got a list of 65"),
    "not a list": (_post(b'{"pixels": "0.5"}'), 422, "got a str"),
    "a string": (_post(json.dumps({"pixels": [0.5] * 63 + ["1"]}).encode()), 422, 'pixels[63]: expected a number, got "1"'),
    "a boolean": (_post(json.dumps({"pixels": [True] + [0.5] * 63}).encode()), 422, "pixels[0]: expected a number"),
    "null": (_post(json.dumps({"pixels": [0.5] * 10 + [None] + [0.5] * 53}).encode()), 422, "pixels[10]"),
    "overflow to inf": (_post(b'{"pixels": [' + b"0.5," * 63 + b"1e999]}"), 422, "pixels[63]: expected a number in [0, 1], got inf"),
    "above 1": (_post(json.dumps({"pixels": [0.5] * 5 + [1.5] + [0.5] * 58}).encode()), 422, "got 1.5"),
    "below 0": (_post(json.dumps({"pixels": [-0.01] + [0.5] * 63}).encode()), 422, "got -0.01"),
    "huge integer": (_post(b'{"pixels": [' + b"0," * 63 + b"1" + b"0" * 400 + b"]}"), 422, "pixels[63]"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_line_and_never_reaches_the_model(server, monkeypatch, case):
    request, status, fragment = BAD_REQUESTS[case]
    calls = []
    real_predict = server.page.predict
    monkeypatch.setattr(server.page, "predict", lambda X: calls.append(X) or real_predict(X))
    got, headers, body = raw(server, request)
    assert got == status, body
    assert headers["Content-Type"] == "application/json"
    assert body.endswith("\n") and "\n" not in body[:-1], "one line"
    message = json.loads(body)["error"]
    assert set(json.loads(body)) == {"error"} and fragment in message, message
    assert calls == []
    assert ask(server, "POST", "/predict", body=GOOD, headers={"Content-Type": "application/json"})[0] == 200
    assert len(calls) == 1, "the server keeps answering"


def test_head_and_the_page_files(server):
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = ask(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 100
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        head = ask(server, "HEAD", path)
        assert head[0] == 200 and head[1]["Content-Length"] == str(len(body)) and head[2] == b""
    page = ask(server, "GET", "/")[2].decode()
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page loads nothing from elsewhere"


def test_concurrent_requests_all_get_the_models_answer(server, digits_model, rng):
    model = digits_model[0]
    X = rng.random((8, 25, 64)).astype(np.float32)
    answers: dict = {}

    def client(t):
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)   # keep-alive
        for i in range(X.shape[1]):
            conn.request("POST", "/predict", body=json.dumps({"pixels": X[t, i].tolist()}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            answers[t, i] = (r.status, json.loads(r.read()))
        conn.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == X.shape[0] * X.shape[1]
    P = model.predict_proba(X.reshape(-1, 64)).reshape(8, 25, 10)
    for (t, i), (status, doc) in answers.items():
        assert status == 200
        np.testing.assert_array_equal(np.array(doc["probabilities"], np.float32), P[t, i])
        assert doc["class"] == int(np.argmax(P[t, i]))


def test_pyneuro_serve_prints_its_address_and_serves(digits_model, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pyneuro.cli", "serve", str(digits_model[1]), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url, line or proc.stderr.read()
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=30)
        conn.request("GET", "/model")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["n_in"] == 64
        assert "8x8 input, 2 hidden layer(s)" in line
    finally:
        proc.terminate()
        proc.wait(30)


def test_pyneuro_serve_refuses_what_it_cannot_show(tmp_path):
    odd = pn.Sequential.mlp(60, [8], 10, seed=0)
    odd.save(tmp_path / "odd.safetensors")
    for args, fragment in ((["--port", "0"], "pass --image-shape H W"),
                           (["--image-shape", "7", "7"], "7x7 holds 49 pixels"),
                           (["--image-shape", "6", "10", "--port", "70000"], "port: expected a whole number from 0 to 65535")):
        proc = subprocess.run([sys.executable, "-m", "pyneuro.cli", "serve", str(tmp_path / "odd.safetensors"), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
        assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


# ---- a NumPy re-implementation of the page's downsampling -------------------------------------
def area_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Exact area averaging: each pixel repeated (new size) times along an axis, then the mean
    of each run of (old size) samples."""
    H, W = img.shape
    rows = np.repeat(img, w, axis=1).reshape(H, w, W).mean(axis=2)
    return np.repeat(rows, h, axis=0).reshape(h, H, w).mean(axis=1)


def fit_ink(ink: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
    """The ink's bounding box resized to fit box_h × box_w, keeping its aspect ratio."""
    ys, xs = np.nonzero(ink > 0)
    crop = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    s = min(box_w / crop.shape[1], box_h / crop.shape[0])
    h = min(box_h, max(1, int(np.floor(crop.shape[0] * s + 0.5))))
    w = min(box_w, max(1, int(np.floor(crop.shape[1] * s + 0.5))))
    return area_resize(crop, h, w)


def centre_of_mass(img: np.ndarray) -> np.ndarray:
    """(x, y), a pixel's centre at its index + 0.5."""
    ys, xs = np.indices(img.shape) + 0.5
    return np.array([(img * xs).sum(), (img * ys).sum()]) / img.sum()


def paste(small: np.ndarray, H: int, W: int, top: int, left: int) -> np.ndarray:
    out = np.zeros((H, W))
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


def uci_reference(ink: np.ndarray) -> np.ndarray:
    """UCI optical digits: ink box fit to 32×32, binarised, 4×4 block counts / 16."""
    small = fit_ink(ink, 32, 32)
    bitmap = paste(small, 32, 32, (32 - small.shape[0]) // 2, (32 - small.shape[1]) // 2) >= 0.5
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).ravel() / 16


def mnist_reference(ink: np.ndarray) -> np.ndarray:
    """MNIST: ink box fit to 20×20, placed in 28×28 with its centre of mass at the centre."""
    small = fit_ink(ink, 20, 20)
    cx, cy = centre_of_mass(small)
    return paste(small, 28, 28, int(np.floor(14 - cy + 0.5)), int(np.floor(14 - cx + 0.5))).ravel()


# ---- the page in a real browser ------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    """Headless Chromium under Selenium; skips where any of them is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no headless browser: needs chromium and chromedriver on PATH "
                    "(Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, url):
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.querySelectorAll('#bars li').length > 0 && window.pyneuroIdle !== undefined"))


def draw(driver, points, kind="mouse"):
    """One stroke through points (pixels from the pad's centre) with real pointer events,
    in steps of about 8 pixels; waits until the page shows the answer for it. Returns
    how long the stroke took."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.support.ui import WebDriverWait
    kinds = {"mouse": interaction.POINTER_MOUSE, "touch": interaction.POINTER_TOUCH}
    pad = driver.find_element("id", "pad").rect
    cx, cy = pad["x"] + pad["width"] / 2, pad["y"] + pad["height"] / 2
    path = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        n = max(1, int(np.hypot(x1 - x0, y1 - y0) // 8))
        path += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1)]
    actions = ActionBuilder(driver, mouse=PointerInput(kinds[kind], kind), duration=15)
    actions.pointer_action.move_to_location(round(cx + path[0][0]), round(cy + path[0][1]))
    actions.pointer_action.pointer_down()
    for x, y in path[1:]:
        actions.pointer_action.move_to_location(round(cx + x), round(cy + y))
    actions.pointer_action.pointer_up()
    start = time.perf_counter()
    actions.perform()
    seconds = time.perf_counter() - start
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return window.pyneuroIdle() && window.pyneuroLast !== null"))
    time.sleep(0.2)                        # nothing more arrives after the stroke's answer
    assert driver.execute_script("return window.pyneuroIdle()")
    return seconds


def pad_ink(driver) -> np.ndarray:
    """The pad's ink (its alpha channel, 0..1), read back from the page."""
    alpha = driver.execute_script(
        "const c = document.getElementById('pad'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const a = []; for (let i = 3; i < d.length; i += 4) a.push(d[i]); return [c.height, c.width, a];")
    return np.array(alpha[2], dtype=np.float64).reshape(alpha[0], alpha[1]) / 255


def layer_cells(driver, i: int, n: int) -> np.ndarray:
    """The colour (r, g, b) at the centre of each of hidden layer i's n squares, as drawn."""
    cells = driver.execute_script(
        "const c = document.querySelector(`#layers canvas[data-layer=\"${arguments[0]}\"]`);"
        "const cols = +c.dataset.cols, cell = +c.dataset.cell, d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const out = []; for (let u = 0; u < arguments[1]; u++) {"
        "  const x = (u % cols) * cell + (cell >> 1), y = Math.floor(u / cols) * cell + (cell >> 1), k = 4 * (y * c.width + x);"
        "  out.push([d[k], d[k + 1], d[k + 2]]); } return out;", i, n)
    return np.array(cells)


def save_screenshot(driver, tmp_path, name):
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    if os.environ.get("PYNEURO_SCREENSHOT_DIR"):
        folder = Path(os.environ["PYNEURO_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[0] >= 1000 and np.unique(np.asarray(im.convert("L"))).size > 20, "a picture of the page"


SEVEN = [(-80, -95), (80, -95), (-5, 100)]
ZERO_COLOUR = (45, 51, 64)                 # app.js COLOURS.zero: a unit that does not fire
TOP_COLOUR = (255, 212, 59)                # COLOURS.high: the layer's strongest unit


def test_drawing_a_seven_shows_what_the_model_answers(browser, server, digits_model, tmp_path):
    model = digits_model[0]
    open_page(browser, server.url)
    seconds = draw(browser, SEVEN)
    last = browser.execute_script("return window.pyneuroLast")
    # answers came while drawing, not only at the end, and at most one per 50 ms
    assert 3 <= last["seq"] <= seconds / 0.05 + 2, (last["seq"], seconds)
    X = np.array([last["pixels"]], dtype=np.float32)
    assert X.shape == (1, 64) and 0 <= X.min() and X.max() <= 1

    # the pixels sent are the drawing downsampled as the UCI digits were made
    expected = uci_reference(pad_ink(browser))
    diff = np.abs(X[0] - expected)
    assert diff.max() <= 1 / 16 + 1e-9 and (diff > 1e-9).sum() <= 2, (X[0] * 16).reshape(8, 8)

    # the page shows the model's answer for those pixels, in numbers and in the DOM
    P = model.predict_proba(X)[0]
    np.testing.assert_allclose(last["probabilities"], P, rtol=0, atol=1e-6)
    assert last["class"] == int(np.argmax(P))
    text = lambda css: browser.find_element("css selector", css).text   # noqa: E731
    assert text("#predicted-class") == str(last["class"])
    assert text("#predicted-class") == "7", "a drawn 7 is read as a 7"
    assert text("#confidence") == f"{100 * P[7]:.1f} % sure" or abs(
        float(text("#confidence").split()[0]) - 100 * P[7]) <= 0.05 + 1e-9
    bars = browser.find_elements("css selector", "#bars li")
    assert [b.find_element("css selector", ".label").text for b in bars] == [str(c) for c in range(10)]
    for c, bar in enumerate(bars):
        np.testing.assert_allclose(float(bar.get_attribute("data-probability")), P[c], rtol=0, atol=1e-6)
        shown = float(bar.find_element("css selector", ".value").text.rstrip(" %"))
        assert abs(shown - 100 * P[c]) <= 0.05 + 1e-9
        fill = bar.find_element("css selector", ".fill").size["width"]
        track = bar.find_element("css selector", ".track").size["width"]
        assert abs(fill - P[c] * track) <= 1.5, (c, fill, track)
    assert "top" in bars[7].get_attribute("class")

    # every hidden layer's pattern is drawn: a silent unit grey, the strongest one yellow, as the activations say
    A = model.activations(X)
    grids = browser.find_elements("css selector", "#layers canvas")
    assert len(grids) == 2
    for i, layer in enumerate(model.shown_layers()[:-1]):
        a = A[layer][0]
        cells = layer_cells(browser, i, a.size)
        silent = np.all(cells == ZERO_COLOUR, axis=1)
        np.testing.assert_array_equal(silent, a == 0)
        assert tuple(cells[np.argmax(a)]) == TOP_COLOUR
        np.testing.assert_allclose(last["activations"][i], a, rtol=0, atol=1e-6)
    save_screenshot(browser, tmp_path, "serve-digits.png")

    # Clear empties the pad and the answer
    browser.find_element("id", "clear").click()
    assert browser.execute_script("return window.pyneuroLast") is None
    assert text("#predicted-class") == "–" and pad_ink(browser).max() == 0


def test_a_28x28_model_sees_the_drawing_centred_by_its_mass(browser, tmp_path):
    model = pn.Sequential.mlp(784, [24, 12], 10, seed=1)          # random weights: only the input matters
    model.info = {"image_shape": [28, 28], "pixel_max": 255, "background": "dark"}
    with Running(model) as s:
        open_page(browser, s.url)
        # an L drawn with a finger in the pad's top-left corner: its mass is far from its box's centre
        draw(browser, [(-120, -120), (-120, -20), (-60, -20)], kind="touch")
        last = browser.execute_script("return window.pyneuroLast")
        save_screenshot(browser, tmp_path, "serve-mnist.png")
    sent = np.array(last["pixels"]).reshape(28, 28)
    expected = mnist_reference(pad_ink(browser)).reshape(28, 28)
    assert sent.sum() == pytest.approx(expected.sum(), rel=1e-9)
    assert np.abs(centre_of_mass(sent) - centre_of_mass(expected)).max() <= 1
    assert np.abs(centre_of_mass(sent) - 14).max() <= 0.5 + 1e-9, "its centre of mass at the centre"
    ys, xs = np.nonzero(sent)
    assert max(np.ptp(ys), np.ptp(xs)) + 1 == 20, "the box fit to 20 pixels"
    np.testing.assert_allclose(sent, expected, rtol=0, atol=1e-9)
    P = model.predict_proba(sent.reshape(1, 784).astype(np.float32))[0]
    np.testing.assert_allclose(last["probabilities"], P, rtol=0, atol=1e-6)
