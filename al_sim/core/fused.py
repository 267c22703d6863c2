"""A stack's members fused side by side along the channel axis (HFTA's layout): tensors are
``B x K*C x ...``, member ``k`` in channels ``k*C .. (k+1)*C``; each convolution is grouped per
member, each BatchNorm runs over every member's channels (so its statistics stay per member),
each linear layer is a batched matmul. One op per layer does the K members' work, without the
re-layouts ``vmap`` makes between convolutions (members in channels) and pooling or BatchNorm
(members in the batch), which cost lock-step more than its convolutions on a CPU."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from al_sim.models.base import ALModel

Tensors = dict[str, torch.Tensor]

# leaves without parameters that act per channel, kept as they are
_PER_CHANNEL = (nn.ReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
                nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                nn.AdaptiveMaxPool3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_COUNT = "num_batches_tracked"


class UnfusableError(ValueError):
    """A layer the fused layout has no per-member form for."""


class FusedLinear(nn.Module):
    """K linear layers on ``... x K*F`` inputs: ``... x K*O`` outputs, one batched matmul."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))
        bias = [m.bias for m in linears]
        self.bias = None if bias[0] is None else nn.Parameter(
            torch.stack([b.detach() for b in bias if b is not None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, out, width = self.weight.shape
        z = x.reshape(-1, k, width).transpose(0, 1)  # K x N x F
        y = torch.bmm(z, self.weight.transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.transpose(0, 1).reshape(*x.shape[:-1], k * out)


def _cat(parts: Sequence[nn.Module], name: str) -> Any:
    """The members' ``name`` tensors concatenated along their first axis (None if absent)."""
    tensors = [getattr(p, name) for p in parts]
    return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])


def _param(value: torch.Tensor | None) -> nn.Parameter | None:
    return None if value is None else nn.Parameter(value)


def _fuse_leaf(parts: Sequence[nn.Module]) -> nn.Module | None:
    """The fused form of one layer of every member (None: keep the layer as it is)."""
    first, k = parts[0], len(parts)
    if type(first) in _PER_CHANNEL:
        return None
    if type(first) in _CONVS:
        c: Any = first
        conv = type(c)(c.in_channels * k, c.out_channels * k, c.kernel_size, stride=c.stride,
                       padding=c.padding, dilation=c.dilation, groups=c.groups * k,
                       bias=c.bias is not None, padding_mode=c.padding_mode, device="meta")
        conv.weight, conv.bias = _param(_cat(parts, "weight")), _param(_cat(parts, "bias"))
        return conv
    if type(first) in _NORMS:
        b: Any = first
        if b.momentum is None:
            raise UnfusableError("BatchNorm with a cumulative average (momentum=None)")
        norm = type(b)(b.num_features * k, eps=b.eps, momentum=b.momentum, affine=b.affine,
                       track_running_stats=b.track_running_stats, device="meta")
        norm.weight, norm.bias = _param(_cat(parts, "weight")), _param(_cat(parts, "bias"))
        norm.running_mean = _cat(parts, "running_mean")
        norm.running_var = _cat(parts, "running_var")
        norm.num_batches_tracked = None  # each member's count is kept by the stack
        return norm
    linears = [p for p in parts if type(p) is nn.Linear]
    if type(first) is nn.Linear and len(linears) == len(parts):
        return FusedLinear(linears)
    raise UnfusableError(f"no fused form for {type(first).__name__}")


def fuse(models: Sequence[ALModel]) -> nn.Module:
    """The members as one module in the fused layout (``UnfusableError`` where it has none)."""
    fused = copy.deepcopy(models[0])
    for name, module in models[0].named_modules():
        own = any(v is not None for v in [*module._parameters.values(),
                                          *module._buffers.values()])
        if next(module.children(), None) is not None:
            if own:
                raise UnfusableError(f"{type(module).__name__} holds tensors of its own")
            continue
        new = _fuse_leaf([m.get_submodule(name) for m in models])
        if new is not None:
            fused.set_submodule(name, new)
    return fused


class FusedStack:
    """The members as one fused module, with each member's state seen as ``K x ...`` views
    (``state``), its BatchNorm batch counts kept per member."""

    def __init__(self, models: Sequence[ALModel], memory_format: torch.memory_format) -> None:
        if len({type(m) for m in models}) != 1:
            raise UnfusableError("members of more than one model class")
        self.size, self.memory_format = len(models), memory_format
        self.module = fuse(models).to(memory_format=memory_format)
        self.template = copy.deepcopy(models[0]).to("meta")
        fused = dict(self.module.state_dict(keep_vars=True))
        self.counts: Tensors = {}
        self._views: Tensors = {}
        for name, value in models[0].state_dict().items():
            if name.rsplit(".", 1)[-1] == _COUNT:
                self.counts[name] = torch.stack([m.state_dict()[name] for m in models])
            else:
                self._views[name] = fused[name].detach().view(self.size, *value.shape)
        self.params = list(self.module.parameters())

    def state(self) -> Tensors:
        """Every member tensor as a ``K x ...`` view into the fused module (writable)."""
        return {**self._views, **self.counts}

    def member(self, k: int) -> Tensors:
        """Member ``k``'s state dict (detached copies)."""
        return {name: v[k].detach().clone() for name, v in self.state().items()}

    def load_member(self, k: int, state: Tensors) -> None:
        with torch.no_grad():
            for name, v in self.state().items():
                v[k].copy_(state[name])

    def write_back(self, models: Sequence[ALModel]) -> None:
        for k, model in enumerate(models):
            model.load_state_dict(self.member(k))

    def train(self, mode: bool) -> None:
        self.module.train(mode)

    def outputs(self, name: str, xb: torch.Tensor, shared: bool,
                post: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``model.<name>`` of every member, ``K x B x ...``: on one batch ``B x C x ...``
        (``shared``: the pool) or on each member's own, ``K x B x C x ...``."""
        k = self.size
        x = xb.repeat(1, k, *[1] * (xb.ndim - 2)) if shared else xb.transpose(0, 1).flatten(1, 2)
        if x.ndim > 2:  # images; embeddings (``head``) have no memory format
            x = x.contiguous(memory_format=self.memory_format)
        out = getattr(self.module, name)(x)
        if self.module.training:
            for count in self.counts.values():
                count += 1
        out = out.reshape(out.shape[0], k, -1).transpose(0, 1)  # K x B x D
        if post is None:
            return out
        return post(out.float().flatten(0, 1)).view(out.shape)  # per image, as for one member

    def losses(self, criterion: Callable[..., torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
               weight: torch.Tensor | None) -> torch.Tensor:
        """Each member's loss on its own batch, ``K``."""
        logits = self.outputs("forward", xb, shared=False)
        return torch.stack([criterion(logits[k], yb[k], None if weight is None else weight[k])
                            for k in range(self.size)])
