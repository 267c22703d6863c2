"""Synthetic images at 28-224 px: generation time and peak memory of the default dataset.

For each size, builds the default synthetic dataset (5,000 pool + 2,000 test
images) and reports wall time, the images' size and the peak of memory
allocated while generating (``tracemalloc``: numpy reports its buffers).
At 224 px it also times the exact double-precision recipe used up to 64 px
(``_EXACT_MAX_SIZE`` raised for the measurement) on the same 1,000 images,
in the same run, as the before/after comparison.

    python benchmarks/image_sizes.py [--sizes 28 64 128 224] [--smoke]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

from al_sim.data import synthetic
from al_sim.data.synthetic import generate_images, load_synthetic

MB = 1 << 20


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:  # noqa: ANN001
    """``fn(...)``, its wall seconds and peak traced MB."""
    tracemalloc.start()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    return out, wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128, 224])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat, CPU: seconds (tests/test_benchmarks.py)")
    opts = parser.parse_args()
    sizes = {"n_pool": 200, "n_test": 100} if opts.smoke else {}
    if opts.smoke:
        opts.sizes = [28]
    warnings.simplefilter("ignore")
    print(f"{'px':>4} {'pool+test':>10} {'images MB':>10} {'wall s':>7} {'peak MB':>8}")
    for size in opts.sizes:
        ds, wall, peak = timed(load_synthetic, image_size=size, **sizes)
        n = ds.n_pool + len(ds.test_y)
        mb = (ds.pool_x.numel() + ds.test_x.numel()) / MB
        print(f"{size:>4} {n:>10} {mb:>10.0f} {wall:>7.1f} {peak:>8.0f}")
    if 224 in opts.sizes:
        args = (1000, 224, [0.6, 0.25, 0.15], 0.5)
        _, fast, _ = timed(generate_images, *args, seed=0)
        exact = synthetic._EXACT_MAX_SIZE
        synthetic._EXACT_MAX_SIZE = 10**6
        try:
            _, slow, _ = timed(generate_images, *args, seed=0)
        finally:
            synthetic._EXACT_MAX_SIZE = exact
        print(f"1,000 images at 224 px: {fast:.1f} s (single-precision texture) vs "
              f"{slow:.1f} s (the exact recipe of <= 64 px), {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
