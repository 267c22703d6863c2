"""The labelling page's web server (Flask): one batch, 127.0.0.1 unless told otherwise.

Every request needs a token (``?token=`` or the ``X-Token`` header): one for the
expert, or with named annotators one per annotator, which says who answers (each sees
and changes only their own answers; see ``label/panel_book.py``). Only
the batch's own images are served, by their listed names; symlinks and paths
leaving the run directory are refused. The JSON API is what the page uses:

``GET /api/batch``, ``GET /api/slice?image=&plane=&index=[&centre=&width=]`` (a slice of
a volume item as PNG, :mod:`al_sim.label.volumes`), ``POST /api/label {image, label}``
(the image on screen when the key was pressed), ``POST /api/undo {image}``,
``POST /api/done``; each answer is merged into ``answers.csv`` at once. Request bodies
over ``max_request_kb`` are refused (413) before they are read. One server per batch
(``.server.lock``).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from flask import Flask, Response, abort, g, jsonify, request, send_file
from werkzeug.serving import make_server

from al_sim.config.data import WINDOW_PRESETS
from al_sim.label.answers import AnswerBook, AnswerConflictError, SingleDesk
from al_sim.label.batch import IMAGES_DIR, Batch
from al_sim.label.locks import ServerLock
from al_sim.label.panel_book import Desk, PanelBook
from al_sim.label.volumes import PLANES, read_volume, slice_png, volume_info, volume_path
from al_sim.maths.task import NO_FINDING
from al_sim.runtime.errors import ALSimError, LabelError, os_error_line

MAX_REQUEST_KB = 64  # an answer is ~100 bytes; the page sends nothing larger
VOLUMES_CACHED = 4  # volumes kept in memory for slice requests (the one on screen, neighbours)

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' "
                               "'unsafe-inline'; frame-ancestors 'none'",
}


def _asset(name: str) -> str:
    return resources.files("al_sim.label").joinpath(name).read_text(encoding="utf-8")


def desks(batch: Batch, run_dir: Path, annotators: list[str]) -> dict[str, SingleDesk | Desk]:
    """Each annotator's view of ``batch``: the one expert's, or each named annotator's."""
    if batch.panel is None:
        return {annotators[0]: SingleDesk(AnswerBook(batch), annotators[0])}
    book = PanelBook(batch, run_dir)
    return {name: Desk(book, name) for name in annotators}


def create_app(batch: Batch, run_dir: Path, tokens: dict[str, str], suggest: bool = False,
               on_done: Callable[[], None] | None = None,
               max_request_kb: int = MAX_REQUEST_KB) -> Flask:
    """The page and its API for ``batch``; ``tokens``: annotator -> their token;
    ``on_done()`` is called once a done completes the batch."""
    app = Flask("al_sim.label")
    app.config["MAX_CONTENT_LENGTH"] = max_request_kb * 1024
    by_name = desks(batch, run_dir, list(tokens))
    root = Path(run_dir).resolve()
    by_item = {item.image: item for item in batch.items}
    volumes = {name: path for name in by_item
               if (path := volume_path(batch.dir, name)).is_file() and not path.is_symlink()
               and path.resolve().is_relative_to(root)}
    infos = {name: volume_info(path) for name, path in volumes.items()}

    @lru_cache(maxsize=VOLUMES_CACHED)
    def voxels(name: str) -> np.ndarray:
        return read_volume(volumes[name])

    @app.before_request
    def _require_token() -> None:
        given = (request.args.get("token") or request.headers.get("X-Token") or "").encode()
        who = [name for name, token in tokens.items()
               if secrets.compare_digest(given, token.encode())]
        if not who:
            abort(403)
        g.annotator, g.token = who[0], tokens[who[0]]

    def desk() -> SingleDesk | Desk:
        return by_name[g.annotator]

    @app.after_request
    def _secure(response: Response) -> Response:
        response.headers.update(_HEADERS)
        return response

    @app.errorhandler(ALSimError)
    def _refused(exc: ALSimError) -> tuple[Response, int]:
        try:
            progress = desk().progress()
        except ALSimError:  # answers.csv itself is what is wrong: the message says so
            progress = {}
        return jsonify(error=str(exc), **progress), 409 if isinstance(exc, AnswerConflictError) \
            else 400

    @app.errorhandler(OSError)
    def _file_failed(exc: OSError) -> tuple[Response, int]:
        """A file of the batch cannot be written (a full disk, a read-only mount) or read: the
        expert reads that the answer was not saved (or the page could not be read), whoever
        runs the page reads the file and fix."""
        print(os_error_line(exc, "put the run dir"), file=sys.stderr, flush=True)
        if request.method in ("GET", "HEAD"):
            return jsonify(error=f"cannot read: {exc.strerror or exc}; tell whoever runs this "
                                 "page, then reload it"), 503
        return jsonify(error=f"not saved: {exc.strerror or exc}; the answer is not recorded: "
                             "tell whoever runs this page, then answer again"), 503

    @app.get("/")
    def page() -> Response:
        html = _asset("page.html").replace("__TOKEN__", g.token)  # token_urlsafe: no escaping
        return Response(html, mimetype="text/html")

    @app.get("/page.js")
    def script() -> Response:
        return Response(_asset("page.js"), mimetype="text/javascript")

    @app.get("/viewer.js")
    def viewer() -> Response:
        return Response(_asset("viewer.js"), mimetype="text/javascript")

    @app.get("/api/batch")
    def describe() -> Response:
        view = desk().view()
        for entry in view["images"]:
            item = by_item[entry["image"]]
            if suggest and item.predicted:
                entry["suggestion"] = {"label": item.predicted, "confidence": item.confidence}
            if item.image in infos:
                entry["volume"] = infos[item.image]["shape"]
                if "window" in infos[item.image]:
                    entry["window"] = infos[item.image]["window"]
        return jsonify(round=batch.round, classes=batch.classes, multilabel=batch.multilabel,
                       no_finding=NO_FINDING, annotator=g.annotator, planes=list(PLANES),
                       windows={k: list(v) for k, v in WINDOW_PRESETS.items()}, **view)

    @app.get("/api/slice")
    def volume_slice() -> Response:
        name, plane = request.args.get("image", ""), request.args.get("plane", PLANES[0])
        if name not in volumes:  # only the batch's own volumes, by their listed names
            abort(404)
        if plane not in PLANES:
            raise LabelError(f"plane must be one of {', '.join(PLANES)}")
        try:
            index = int(request.args.get("index", "0"))
            centre, width = (float(request.args[k]) if request.args.get(k) else None
                             for k in ("centre", "width"))
        except ValueError:
            raise LabelError("index is a whole number; centre and width are numbers") from None
        window = None
        if centre is not None and width is not None:
            if not (math.isfinite(centre) and math.isfinite(width) and width > 0):
                raise LabelError("the window needs a finite centre and a width > 0")
            window = (centre, width)
        return Response(slice_png(voxels(name), plane, index, window), mimetype="image/png")

    @app.get("/image/<path:name>")
    def image(name: str) -> Response:
        if name not in by_item:
            abort(404)
        path = batch.dir / IMAGES_DIR / name
        if path.is_symlink() or not path.resolve().is_relative_to(root) or not path.is_file():
            abort(404)
        return send_file(path.resolve(), mimetype="image/png")

    def _body() -> dict:
        data = None
        if request.is_json:  # a cross-site form cannot send this type without asking first
            try:  # bounded by MAX_CONTENT_LENGTH (413 before a byte is read)
                data = json.loads(request.get_data(cache=False) or b"null")
            except (ValueError, RecursionError):  # RecursionError: "[[[[..." too deep
                data = None
        if not isinstance(data, dict):
            raise LabelError("send a JSON object")
        return data

    @app.post("/api/label")
    def label() -> Response:
        data = _body()
        image = str(data.get("image", ""))
        desk().set(image, str(data.get("label", "")))
        return jsonify(ok=True, image=image, **desk().progress())

    @app.post("/api/undo")
    def undo() -> Response:
        image = _body().get("image")  # the page names the image; none: the latest answer
        return jsonify(image=desk().undo(None if image is None else str(image)),
                       **desk().progress())

    @app.post("/api/done")
    def done() -> Response:
        complete = desk().done()
        if complete and on_done is not None:
            on_done()
        return jsonify(ok=True, complete=complete, **desk().progress())

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; LabelError saying why not (busy, bad host)."""
    if not 0 <= port <= 65535:
        raise LabelError(f"--port {port} is not a port number (1-65535, or 0 for a free one)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:  # gaierror (unknown host), EADDRINUSE, EADDRNOTAVAIL, EACCES
        raise LabelError(f"cannot serve the page on {host}:{port} ({exc.strerror or exc}); "
                         "leave --port out for a free port, and --host out for this machine "
                         "only (127.0.0.1)") from None


class LabelServer:
    """The page served on ``host:port`` (port 0: a free one) from a background thread, with
    a token per annotator (one: the expert); holds the batch's server lock (one server per
    batch) until it stops."""

    def __init__(self, batch: Batch, run_dir: Path, annotators: list[str],
                 host: str = "127.0.0.1", port: int = 0, suggest: bool = False,
                 max_request_kb: int = MAX_REQUEST_KB) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request lines (tokens)
        self.tokens = {name: secrets.token_urlsafe(24) for name in annotators}
        self.token = self.tokens[annotators[0]]
        self.finished = threading.Event()
        self._lock = ServerLock(batch.dir).acquire()
        try:
            sock = listen(host, port)
            app = create_app(batch, run_dir, self.tokens, suggest, self.finished.set,
                             max_request_kb)
            self._server = make_server(host, port, app, threaded=True, fd=sock.fileno())
        except BaseException:
            self._lock.release()
            raise
        self._socket = sock  # make_server uses a duplicate of it: keep it open while serving
        self.host, self.port = host, self._server.port

    @property
    def url(self) -> str:
        """The page's address, token included (the first annotator's)."""
        return self.url_of(next(iter(self.tokens)))

    def url_of(self, annotator: str) -> str:
        """``annotator``'s page address, their token included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.tokens[annotator]}"

    def serve_until_done(self) -> None:
        """Serve until the expert presses done (or Ctrl-C)."""
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            while not self.finished.wait(0.2):
                pass
            self.finished.wait(0.5)  # let the done response reach the page
        finally:
            self._server.shutdown()
            thread.join(timeout=5)
            self._server.server_close()
            self._socket.close()
            self._lock.release()
