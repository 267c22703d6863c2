"""Pool scoring throughput: al_sim's inference path vs a bare PyTorch loop vs the matmul ceiling.

Prints, measured in one run on this machine: the fp32 matrix-multiply GFLOP/s
(the practical ceiling), and for SimpleCNN and ResNet-18 at 28x28 and 64x64
the images/s and achieved GFLOP/s of (a) a naive bare ``model(x)`` loop
(float32 inputs already in memory, default memory format, batch 1024,
``torch.no_grad``) and (b) al_sim's ``Trainer.predict_proba`` (uint8 pool,
per-batch conversion, ``inference_mode``, channels-last). Also the training
throughput (images/s per epoch) of ``Trainer.fit``.

    python benchmarks/pool_scoring.py [--pool 8192] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.models.resnet import ResNet18
from al_sim.models.simple_cnn import SimpleCNN


def best_of(fn, repeats: int = 3) -> float:  # noqa: ANN001
    """Fastest wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def best_of_interleaved(a, b, repeats: int = 5) -> tuple[float, float]:  # noqa: ANN001
    """Fastest times of ``a`` and ``b`` run alternately, so load spikes hit both alike."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(best_of(a, repeats=1))
        tb.append(best_of(b, repeats=1))
    return min(ta), min(tb)


def matmul_gflops(device: torch.device, n: int = 2048) -> tuple[float, float]:
    """Achieved fp32 GFLOP/s of an n x n x n product: ``torch.mm`` (BLAS) and oneDNN.

    The oneDNN figure is the same product as a 1x1 convolution, the kernel
    library the conv layers use; on some CPUs BLAS is far from the peak.
    """
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    blas = 2 * n**3 / best_of(lambda: torch.mm(a, b), repeats=5) / 1e9
    x = torch.randn(1, n, n // 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        onednn = 2 * n**3 / best_of(lambda: torch.nn.functional.conv2d(x, w), repeats=5) / 1e9
    return blas, onednn


def flops_per_image(model: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    """Forward FLOPs of one image (torch's FLOP counter)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def naive_loop(model: torch.nn.Module, x: torch.Tensor, batch: int = 1024) -> None:
    """What plain PyTorch gives: eval mode, no_grad, default memory format."""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            model(x[start : start + batch])


def measure(name: str, build: type, px: int, pool: int, device: torch.device,
            eval_batch: int, ceiling: float, channels: int = 1) -> str:
    """One table row: naive vs al_sim scoring, achieved GFLOP/s, training images/s."""
    flops = flops_per_image(build(in_channels=channels, n_classes=3), (channels, px, px))
    x8 = torch.randint(0, 256, (pool, channels, px, px), dtype=torch.uint8)
    xf = ((x8.float() / 255 - 0.5) / 0.5).to(device)
    trainer = Trainer(TrainerConf(eval_batch_size=eval_batch, epochs=1, min_steps=0),
                      Preprocess(PreprocessConf(), channels), device)
    model = build(in_channels=channels, n_classes=3).to(device)
    t_naive, t_ours = best_of_interleaved(lambda: naive_loop(model, xf),
                                          lambda: trainer.predict_proba(model, x8))
    n_train = min(pool, 2048 if flops < 1e8 else 256)
    y = torch.randint(0, 3, (n_train,)).numpy()
    t_train = best_of(lambda: trainer.fit(model, x8[:n_train], y, 3, 0), repeats=1)
    gflops = pool * flops / t_ours / 1e9
    return (f"{name:<11}{px:>4}{flops / 1e6:>10.1f}{pool / t_naive:>13.0f}"
            f"{pool / t_ours:>14.0f}{gflops:>9.1f}{100 * gflops / ceiling:>8.0f}%"
            f"{t_naive / t_ours:>8.2f}{n_train / t_train:>12.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-batch", type=int, default=TrainerConf().eval_batch_size)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    blas, onednn = matmul_gflops(device)
    ceiling = max(blas, onednn)
    cpu = platform.processor() or platform.machine()
    print(f"device={device} threads={torch.get_num_threads()} cpu={cpu} torch={torch.__version__}")
    print(f"fp32 2048^3 product: torch.mm {blas:.1f} GFLOP/s, oneDNN (1x1 conv) {onednn:.1f} "
          f"GFLOP/s; ceiling = the higher, {ceiling:.1f} GFLOP/s\n")
    header = (f"{'model':<11}{'px':>4}{'MFLOP/img':>10}{'naive img/s':>13}{'al_sim img/s':>14}"
              f"{'GFLOP/s':>9}{'% matmul':>9}{'x naive':>8}{'train img/s':>12}")
    print(header)
    print("-" * len(header))
    for name, build in (("simple_cnn", SimpleCNN), ("resnet18", ResNet18)):
        for px in (28, 64):
            pool = args.pool if name == "simple_cnn" else max(args.pool // (4 * px // 28) ** 2, 128)
            print(measure(name, build, px, pool, device, args.eval_batch, ceiling))


if __name__ == "__main__":
    main()
