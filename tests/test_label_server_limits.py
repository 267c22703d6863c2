"""The labelling server's edges: hostile class names, huge requests, bad ports and hosts."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from al_sim.label.__main__ import main
from al_sim.label.batch import LS_CONFIG_FILE, Item, batch_dir, write_batch
from al_sim.label.human_oracle import view_png
from al_sim.label.web import LabelServer, create_app
from al_sim.runtime.errors import LabelError
from tests.conftest import run_cli
from tests.label_helpers import small_batch

TOKEN = "tok"


def test_class_names_with_xml_characters_give_a_valid_label_studio_config(
        tmp_path: Path) -> None:
    classes = ['say "benign"', "cyst & more", "<script>", "it's > 5 mm"]
    items = [Item("0000000.png", 0, "0", "", None)]
    png = view_png(np.zeros((1, 4, 4), dtype=np.uint8), 4)
    batch = write_batch(batch_dir(tmp_path, 1), 1, classes, items, [png])
    root = ET.parse(batch.dir / LS_CONFIG_FILE).getroot()
    assert [c.get("value") for c in root.iter("Choice")] == classes
    assert root.find("Choices").get("toName") == root.find("Image").get("name") == "image"


class Huge(io.RawIOBase):
    """A 300 MB request body made up as it is read; counts what the server read of it."""

    size = 300 * 2**20

    def __init__(self) -> None:
        self.read, self._at = 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = self.size if whence == io.SEEK_END else offset
        return self._at

    def readinto(self, buffer) -> int:
        buffer[:] = b"x" * len(buffer)
        self.read += len(buffer)
        return len(buffer)


def test_a_huge_request_body_is_refused_unread(tmp_path: Path) -> None:
    batch = small_batch(tmp_path / "run")
    client = create_app(batch, tmp_path / "run", {"me": TOKEN}, max_request_kb=4).test_client()
    body = Huge()
    reply = client.post("/api/label", input_stream=body,
                        headers={"X-Token": TOKEN, "Content-Type": "application/json"})
    assert reply.status_code == 413 and body.read < 64 * 1024
    small = json.dumps({"image": batch.images[0], "label": "benign", "pad": "x" * 3000})
    assert client.post("/api/label", data=small, headers={
        "X-Token": TOKEN, "Content-Type": "application/json"}).status_code == 200


def test_a_deeply_nested_small_body_is_a_400_not_a_crash(tmp_path: Path) -> None:
    batch = small_batch(tmp_path / "run")
    client = create_app(batch, tmp_path / "run", {"me": TOKEN}).test_client()
    for body in ("[" * 60_000, '{"image": ' * 6_000):
        reply = client.post("/api/label", data=body,
                            headers={"X-Token": TOKEN, "Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json["error"] == "send a JSON object"


def test_the_real_server_answers_413_without_reading_the_body(tmp_path: Path) -> None:
    batch = small_batch(tmp_path / "run")
    server = LabelServer(batch, tmp_path / "run", ["me"])
    thread = threading.Thread(target=server._server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/label")
        conn.putheader("X-Token", server.token)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(300 * 2**20))
        conn.endheaders()
        conn.send(b"{" + b" " * 2**16)  # the rest never comes
        assert conn.getresponse().status == 413
    finally:
        conn.close()  # first: a server still reading the body gets its end
        server._server.shutdown()
        server._server.server_close()
        server._socket.close()
        server._lock.release()


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run dir with a batch; a server that would start serving fails the test instead."""
    def served(self) -> None:
        raise AssertionError(f"it served the page at {self.url}")

    monkeypatch.setattr(LabelServer, "serve_until_done", served)
    small_batch(tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "-5"], "--port -5 is not a port number"),
    (["--port", "99999"], "--port 99999 is not a port number"),
    (["--host", "no-such-host.invalid"], "cannot serve the page on no-such-host.invalid"),
    (["--host", "192.0.2.1"], "cannot serve the page on 192.0.2.1"),  # not this machine's
    (["--max-request-kb", "0"], "--max-request-kb 0"),
])
def test_bad_listening_options_are_refused(run_dir: Path, args: list[str], message: str) -> None:
    with pytest.raises(LabelError, match=message):
        main([str(run_dir), *args])


def test_a_busy_port_is_one_error_line_and_exit_2(run_dir: Path, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(LabelError, match=f"127.0.0.1:{port} .*--port"):
            main([str(run_dir), "--port", str(port)])
        proc = run_cli([str(run_dir), "--port", str(port)], tmp_path, module="al_sim.label",
                       timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        proc.stderr
