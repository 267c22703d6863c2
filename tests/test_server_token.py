"""The token guard of ``python -m al_sim.server``'s MLflow server, on ASGI messages: only a
request that carries the server's token reaches MLflow."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from al_sim.app.launchers.ray_tasks import with_credentials
from al_sim.tracking.mlflow_server import STATE_FILE, _state, main
from al_sim.tracking.server_token import COOKIE, TOKEN_ENV, HiddenToken, TokenGuard

TOKEN = "t0ken-of-the-server-0123456789abcdef"


class Inner:
    """MLflow's app as the guard sees it: records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"mlflow"})


def ask(path: str = "/api/2.0/mlflow/experiments/search", query: str = "",
        headers: dict[str, str] | None = None, kind: str = "http") -> tuple[Inner, list[dict]]:
    inner, sent = Inner(), []
    scope = {"type": kind, "path": path, "root_path": "", "query_string": query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(TokenGuard(inner, TOKEN)(scope, receive, send))
    return inner, sent


def test_only_the_servers_token_reaches_mlflow() -> None:
    inner, sent = ask()
    assert not inner.seen and sent[0]["status"] == 401
    assert "MLFLOW_TRACKING_TOKEN" in json.loads(sent[1]["body"])["message"]
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Cookie": f"{COOKIE}=wrong"}, {"Authorization": f"Bearer {TOKEN}x"}):
        inner, sent = ask(headers=headers)
        assert not inner.seen and sent[0]["status"] == 401, headers
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"authorization": f"bearer {TOKEN}"},
                    {"Cookie": f"other=1; {COOKIE}={TOKEN}"}):
        inner, sent = ask(headers=headers)
        assert len(inner.seen) == 1 and sent[0]["status"] == 200, headers


def test_a_browsers_token_link_sets_the_cookie_and_drops_the_token_from_the_address() -> None:
    inner, sent = ask("/", f"token={TOKEN}&o=1")
    assert not inner.seen and sent[0]["status"] == 303
    headers = dict(sent[0]["headers"])
    assert headers[b"location"] == b"/?o=1"
    cookie = headers[b"set-cookie"].decode()
    assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie
    inner, sent = ask("/", "token=wrong")
    assert not inner.seen and sent[0]["status"] == 401


def test_the_access_log_keeps_no_token() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/?o=1&token={TOKEN}&p=2", "1.1", 303),
                               None)
    assert HiddenToken().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /?o=1&token=***&p=2 HTTP/1.1" 303'


def test_lifespan_passes_and_a_websocket_without_the_token_is_closed() -> None:
    inner, _ = ask(kind="lifespan")
    assert len(inner.seen) == 1
    inner, sent = ask(kind="websocket")
    assert not inner.seen and sent == [{"type": "websocket.close", "code": 1008}]


def test_a_guard_without_a_token_refuses_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(RuntimeError, match=TOKEN_ENV):
        _ = TokenGuard(Inner()).token


def test_the_token_is_made_once_and_printed_for_the_clients(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as end:
        main(["--dir", str(tmp_path), "--token"])
    assert end.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / STATE_FILE} holds no server")
    token = _state(tmp_path, 5432)["token"]
    assert len(token) >= 32 and _state(tmp_path, None)["token"] == token  # kept
    assert oct((tmp_path / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    with pytest.raises(SystemExit) as end:
        main(["--dir", str(tmp_path), "--token"])
    assert end.value.code == 0 and capsys.readouterr().out == f"{token}\n"


def test_ray_workers_get_the_mlflow_credentials_of_the_sweeps_shell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    init = with_credentials(OmegaConf.create({"address": "auto", "runtime_env": None}))
    assert OmegaConf.to_container(init) == {
        "address": "auto", "runtime_env": {"env_vars": {"MLFLOW_TRACKING_TOKEN": TOKEN}}}
    own = OmegaConf.create({"runtime_env": {"working_dir": ".", "env_vars": {
        "MLFLOW_TRACKING_TOKEN": "theirs", "X": "1"}}})
    assert OmegaConf.to_container(with_credentials(own)) == {"runtime_env": {
        "working_dir": ".", "env_vars": {"MLFLOW_TRACKING_TOKEN": "theirs", "X": "1"}}}
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    assert with_credentials(own) is own
    assert os.environ.get("MLFLOW_TRACKING_TOKEN") is None


def test_a_server_asking_for_a_token_is_one_error_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """401 is an answer: no waiting out tracking.connect_wait_s as for a server that is down."""
    import http.server
    import threading
    import time

    from al_sim.runtime.errors import TrackingError
    from al_sim.tracking.reachability import check_reachable

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(401 if self.headers.get("Authorization") != f"Bearer {TOKEN}"
                               else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for token, words in ((None, "asks for a token"), ("wrong", "refused the token")):
            if token is None:
                monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
            else:
                monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
            started = time.monotonic()
            with pytest.raises(TrackingError, match=words):
                check_reachable(uri, timeout=5, wait_s=30)
            assert time.monotonic() - started < 5
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
        check_reachable(uri, timeout=5, wait_s=30)
    finally:
        server.shutdown()
