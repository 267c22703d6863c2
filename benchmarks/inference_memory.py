"""The inference memory cap against the memory a pass really takes: for each row (model x
volume side x batch), the bytes ``trainer.inference_memory_mb`` is checked against (the
batch times one volume's peak of live tensors, ``core.footprint.inference_bytes``), the
former estimate (the sum of every activation, ``activation_bytes``) and the peak RSS a
``torch.no_grad`` forward of that batch adds, measured in a fresh process (VmHWM reset
through ``/proc/self/clear_refs`` after one warm-up pass of the same batch; glibc's mmap
threshold fixed at 64 kB so that freed buffers leave the RSS instead of staying in the heap).

    python benchmarks/inference_memory.py [--rows cnn3d:28:16,resnet18_3d:64:2,...]
        [--threads N] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from al_sim.app.components import build_model
from al_sim.core.footprint import activation_bytes, inference_bytes

CONF = Path(__file__).resolve().parent.parent / "conf"
ROWS = "cnn3d:28:16,cnn3d:64:4,resnet18_3d:28:8,resnet18_3d:64:1,resnet18_3d:64:2"
MB = 2**20
MMAP_THRESHOLD = 64 * 1024  # bytes: larger allocations are mapped, and unmapped when freed


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` field (kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(spec: str, threads: int) -> dict[str, float]:
    """One row in this process: the estimates and the measured peak, in MB."""
    name, side, batch = spec.split(":")
    torch.set_num_threads(threads)
    model = build_model(OmegaConf.load(CONF / "model" / f"{name}.yaml"), 1, 2, seed=0,
                        input_size=int(side)).eval()
    x = torch.zeros(int(batch), 1, int(side), int(side), int(side))
    one = x[:1]
    peak, total = inference_bytes(model, one), activation_bytes(model, one)
    with torch.no_grad():
        model(x)  # warm-up: kernels and their caches for this shape
        base = status_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        model(x)
    return {"cap": len(x) * peak / MB, "sum": len(x) * total / MB,
            "measured": (status_bytes("VmHWM") - base) / MB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=ROWS, help="model:side:batch, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="cnn3d at 16^3, batch 2 (seconds)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.threads)))
        return
    rows = "cnn3d:16:2" if args.smoke else args.rows
    print(f"{'row':<22} {'cap estimate MB':>16} {'former sum MB':>14} {'measured MB':>12} "
          f"{'measured/cap':>13}")
    for spec in rows.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", spec,
                              "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)},
                             ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{spec:<22} {r['cap']:>16.1f} {r['sum']:>14.1f} {r['measured']:>12.1f} "
              f"{r['measured'] / r['cap']:>13.2f}")


if __name__ == "__main__":
    main()
