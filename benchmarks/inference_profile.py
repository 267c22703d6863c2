"""Where al_sim's CPU inference time goes, per image: conversion vs forward, by batch and format.

CPU time (``time.process_time``) per image, median of repeats, for each row (model x image
size) and eval batch size: uint8 -> normalised float through torchvision ``v2`` (the old
path), al_sim's direct path and the fused multiply-add; then forward + softmax with
channels-last and with the default (contiguous) memory format. CPU time rather than wall
time, on ``--threads`` threads (default 1), so a loaded machine still gives usable ratios.

    python benchmarks/inference_profile.py [--threads 1] [--rows simple_cnn:28,...]
        [--batches 64,256,1024] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torchvision.transforms import v2

from al_sim.app.components import build_model
from al_sim.config.data import PreprocessConf
from al_sim.data.transforms import Preprocess

CONF = Path(__file__).resolve().parent.parent / "conf"


def cpu_us_per_image(fn: Callable[[], object], images: int, repeats: int) -> float:
    """Median CPU microseconds per image of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e6 * statistics.median(times) / images


def profile_batch(model: torch.nn.Module, x8: torch.Tensor, batch: int,
                  old: Callable[[torch.Tensor], torch.Tensor], pre: Preprocess) -> str:
    """One line: conversion paths and forward passes at ``batch``, CPU us per image."""
    n, xf = len(x8), pre(x8)

    def convert(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
        return cpu_us_per_image(lambda: [fn(x8[s : s + batch]) for s in range(0, n, batch)],
                                n, repeats=7)

    forward = {}
    for fmt, memory in (("channels_last", torch.channels_last),
                        ("contiguous", torch.contiguous_format)):
        model.to(memory_format=memory)

        def run(mem: torch.memory_format = memory) -> None:
            with torch.inference_mode():
                for s in range(0, n, batch):
                    torch.softmax(model(xf[s : s + batch].contiguous(memory_format=mem)), 1)

        forward[fmt] = cpu_us_per_image(run, n, repeats=3)
    return (f"  batch {batch:>5}: convert v2 {convert(old):6.2f}  direct {convert(pre):6.2f}"
            f"  fused {convert(lambda b: pre(b, fused=True)):6.2f} | forward+softmax "
            f"channels-last {forward['channels_last']:8.1f}  contiguous "
            f"{forward['contiguous']:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="simple_cnn:28,simple_cnn:64,resnet18:28")
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--images", type=int, default=2048, help="SimpleCNN 28 px; others fewer")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat, CPU: seconds (tests/test_benchmarks.py)")
    args = parser.parse_args()
    if args.smoke:
        args.threads, args.rows, args.batches, args.images = 1, "simple_cnn:28", "64", 128
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    old = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=[0.5], std=[0.5])])
    pre = Preprocess(PreprocessConf(), 1)
    print(f"CPU us per image, {args.threads} thread(s), torch {torch.__version__}")
    for spec in args.rows.split(","):
        name, px = spec.split(":")
        px = int(px)
        n = max(64, int(args.images / ((px / 28) ** 2 * (1 if name == "simple_cnn" else 16))))
        model = build_model(OmegaConf.load(CONF / "model" / f"{name}.yaml"), 1, 3, 0).eval()
        x8 = torch.randint(0, 256, (n, 1, px, px), dtype=torch.uint8)
        print(f"{name} {px} px ({n} images)")
        for batch in (int(b) for b in args.batches.split(",")):
            if batch <= n:
                print(profile_batch(model, x8, batch, old, pre))

if __name__ == "__main__":
    main()
