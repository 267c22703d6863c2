"""Where a run computes: the device, CUDA determinism, precision, which data live on the GPU,
torch's threads and glibc's mmap threshold."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

import torch

from al_sim.config.schema import TrainerConf
from al_sim.runtime.errors import ConfigError

# cuBLAS needs this before its first handle for deterministic GEMMs (CUDA >= 10.2)
_CUBLAS_WORKSPACE = ":4096:8"
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when present) as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA GPU is visible; use trainer.device=auto")
    return torch.device(name)


def configure(conf: TrainerConf, device: torch.device) -> None:
    """Refuse settings the device cannot run; on CUDA, set up (non-)deterministic kernels.

    Deterministic CUDA: ``CUBLAS_WORKSPACE_CONFIG`` (set before the first cuBLAS handle),
    ``torch.use_deterministic_algorithms`` (``warn_only``: an op without a deterministic
    kernel warns instead of failing the run), cuDNN autotuning off. CPU runs are already
    deterministic and are left untouched.
    """
    if conf.precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs a CUDA GPU; use trainer.precision=bf16 "
                          "or fp32 on the CPU")
    if device.type != "cuda":
        return
    if conf.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(conf.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not conf.deterministic
    torch.backends.cudnn.deterministic = conf.deterministic


def autocast(conf: TrainerConf, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``trainer.precision`` (a no-op context for fp32)."""
    dtype = AMP_DTYPES[conf.precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Global torch RNGs (CPU, and this CUDA device) seeded inside, restored after."""
    devices = [] if device.type != "cuda" else [device.index or torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def fits_on_device(nbytes: int, device: torch.device, share: float) -> bool:
    """Whether ``nbytes`` take at most ``share`` of the device's free memory (CPU: never moved)."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; a CPU batch bound for CUDA goes through pinned memory, non-blocking."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def fix_mmap_threshold(threshold_mb: float) -> bool:
    """Serve allocations above ``threshold_mb`` with mmap, returned to the system when freed.

    glibc raises its mmap threshold as large blocks are freed; the batches of a long
    scoring pass then come from the heap, and small long-lived results between them
    fragment it, so the process grows with the pool (2.4 GB of heap for a 1.2 GB
    mapped pool, measured). A fixed threshold stops that. Returns False where it
    cannot be set (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_mb * 2**20)))
    except (OSError, AttributeError):
        return False


_TORCH_GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: elements a thread takes at least


def start_threads(threads: int) -> None:
    """Start torch's ``threads`` intra-op (OpenMP) threads now, before a memory cap is set.

    Started later under ``trainer.memory_limit_fraction``'s cap, a thread that cannot get its
    stack aborts the process (libgomp: ``Thread creation failed``) or leaves every oneDNN
    convolution of the process failing with ``could not create a primitive``, where the run
    should end with an out-of-memory line. Threads started once are kept by the process.
    """
    if threads > 1:
        torch.ones(2 * threads * _TORCH_GRAIN_SIZE).add_(1)
