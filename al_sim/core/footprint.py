"""A model's memory, measured: a stack member's training state and one training batch's
activations, the peak of one inference pass, and the memory free on its device."""

from __future__ import annotations

import os
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Bytes a parameter holds while training: weight, gradient and Adam's two moments.
STATE_COPIES = 4
# An activation is kept for the backward pass and gets a gradient of its own size.
ACTIVATION_COPIES = 2

# Operators whose CPU kernels (oneDNN) may compute in a blocked layout and copy the result
# into the output: a second output-sized buffer alive during the call (measured: cnn3d at
# 64^3 peaks one output above its live tensors, benchmarks/inference_memory.py).
_SCRATCH_LIKE_OUTPUT = {torch.ops.aten.convolution}


def member_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """The training footprint of one member: parameter state plus the outputs of every leaf
    module on ``batch`` (one forward pass, measured with hooks)."""
    state = sum(p.numel() * p.element_size() for p in model.parameters()) * STATE_COPIES
    return (state + activation_bytes(model, batch) * ACTIVATION_COPIES
            + batch.numel() * batch.element_size())


def activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the outputs of every leaf module of ``model`` on ``batch`` (one forward pass
    without gradients, measured with hooks): what training keeps for the backward pass (an
    inference pass frees most of it as it goes: :func:`inference_bytes`)."""
    seen = [0]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            seen[0] += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return seen[0]


def inference_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Peak bytes of tensors alive at once while ``model`` runs on ``batch`` without
    gradients, ``batch`` included: every operator's output is counted from its allocation
    until its storage is freed (views and in-place results share their input's storage; the
    parameters and buffers are not counted). A convolution also counts one output-sized
    scratch buffer; other internal scratch space is not seen: callers keep a margin
    (``trainer.inference_memory_mb``)."""
    counter = _LiveBytes(model)
    counter.track(batch)
    try:
        with torch.no_grad(), counter:
            model(batch)
    finally:
        counter.close()
    return counter.peak


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of live tensor storages created under it, and their peak."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._owned = {id(t.untyped_storage())
                       for t in (*model.parameters(), *model.buffers())}
        self._tracked: dict[int, weakref.finalize] = {}

    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage from now until it is freed (once per storage)."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._owned or key in self._tracked:
            return
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        self._tracked[key] = weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self.live -= size
        self._tracked.pop(key, None)

    def close(self) -> None:
        """Stop watching the storages still alive (the output, the batch)."""
        for done in list(self._tracked.values()):
            done.detach()
        self._tracked.clear()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        if func.overloadpacket in _SCRATCH_LIKE_OUTPUT and isinstance(out, torch.Tensor):
            self.peak = max(self.peak, self.live + out.untyped_storage().nbytes())
        return out


def free_bytes(device: torch.device) -> int:
    """Memory free for new members: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
