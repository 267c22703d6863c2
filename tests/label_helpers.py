"""Helpers of the labelling tests: an unlabelled image folder, a written batch, a page server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from al_sim.data.synthetic import load_synthetic
from al_sim.label.batch import Batch, Item, batch_dir, write_batch
from al_sim.label.human_oracle import view_png

CLASSES = ["benign", "malignant"]


def unlabelled_folder(root: Path, n_initial: int = 20, n_pool: int = 60, n_test: int = 40) -> Path:
    """An image folder whose pool has no pool_labels.csv (only a human can label it)."""
    ds = load_synthetic(n_pool=n_initial + n_pool, n_test=n_test, class_proportions=[0.5, 0.5],
                        seed=0)

    def save(path: Path, x) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[0].numpy()).save(path)

    for i in range(n_initial):
        save(root / "initial_labeled_images" / ds.class_names[ds.pool_y[i]] / f"i{i:03d}.png",
             ds.pool_x[i])
    for i in range(n_initial, n_initial + n_pool):
        save(root / "unlabeled_pool_images" / f"p{i:03d}.png", ds.pool_x[i])
    for i in range(n_test):
        save(root / "test_images" / ds.class_names[ds.test_y[i]] / f"t{i:03d}.png", ds.test_x[i])
    return root


def small_batch(run_dir: Path, n: int = 4, round_: int = 1) -> Batch:
    """A batch of ``n`` random images written as the human oracle writes one."""
    rng = np.random.default_rng(0)
    items = [Item(f"{i:07d}.png", i, f"unlabeled_pool_images/p{i:03d}.png", "benign", 0.6)
             for i in range(n)]
    pngs = [view_png(rng.integers(0, 255, (1, 28, 28), dtype=np.uint8), 64) for _ in items]
    return write_batch(batch_dir(run_dir, round_), round_, CLASSES, items, pngs)


class PageServer:
    """``python -m al_sim.label <run dir>`` in a subprocess; ``url`` is the printed address."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "al_sim.label", str(run_dir), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + self.proc.stderr.read()
        self.url = line.split(" at ", 1)[1].strip()
        self.base, self.token = self.url.split("/?token=")

    def call(self, path: str, body: dict | None = None, token: bool = True) -> tuple[int, dict]:
        """The JSON API, as the page calls it."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method="GET" if
                                         body is None else "POST")
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("X-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            text = err.read()
            return err.code, json.loads(text) if text.startswith(b"{") else {}

    def wait(self, timeout: float = 20) -> str:
        """Wait for the server to end (after done); its stdout."""
        out, _ = self.proc.communicate(timeout=timeout)
        return out

    def stop(self) -> None:
        """Stop it if it still runs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.communicate(timeout=10)
        time.sleep(0)
