"""Pool scoring throughput: al_sim's inference path vs a bare PyTorch loop vs the fp32 ceiling.

Every figure is measured ``--repeats`` times, interleaved: each repeat measures the
ceiling (fp32 2048^3 product via ``torch.mm`` and as a oneDNN/cuDNN 1x1 convolution), then
for each row (model x image size) the naive loop and every al_sim variant, one pass over
the pool each. Ratios (x naive, % of that repeat's ceiling) are reported as the median and
the min-max over the repeats, with the load average and the script's total time.

- **naive**: bare ``model(x)`` over float32 inputs already on the device, default memory
  format, batches of 1024, ``torch.no_grad``.
- **al_sim**: ``Trainer.predict_proba`` on the uint8 pool (placed as a run places it:
  on the GPU when it fits), per-batch conversion on the device, ``inference_mode``. Variants:
  eval batch size x fused normalisation x memory format. ``auto`` marks the variant that
  ``trainer.eval_batch_size=auto`` resolves to; ``best`` the fastest measured; the
  suggested ``trainer.eval_batch_table`` entries are printed at the end.
- **convert %**: share of the auto variant's time spent converting batches (uint8 -> device
  -> normalised float, the memory-format copy), measured as its own interleaved pass.

    python benchmarks/pool_scoring.py [--repeats 5] [--pool 8192] [--threads N]
        [--device cpu|cuda] [--rows simple_cnn:28,resnet18:64] [--batches 64,256,1024]
        [--fused 0,1] [--formats cl,contig] [--precision fp32] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from al_sim.app.components import build_model
from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess

CONF = Path(__file__).resolve().parent.parent / "conf"
NAIVE_BATCH = 1024


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call (device work included)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ceiling(device: torch.device, n: int = 2048) -> tuple[float, float]:
    """fp32 GFLOP/s of an n^3 product: ``torch.mm`` and the same product as a 1x1 conv."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x = torch.randn(1, n, n // 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, device=device).contiguous(memory_format=torch.channels_last)
    flop = 2 * n**3
    with torch.inference_mode():
        torch.mm(a, b), torch.nn.functional.conv2d(x, w)  # warm-up
        mm = min(timed(lambda: torch.mm(a, b), device) for _ in range(3))
        conv = min(timed(lambda: torch.nn.functional.conv2d(x, w), device) for _ in range(3))
    return flop / mm / 1e9, flop / conv / 1e9


def flops_per_image(model: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    """Forward FLOPs of one image (torch's FLOP counter, on the CPU)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def naive_loop(model: torch.nn.Module, x: torch.Tensor) -> None:
    """What plain PyTorch gives: eval mode, no_grad, default memory format."""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), NAIVE_BATCH):
            model(x[start : start + NAIVE_BATCH])


class Row:
    """One model x image size: its inputs, its variants and their timings per repeat."""

    def __init__(self, name: str, px: int, pool: int, device: torch.device, args) -> None:  # noqa: ANN001
        self.name, self.px, self.pool, self.device = name, px, pool, device
        model_cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        self.flops = flops_per_image(build_model(model_cfg, 1, 3, 0), (1, px, px))
        self.model = build_model(model_cfg, 1, 3, 0).to(device)
        self.naive_model = build_model(model_cfg, 1, 3, 0).to(device)
        x8 = torch.randint(0, 256, (pool, 1, px, px), dtype=torch.uint8)
        self.xf = ((x8.float() / 255 - 0.5) / 0.5).to(device)
        self.variants: dict[str, tuple[Trainer, torch.Tensor]] = {}
        auto = Trainer(TrainerConf(device=device.type, precision=args.precision),
                       Preprocess(PreprocessConf(), 1), device)
        self.auto_batch = auto.eval_batch_size(self.model, x8)
        for fmt in args.formats:
            for fused in args.fused:
                for batch in args.batches:
                    conf = TrainerConf(eval_batch_size=batch, fused_normalise=bool(fused),
                                       channels_last=fmt == "cl", device=device.type,
                                       precision=args.precision)
                    trainer = Trainer(conf, Preprocess(PreprocessConf(), 1), device)
                    self.variants[f"bs={batch} fused={fused} {fmt}"] = (trainer, trainer.place(x8))
        self.auto = f"bs={self.auto_batch} fused=0 cl"
        if self.auto not in self.variants:
            self.variants[self.auto] = (auto, auto.place(x8))
        self.times: dict[str, list[float]] = {k: [] for k in ["naive", "convert", *self.variants]}

    def convert_pass(self) -> None:
        """Only the auto variant's input conversion, every batch."""
        trainer, x = self.variants[self.auto]
        for start in range(0, len(x), self.auto_batch):
            trainer._inputs(x[start : start + self.auto_batch])  # noqa: SLF001

    def measure_once(self) -> None:
        """One interleaved pass: naive, conversion, then every variant."""
        self.times["naive"].append(timed(lambda: naive_loop(self.naive_model, self.xf),
                                         self.device))
        self.times["convert"].append(timed(self.convert_pass, self.device))
        for key, (trainer, x) in self.variants.items():
            self.times[key].append(timed(lambda t=trainer, x=x: t.predict_proba(self.model, x),
                                         self.device))


def spread(values: list[float], fmt: str) -> str:
    """``median [min-max]`` of ``values``."""
    return (f"{format(statistics.median(values), fmt)} "
            f"[{format(min(values), fmt)}-{format(max(values), fmt)}]")


def report(rows: list[Row], ceilings: list[float]) -> None:
    """The table: per row, naive and every variant, ratios per repeat summarised."""
    header = (f"{'model':<11}{'px':>4}{'MFLOP':>7} {'variant':<24}{'img/s (med)':>12}"
              f"  {'x naive med [min-max]':<22}{'% ceiling med [min-max]':<24}{'convert %':>9}")
    print(header)
    print("-" * len(header))
    suggested = []
    for row in rows:
        naive = row.times["naive"]
        naive_pct = [100 * row.pool * row.flops / t / 1e9 / c
                     for t, c in zip(naive, ceilings, strict=True)]
        print(f"{row.name:<11}{row.px:>4}{row.flops / 1e6:>7.1f} {'naive (batch 1024)':<24}"
              f"{row.pool / statistics.median(naive):>12.0f}  {'1.00':<22}"
              f"{spread(naive_pct, '.0f'):<24}")
        best = min(row.variants, key=lambda k: statistics.median(row.times[k]))
        for key in row.variants:
            ts = row.times[key]
            ratio = [n / t for n, t in zip(naive, ts, strict=True)]
            pct = [100 * row.pool * row.flops / t / 1e9 / c
                   for t, c in zip(ts, ceilings, strict=True)]
            mark = (" auto" if key == row.auto else "") + (" best" if key == best else "")
            conv = ""
            if key == row.auto:
                share = [100 * c / t for c, t in zip(row.times["convert"], ts, strict=True)]
                conv = f"{statistics.median(share):.0f}%"
            print(f"{'':<22} {key + mark:<24}{row.pool / statistics.median(ts):>12.0f}  "
                  f"{spread(ratio, '.2f'):<22}{spread(pct, '.0f'):<24}{conv:>9}")
        model = type(row.model).__name__
        best_batch = int(best.split()[0].removeprefix("bs="))
        suggested.append(f"{row.device.type}-{model}-{row.px}: {best_batch}   # fastest: {best}")
    print("\nsuggested conf/trainer/default.yaml eval_batch_table entries (fastest variant; "
          "fused=1 also needs trainer.fused_normalise=true):")
    for line in suggested:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pool", type=int, default=8192,
                        help="SimpleCNN 28 px pool; other rows get fewer images by FLOPs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", default="simple_cnn:28,simple_cnn:64,resnet18:28,resnet18:64")
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--fused", default="0,1")
    parser.add_argument("--formats", default="cl")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat, CPU: seconds (tests/test_benchmarks.py)")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.pool, args.threads, args.device = 1, 128, 1, "cpu"
        args.rows, args.batches, args.fused, args.formats = "simple_cnn:28", "64", "0", "cl"
    args.batches = [int(b) for b in args.batches.split(",")]
    args.fused = [int(f) for f in args.fused.split(",")]
    args.formats = args.formats.split(",")
    began, load_start = time.perf_counter(), os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    for spec in args.rows.split(","):
        name, px = spec.split(":")
        scale = (int(px) / 28) ** 2 * (1 if name == "simple_cnn" else 16)
        pool = max(int(args.pool / scale) // 64 * 64, 128)
        rows.append(Row(name, int(px), pool, device, args))
    ceilings, mm, conv = [], [], []
    for _ in range(args.repeats + 1):  # the first repeat warms up and is dropped
        blas, onednn = ceiling(device, 256 if args.smoke else 2048)
        for row in rows:
            row.measure_once()
        mm.append(blas)
        conv.append(onednn)
        ceilings.append(max(blas, onednn))
    for row in rows:
        row.times = {k: v[1:] for k, v in row.times.items()}
    ceilings, mm, conv = ceilings[1:], mm[1:], conv[1:]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    print(f"device={device} ({name}) threads={torch.get_num_threads()} torch={torch.__version__}"
          f" precision={args.precision} repeats={args.repeats} (interleaved, after 1 warm-up)")
    print(f"ceiling per repeat, GFLOP/s: torch.mm {spread(mm, '.1f')}, 1x1 conv "
          f"{spread(conv, '.1f')}; each repeat's % uses that repeat's higher figure\n")
    report(rows, ceilings)
    load_end = os.getloadavg()
    print(f"\nload average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
          f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; "
          f"cores {os.cpu_count()}; total {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
