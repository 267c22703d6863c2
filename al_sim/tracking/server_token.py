"""The token ``python -m al_sim.server``'s MLflow server asks of every request.

MLflow's server has no login of its own short of its basic-auth app (users and passwords in
a database of their own). This guard (``mlflow server --app-name al-sim-token``, registered
in ``pyproject.toml``) wraps MLflow's own app and lets a request through when it carries the
server's token: ``Authorization: Bearer <token>``, which MLflow's client sends from
``MLFLOW_TRACKING_TOKEN``; or, for a browser, the cookie a ``?token=<token>`` link sets.
Anything else is answered 401 before MLflow sees it. The token comes from the server's
environment (``AL_SIM_SERVER_TOKEN``), never a command line.
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from al_sim.tracking.contract import CLIENT_TOKEN_ENV

TOKEN_ENV = "AL_SIM_SERVER_TOKEN"
COOKIE = "al_sim_mlflow_token"
MLFLOW_APP = "mlflow.server.fastapi_app:app"
ACCESS_LOG = "uvicorn.access"  # its request lines hold a browser's ?token= link
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers", [])}


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


class TokenGuard:
    """An ASGI app: ``inner`` for requests that carry ``token``, 401 for the rest."""

    def __init__(self, inner: ASGIApp | None = None, token: str | None = None) -> None:
        self._inner, self._token = inner, token

    @property
    def inner(self) -> ASGIApp:
        """MLflow's app, imported on first use (the ``mlflow server`` CLI imports this module
        to see whether ``app`` is a factory, before MLflow's settings are in its environment)."""
        if self._inner is None:
            module, name = MLFLOW_APP.split(":")
            self._inner = getattr(importlib.import_module(module), name)
        return self._inner

    @property
    def token(self) -> str:
        if self._token is None:
            token = os.environ.get(TOKEN_ENV, "")
            if len(token) < 16:
                raise RuntimeError(f"{TOKEN_ENV} is not set (or shorter than 16 characters): "
                                   "start the server with python -m al_sim.server")
            self._token = token
        return self._token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan: MLflow's start and stop
            await self.inner(scope, receive, send)
            return
        headers = _headers(scope)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.token):
            await self.inner(scope, receive, send)
            return
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        if cookie is not None and _same(cookie.value, self.token):
            await self.inner(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if scope["type"] == "http" and any(k == "token" and _same(v, self.token)
                                           for k, v in query):
            await _enter(scope, send, self.token, [(k, v) for k, v in query if k != "token"])
            return
        await _refuse(scope, send)


async def _enter(scope: Scope, send: Send, token: str, rest: list[tuple[str, str]]) -> None:
    """A browser's ``?token=`` link: set the cookie and go to the same page without it."""
    location = scope.get("root_path", "") + scope["path"] + (f"?{urlencode(rest)}" if rest
                                                             else "")
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")),
                            (b"set-cookie", cookie.encode("latin-1")),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error_code": "UNAUTHENTICATED", "message": (
        f"this MLflow server asks for its token: set {CLIENT_TOKEN_ENV} (the token in "
        "server.json of python -m al_sim.server's --dir), or open the server's ?token= link "
        "in a browser")}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="al_sim"'),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class HiddenToken(logging.Filter):
    """Writes a request line's ``token=...`` as ``token=***`` (uvicorn's access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


logging.getLogger(ACCESS_LOG).addFilter(HiddenToken())
app = TokenGuard()
