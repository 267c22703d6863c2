"""A stack member's memory, measured: its training state and one training batch's
activations, and the memory free on its device."""

from __future__ import annotations

import os

import torch
from torch import nn

# Bytes a parameter holds while training: weight, gradient and Adam's two moments.
STATE_COPIES = 4
# An activation is kept for the backward pass and gets a gradient of its own size.
ACTIVATION_COPIES = 2


def member_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """The training footprint of one member: parameter state plus the outputs of every leaf
    module on ``batch`` (one forward pass, measured with hooks)."""
    state = sum(p.numel() * p.element_size() for p in model.parameters()) * STATE_COPIES
    return (state + activation_bytes(model, batch) * ACTIVATION_COPIES
            + batch.numel() * batch.element_size())


def activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the outputs of every leaf module of ``model`` on ``batch`` (one forward pass
    without gradients, measured with hooks): what one pass of ``batch`` holds at most."""
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


def free_bytes(device: torch.device) -> int:
    """Memory free for new members: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
