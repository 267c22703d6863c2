"""A pool larger than the memory the process may use: MedMNIST+ layout, memory-mapped.

Writes a fake-but-valid ``pneumoniamnist_224.npz`` (the official keys and
shapes, members stored uncompressed; synthetic 224 px images tiled to the
requested size) into a temp dir, then runs ``python -m al_sim.run`` on it
with RLIMIT_DATA (heap, anonymous and private writable memory: what a copy
of the pool would need; a read-only file mapping does not count) set below
the pool size:

1. as al_sim runs it: the pool is memory-mapped, a query round scores all
   of it (entropy), batch by batch; must succeed;
2. with ``dataset.in_memory_max_mb`` above the pool (read whole): must fail.

Prints the pool size, the limit, wall times and the peak resident set
(``ru_maxrss``, which counts the mapped file pages the kernel kept cached).

``--volumes``: the same with 64^3 volumes (a fake-but-valid ``organmnist3d_64.npz``,
``dataset=medmnist3d``, a one-block ``cnn3d`` trained on batches of 8, inference batches capped at
``trainer.inference_memory_mb=256``).

    python benchmarks/large_pool.py [--pool-mb 1600] [--limit-mb 1400] [--volumes] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from al_sim.data.npz import write_stored
from al_sim.data.synthetic import generate_images
from al_sim.data.synthetic_volume import generate_volumes

NAME, SIZE = "pneumoniamnist", 224
UNIQUE = 256  # distinct images rendered; the pool repeats them
MB = 1 << 20
# The smallest model: one 2-channel conv block, so scoring the whole pool takes seconds.
RUN_ARGS = ["dataset=medmnist", f"dataset.name={NAME}", f"dataset.size={SIZE}",
            "budget=tiny", "budget.rounds=1", "model=simple_cnn", "model.widths=[2]",
            "model.hidden=4", "trainer.epochs=1", "trainer.min_steps=2",
            "trainer.num_threads=1", "progress=false",
            "hydra.run.dir=run"]


VOLUME_NAME, VOLUME_SIDE = "organmnist3d", 64
VOLUME_ARGS = ["dataset=medmnist3d", f"dataset.name={VOLUME_NAME}", f"dataset.size={VOLUME_SIDE}",
               "budget=tiny", "budget.rounds=1", "model=cnn3d", "model.widths=[2]",
               "model.hidden=4", "trainer.epochs=1", "trainer.min_steps=2",
               "trainer.batch_size=8", "trainer.inference_memory_mb=256", "trainer.num_threads=1",
               "progress=false",
               "hydra.run.dir=run"]


def write_archive(root: Path, n_train: int, n_val: int = 64, n_test: int = 128,
                  seed: int = 0, volumes: bool = False) -> Path:
    """``root/pneumoniamnist_224.npz`` with ``n_train`` pool images, written chunk by chunk
    (``volumes``: ``root/organmnist3d_64.npz`` with 64^3 volumes)."""
    if volumes:
        images, labels = generate_volumes(UNIQUE // 4, VOLUME_SIDE, [0.5, 0.5], 0.3, seed)
    else:
        images, labels = generate_images(UNIQUE, SIZE, [0.5, 0.5], 0.3, seed)
    images = images[:, 0]  # MedMNIST grey images are N x H x W (volumes N x D x H x W)
    unique, shape = len(images), images.shape[1:]

    def tiled(n: int, offset: int) -> Iterator[np.ndarray]:
        for start in range(0, n, unique):
            idx = (np.arange(start, min(start + unique, n)) + offset) % unique
            yield images[idx]

    def split(n: int, offset: int) -> dict:
        idx = (np.arange(n) + offset) % unique
        return {"images": ((n, *shape), np.uint8, tiled(n, offset)),
                "labels": labels[idx].astype(np.uint8)[:, None]}

    arrays = {}
    for name, (n, offset) in {"train": (n_train, 0), "val": (n_val, 7),
                              "test": (n_test, 13)}.items():
        for key, value in split(n, offset).items():
            arrays[f"{name}_{key}"] = value
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{VOLUME_NAME}_{VOLUME_SIDE}.npz" if volumes else f"{NAME}_{SIZE}.npz")
    write_stored(path, arrays)
    return path


def _status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v.split()[0]) * 1024 for k, v in
            (line.split(":", 1) for line in text.splitlines()) if v.strip().endswith("kB")}


def run_limited(args: list[str], cwd: Path, limit_bytes: int | None,
                timeout: float = 1200) -> tuple[subprocess.CompletedProcess[str], float, dict]:
    """``python -m al_sim.run args`` under RLIMIT_DATA (None: no limit).

    Returns the finished process, its wall seconds and the peaks of its
    ``/proc/<pid>/status`` fields sampled every 50 ms (``VmData``: what the
    limit counts; ``RssAnon``: resident memory that is not file pages).
    """

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    peaks: dict[str, int] = {}
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, "-m", "al_sim.run", *args], cwd=cwd, env=env,
                          preexec_fn=limit, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as child:
        out: dict[str, str] = {}
        readers = [threading.Thread(target=lambda n=n, s=s: out.__setitem__(n, s.read()))
                   for n, s in (("stdout", child.stdout), ("stderr", child.stderr))]
        for reader in readers:
            reader.start()
        while child.poll() is None and time.perf_counter() - start < timeout:
            for key, value in _status(child.pid).items():
                peaks[key] = max(peaks.get(key, 0), value)
            time.sleep(0.05)
        if child.poll() is None:
            child.kill()
        for reader in readers:
            reader.join()
    wall = time.perf_counter() - start
    proc = subprocess.CompletedProcess(child.args, child.returncode, out.get("stdout", ""),
                                       out.get("stderr", ""))
    return proc, wall, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-mb", type=float, default=1600)
    parser.add_argument("--limit-mb", type=float, default=1400)
    parser.add_argument("--probe", action="store_true",
                        help="no limit, memory-mapped run only: measure what a run needs")
    parser.add_argument("--volumes", action="store_true", help="64^3 volumes (OrganMNIST3D)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat, CPU: seconds (tests/test_benchmarks.py)")
    opts = parser.parse_args()
    if opts.smoke:  # a small archive, memory-mapped, no limit: the run's path, in seconds
        opts.pool_mb, opts.probe = 10, True
    each = VOLUME_SIDE**3 if opts.volumes else SIZE * SIZE
    n_train = int(opts.pool_mb * MB) // each
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        path = write_archive(work / "data", n_train, volumes=opts.volumes)
        kind = f"volumes of {VOLUME_SIDE}^3" if opts.volumes else f"images of {SIZE}x{SIZE}"
        print(f"archive {path.name}: {n_train} pool {kind}, "
              f"{path.stat().st_size / MB:.0f} MB, written in {time.perf_counter() - start:.1f} s")
        limit = None if opts.probe else int(opts.limit_mb * MB)
        args = [*(VOLUME_ARGS if opts.volumes else RUN_ARGS), f"dataset.root={work / 'data'}",
                *(["tracking.enabled=false"] if opts.smoke else [])]
        runs = (("memory-mapped (default)", ["dataset.in_memory_max_mb=0"] if opts.probe else []),
                ("read whole", [f"dataset.in_memory_max_mb={opts.pool_mb * 2}"]))
        for label, extra in runs[:1] if opts.probe else runs:
            cwd = work / label.split()[0]
            cwd.mkdir()
            proc, wall, peaks = run_limited([*args, *extra], cwd, limit)
            last = (proc.stderr.strip().splitlines() or [""])[-1][:160]
            print(f"{label:24s} RLIMIT_DATA {opts.limit_mb:.0f} MB: exit {proc.returncode}, "
                  f"{wall:.1f} s wall; peak VmData {peaks.get('VmData', 0) / MB:.0f} MB, "
                  f"RssAnon {peaks.get('RssAnon', 0) / MB:.0f} MB, "
                  f"VmRSS {peaks.get('VmRSS', 0) / MB:.0f} MB; {last}")


if __name__ == "__main__":
    main()
