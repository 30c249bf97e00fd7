"""Draw a digit, see the network think: a local web page and its JSON API.

    pyneuro serve model.safetensors [--host 127.0.0.1] [--port 8000] [--image-shape H W]

The page (pyneuro/web/: index.html, app.js, style.css; plain files, no build step, nothing
fetched from elsewhere) has a canvas to draw on with a mouse, pen or finger (Pointer Events),
a clear button, the predicted class, the class probabilities as bars, what the network sees
(the drawing downsampled as the training images were made, see app.js) and every hidden
layer's activations as a grid of coloured squares, all updated while the person draws.

The API, on the same server:

    GET  /model     the architecture: layer reprs and widths, the hidden layers shown, the
                    input's image shape, n_in, n_out, pixel_max, how the page downsamples
    POST /predict   {"pixels": [n_in numbers in [0, 1], ink high]}  (Content-Type: application/json)
                    -> {"class": int, "probabilities": [...], "activations": [[...] per hidden layer]}

A bad request (unknown path or method, wrong content type, a body without a length or over
MAX_BODY_BYTES, checked before it is read, bad JSON, pixels of the wrong number, type, range
or NaN/inf) is answered with a 4xx and one line of JSON, {"error": "..."}, and never reaches
the model; the server goes on answering.

Server: the standard library's http.server.ThreadingHTTPServer. The page is for one person
on their own machine (127.0.0.1 by default): a handful of small JSON requests a second, each
a sub-millisecond prediction. A thread per connection serves that with no dependency to
install or keep up to date, and the model's own lock (one per model) makes concurrent
predictions safe. A web framework (Flask, Starlette, ...) would add routing and
an installation step but nothing this page needs; do not put this server on the
open internet (it has no TLS, authentication or rate limits).
"""
from __future__ import annotations

import errno
import json
import socket
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

import numpy as np

from ._version import __version__
from .model import Sequential

MAX_BODY_BYTES = 1 << 20           # a POST body larger than this is refused unread (413)
REQUEST_TIMEOUT_S = 30             # a connection silent this long is closed (frees its thread)
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
JSON_TYPE = "application/json"
# the page needs nothing from elsewhere; the blank data: favicon keeps browsers from asking for one
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


class _RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class DigitPage:
    """A model as the page and the API see it: its description, and checked predictions.

    Parameters
    ----------
    model : Sequential
        A classifier (its outputs are class logits or probabilities).
    shape : pair of int, optional
        The input image's (height, width), when the model's info lacks it and the input
        width is not square.

    Raises
    ------
    ValueError
        For a regressor, an unknown image shape, or an info ``background`` other than
        "dark" (ink is the high value) or "light".
    """

    def __init__(self, model: Sequential, shape=None):
        kind = model.output_kind()
        if kind == "values":
            raise ValueError("this model's outputs are values (a regressor), not class probabilities: "
                             "there is no digit to show")
        self.model = model
        self.shape = model.image_shape(shape)
        background = model.info.get("background", "dark")
        if background not in ("dark", "light"):
            raise ValueError(f"the model's info background: expected 'dark' or 'light', got {background!r}")
        self.background_known = "background" in model.info
        self.ink = "high" if background == "dark" else "low"
        self.hidden = model.shown_layers()[:-1]   # every layer's pattern but the output's
        self.n_classes = 2 if model.n_out == 1 else model.n_out
        self.downsample = {(28, 28): "mnist", (8, 8): "uci-digits"}.get(self.shape, "fit")

    def describe(self) -> dict:
        """What GET /model answers: the architecture and how the page prepares its input.

        Returns
        -------
        dict
            JSON-able.
        """
        m, info = self.model, self.model.info
        return {"layers": [{"index": i, "repr": repr(layer), "width": layer.n_out} for i, layer in enumerate(m.layers)],
                "hidden": [{"index": i, "repr": repr(m.layers[i]), "width": m.layers[i].n_out} for i in self.hidden],
                "widths": [m.n_in] + [layer.n_out for layer in m.layers],
                "input_shape": list(self.shape), "n_in": m.n_in, "n_out": m.n_out, "classes": self.n_classes,
                "pixel_max": info.get("pixel_max"), "dataset": info.get("dataset"), "dtype": m.dtype.name,
                "output_kind": m.output_kind(), "ink": self.ink, "downsample": self.downsample,
                "max_body_bytes": MAX_BODY_BYTES}

    def pixels(self, doc) -> np.ndarray:
        """The pixels of a POST /predict document, checked, as a (1, n_in) batch.

        Parameters
        ----------
        doc : object
            The parsed JSON body: ``{"pixels": [n_in numbers in [0, 1]]}``.

        Returns
        -------
        ndarray of shape (1, n_in), the model's dtype

        Raises
        ------
        ValueError
            Naming what is wrong: not an object, other keys, not a list, the wrong length,
            a value that is not a number (booleans are not), not finite, or outside [0, 1].
        """
        n_in = self.model.n_in
        if not isinstance(doc, dict) or set(doc) != {"pixels"}:
            got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f'expected a JSON object {{"pixels": [...]}} and nothing else, got {got}')
        values = doc["pixels"]
        if not isinstance(values, list) or len(values) != n_in:
            got = f"a list of {len(values)}" if isinstance(values, list) else f"a {type(values).__name__}"
            raise ValueError(f"pixels: expected a list of {n_in} numbers (the {self.shape[0]}x{self.shape[1]} "
                             f"image, row by row), got {got}")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"pixels[{i}]: expected a number, got {json.dumps(v)[:40]}")
            if not 0 <= v <= 1:          # False for NaN too; ints compared exactly, never overflow
                raise ValueError(f"pixels[{i}]: expected a number in [0, 1], got {v!r:.40}")
        return np.asarray(values, dtype=self.model.dtype).reshape(1, n_in)

    def predict(self, X: np.ndarray) -> dict:
        """What POST /predict answers for checked pixels.

        Parameters
        ----------
        X : ndarray of shape (1, n_in)
            As `pixels` returns it.

        Returns
        -------
        dict
            ``class`` (the most probable), ``probabilities`` (predict_proba's row, exactly),
            ``activations`` (one list per hidden layer, as model.activations gives them).
        """
        p = self.model.predict_proba(X)[0]
        outputs = self.model.activations(X) if self.hidden else []
        return {"class": int(np.argmax(p)), "probabilities": p.tolist(),
                "activations": [outputs[i][0].tolist() for i in self.hidden]}


def _json_line(doc) -> bytes:
    return (json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n").encode()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


class _Handler(BaseHTTPRequestHandler):
    """Routes a request to the page's files or the API; every refusal is one line of JSON."""

    server: "DigitServer"
    protocol_version = "HTTP/1.1"          # keep-alive: the page asks many times a second
    disable_nagle_algorithm = True         # headers and body leave at once, not 40 ms apart (delayed ACK)
    server_version = f"pyneuro/{__version__}"
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def __getattr__(self, name: str):
        """Any other method (PUT, DELETE, ...) is a 405, not http.server's 501 page."""
        if name.startswith("do_"):
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, headers too long) as JSON."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":   # http.server's guess for a line it cannot read;
            self.request_version = "HTTP/1.0"    # answer with a status line all the same
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._send(status, JSON_TYPE, _json_line({"error": message or status.phrase}), {"Connection": "close"})

    def _dispatch(self, method: str) -> None:
        routes = {"/predict": {"POST": self._predict}, "/model": {"GET": self._model},
                  **{path: {"GET": self._static} for path in STATIC}}
        headers: dict = {}
        self.body_read = False
        try:
            url = urlsplit(self.path)
            if url.query or url.fragment:
                raise _RequestError(HTTPStatus.BAD_REQUEST, f"{url.path} takes no query string")
            if url.path not in routes:
                raise _RequestError(HTTPStatus.NOT_FOUND, f"no such path {url.path!r}; the page is at /, the API "
                                                          "at POST /predict and GET /model")
            allowed = routes[url.path]
            action = allowed.get("GET" if method == "HEAD" else method)
            if action is None:
                raise _RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {url.path}: not allowed; use "
                                    f"{' or '.join(allowed)}", headers={"Allow": ", ".join(allowed)})
            status, ctype, body, headers = action(url.path)
        except _RequestError as e:
            status, ctype, body, headers = e.status, JSON_TYPE, _json_line({"error": e.message}), e.headers
        except Exception as e:             # a bug or the model failing: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            status, ctype = HTTPStatus.INTERNAL_SERVER_ERROR, JSON_TYPE
            body = _json_line({"error": f"internal error: {type(e).__name__}: {e}".splitlines()[0]})
        if not self.body_read and (self.headers.get("Transfer-Encoding")
                                   or self.headers.get("Content-Length", "0").strip() != "0"):
            self.close_connection = True   # a body left unread: the connection cannot carry another request
            headers = {**headers, "Connection": "close"}
        self._send(status, ctype, body, headers, head=method == "HEAD")

    def _send(self, status, ctype: str, body: bytes, headers: dict, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _static(self, path):
        return HTTPStatus.OK, STATIC[path][1], self.server.files[path], PAGE_HEADERS

    def _model(self, path):
        return HTTPStatus.OK, JSON_TYPE, _json_line(self.server.page.describe()), {"Cache-Control": "no-cache"}

    def _predict(self, path):
        try:
            X = self.server.page.pixels(self._json_body())
        except ValueError as e:
            raise _RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(e)) from None
        result = self.server.page.predict(X)
        try:
            return HTTPStatus.OK, JSON_TYPE, _json_line(result), {"Cache-Control": "no-store"}
        except ValueError:
            raise RuntimeError("the model's outputs are not finite numbers (damaged weights?)") from None

    def _json_body(self):
        """The request's JSON body: its length checked before a byte is read."""
        length_text = self.headers.get("Content-Length")
        if length_text is None or self.headers.get("Transfer-Encoding"):
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED, f"{self.command} {self.path} needs a Content-Length "
                                "(no chunked bodies)")
        if not length_text.strip().isdigit():
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length: expected a whole number, got {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is {length} bytes; at most "
                                f"{MAX_BODY_BYTES} are read")
        body = self.rfile.read(length)
        self.body_read = True
        if len(body) != length:
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body)} of {length} bytes")
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != JSON_TYPE:
            raise _RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"{self.command} {self.path} takes Content-Type: "
                                f"{JSON_TYPE}, got {ctype or 'none'!r}")
        try:
            return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {e}".splitlines()[0]) from None

    def log_request(self, code="-", size="-"):
        """Only refusals and failures are logged: the page asks many times a second."""
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


class DigitServer(ThreadingHTTPServer):
    """The page and API for one model; a thread per connection.

    Parameters
    ----------
    page : DigitPage
    host : str
    port : int
        0 picks a free port (see `url`).
    """

    daemon_threads = True              # open connections do not keep the process alive
    request_queue_size = 64            # connections waiting to be accepted (socketserver's 5 drops
                                       # a burst of clients' SYNs: a 1 s retry each)

    def __init__(self, page: DigitPage, host: str, port: int):
        if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 <= port <= 65535:
            raise ValueError(f"port: expected a whole number from 0 to 65535 (0: any free one), got {port!r}")
        self.page = page
        folder = resources.files("pyneuro").joinpath("web")
        try:
            self.files = {path: folder.joinpath(name).read_bytes() for path, (name, _) in STATIC.items()}
        except OSError as e:
            raise OSError(f"the page's files are missing from the installed package ({e})") from None
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, int(port)), _Handler)
        except OSError as e:
            hint = "; try --port 0 for any free port" if e.errno == errno.EADDRINUSE else ""
            error = OSError(f"cannot listen on {host} port {port}: {e.strerror or e}{hint}")
            error.errno = e.errno
            raise error from None

    @property
    def url(self) -> str:
        """The page's address, with the port actually bound."""
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(model: Sequential, host: str = "127.0.0.1", port: int = 0, shape=None) -> DigitServer:
    """A server for the draw-a-digit page and its API, bound but not yet serving.

    Parameters
    ----------
    model : Sequential
        A classifier of images (see DigitPage).
    host : str
        The address to listen on; 127.0.0.1 (the default) admits only this machine.
    port : int
        0 (the default) picks a free port; `server.url` says which.
    shape : pair of int, optional
        The input image's (height, width), when the model's info lacks it and the input
        width is not square.

    Returns
    -------
    DigitServer
        Call ``serve_forever()`` (in a thread if you like), then ``shutdown()`` and
        ``server_close()``.
    """
    return DigitServer(DigitPage(model, shape), host, port)


def _say(line: str) -> None:
    print(line, flush=True)           # at once, also into a pipe: whoever started us waits for the URL


def serve(model: Sequential, host: str = "127.0.0.1", port: int = 8000, shape=None, print_fn=_say) -> None:
    """Serve the page until interrupted (Ctrl-C), announcing its address.

    Parameters
    ----------
    model, host, port, shape
        As for make_server.
    print_fn : callable
        Receives the line naming the address (and any notes); default: print, flushed.
    """
    server = make_server(model, host, port, shape)
    page = server.page
    h, w = page.shape
    notes = "" if page.background_known else " (its info has no 'background': ink taken as the high value)"
    print_fn(f"pyneuro: draw a digit at {server.url}  ({h}x{w} input, {len(page.hidden)} hidden layer(s)"
             f"{notes}; Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print_fn(f"pyneuro: note: listening on {host}: other machines can reach this page")
    try:
        server.serve_forever()
    finally:
        server.server_close()
