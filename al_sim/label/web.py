"""The labelling page's web server (Flask): one batch, one token, 127.0.0.1 unless told otherwise.

Every request needs the token (``?token=`` or the ``X-Token`` header). Only
the batch's own images are served, by their listed names; symlinks and paths
leaving the run directory are refused. The JSON API is what the page uses:

``GET /api/batch``, ``POST /api/label {image, label}``, ``POST /api/undo``,
``POST /api/done``; each answer is written to ``answers.csv`` at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from flask import Flask, Response, abort, jsonify, request, send_file
from werkzeug.serving import make_server

from al_sim.label.answers import AnswerBook
from al_sim.label.batch import IMAGES_DIR, Batch
from al_sim.maths.task import NO_FINDING
from al_sim.runtime.errors import LabelError

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' "
                               "'unsafe-inline'; frame-ancestors 'none'",
}


def _asset(name: str) -> str:
    return resources.files("al_sim.label").joinpath(name).read_text(encoding="utf-8")


def create_app(batch: Batch, run_dir: Path, token: str, annotator: str,
               suggest: bool = False, on_done: Callable[[], None] | None = None) -> Flask:
    """The page and its API for ``batch``; ``on_done()`` is called after a successful done."""
    app = Flask("al_sim.label")
    book = AnswerBook(batch)
    root = Path(run_dir).resolve()
    by_item = {item.image: item for item in batch.items}

    @app.before_request
    def _require_token() -> None:
        given = request.args.get("token") or request.headers.get("X-Token") or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            abort(403)

    @app.after_request
    def _secure(response: Response) -> Response:
        response.headers.update(_HEADERS)
        return response

    @app.errorhandler(LabelError)
    def _refused(exc: LabelError) -> tuple[Response, int]:
        return jsonify(error=str(exc), **book.progress()), 400

    @app.get("/")
    def page() -> Response:
        html = _asset("page.html").replace("__TOKEN__", token)  # token_urlsafe: no escaping
        return Response(html, mimetype="text/html")

    @app.get("/page.js")
    def script() -> Response:
        return Response(_asset("page.js"), mimetype="text/javascript")

    @app.get("/api/batch")
    def describe() -> Response:
        answers = book.answers()
        images = []
        for item in batch.items:
            entry: dict[str, object] = {"image": item.image, "label": answers[item.image].label
                     if item.image in answers else None}
            if suggest and item.predicted:
                entry["suggestion"] = {"label": item.predicted, "confidence": item.confidence}
            images.append(entry)
        return jsonify(round=batch.round, classes=batch.classes, multilabel=batch.multilabel,
                       no_finding=NO_FINDING, images=images,
                       annotator=annotator, **book.progress())

    @app.get("/image/<path:name>")
    def image(name: str) -> Response:
        if name not in by_item:
            abort(404)
        path = batch.dir / IMAGES_DIR / name
        if path.is_symlink() or not path.resolve().is_relative_to(root) or not path.is_file():
            abort(404)
        return send_file(path.resolve(), mimetype="image/png")

    def _body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise LabelError("send a JSON object")
        return data

    @app.post("/api/label")
    def label() -> Response:
        data = _body()
        book.set(str(data.get("image", "")), str(data.get("label", "")), annotator)
        return jsonify(ok=True, **book.progress())

    @app.post("/api/undo")
    def undo() -> Response:
        return jsonify(image=book.undo(), **book.progress())

    @app.post("/api/done")
    def done() -> Response:
        book.done(annotator)
        if on_done is not None:
            on_done()
        return jsonify(ok=True, **book.progress())

    return app


class LabelServer:
    """The page served on ``host:port`` (port 0: a free one) from a background thread."""

    def __init__(self, batch: Batch, run_dir: Path, annotator: str, host: str = "127.0.0.1",
                 port: int = 0, suggest: bool = False) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request lines (tokens)
        self.token = secrets.token_urlsafe(24)
        self.finished = threading.Event()
        app = create_app(batch, run_dir, self.token, annotator, suggest, self.finished.set)
        self._server = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self._server.server_port

    @property
    def url(self) -> str:
        """The page's address, token included."""
        return f"http://{self.host}:{self.port}/?token={self.token}"

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
