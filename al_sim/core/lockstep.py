"""Lock-step training of a stack's members (torch.func): one vmapped forward and
backward per step over the members' stacked parameters, each member on its own labelled set,
its own shuffled order and augmentation stream, its own AdamW state (elementwise, so a stacked
optimiser is per-member), its own BatchNorm statistics (buffers vmapped and updated in place)
and its own early stopping, a mask: a finished or diverged member stops updating, the stack
goes on. Members must have the same labelled count (so the same number of batches)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from al_sim.core.device import autocast, seeded
from al_sim.core.events import FitReport
from al_sim.core.fused import FusedStack, UnfusableError
from al_sim.core.training import Trainer
from al_sim.data.base import Images
from al_sim.models.base import ALModel

Tensors = dict[str, torch.Tensor]
# how far the fused module's outputs on the probe may be from each member's own (grouped and
# plain convolutions sum in different orders); a model that mixes members' channels is far out
_PROBE_RTOL, _PROBE_ATOL = 1e-3, 1e-4


class LockstepUnsupportedError(ValueError):
    """What lock-step cannot do (the caller runs the members one by one instead)."""


class _Method(nn.Module):
    """``model.<name>`` as a module's forward, so ``functional_call`` can run it."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.m, self.name = model, name

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.m, self.name)(*args)


class Stack:
    """The members' parameters and buffers stacked along a new first dimension, run through
    ``vmap`` (any model; :class:`~al_sim.core.fused.FusedStack` is faster where it applies)."""

    def __init__(self, models: Sequence[ALModel]) -> None:
        if len({type(m) for m in models}) != 1:
            raise LockstepUnsupportedError("lock-step needs members of one model class")
        params, buffers = stack_module_state(list(models))
        self.stacked: Tensors = {f"m.{k}": v.detach().requires_grad_() for k, v in params.items()}
        self.buffers: Tensors = {f"m.{k}": v for k, v in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        self.template = self.base
        self.size = len(models)
        self.params = list(self.stacked.values())

    def call(self, name: str, post: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> Callable[..., torch.Tensor]:
        """``(params, buffers, *inputs) -> output`` of one member's ``model.<name>``, then
        ``post`` (e.g. the task's activation) on it."""
        module = _Method(self.base, name)

        def one(params: Tensors, buffers: Tensors, *args: torch.Tensor) -> torch.Tensor:
            out = functional_call(module, (params, buffers), args)
            return out if post is None else post(out.float())

        return one

    def state(self) -> Tensors:
        return {**self.stacked, **self.buffers}

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s state dict (detached copies)."""
        return {name[2:]: v[k].detach().clone() for name, v in self.state().items()}

    def load_member(self, k: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, v in self.state().items():
                v[k].copy_(state[name[2:]])

    def write_back(self, models: Sequence[ALModel]) -> None:
        """Each member's slice into its own model."""
        for k, model in enumerate(models):
            model.load_state_dict(self.member(k))

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def outputs(self, name: str, xb: torch.Tensor, shared: bool,
                post: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``model.<name>`` of every member, ``K x B x ...``, on one shared batch or each
        member's own (``K x B x ...``)."""
        fn = vmap(self.call(name, post), in_dims=(0, 0, None if shared else 0),
                  randomness="different")
        return fn(self.stacked, self.buffers, xb)

    def losses(self, criterion: Callable[..., torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
               weight: torch.Tensor | None) -> torch.Tensor:
        """Each member's loss on its own batch, ``K``."""
        forward = self.call("forward")

        def member_loss(p: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor,
                        w: torch.Tensor | None) -> torch.Tensor:
            return criterion(forward(p, b, x), y, w)

        return vmap(member_loss, in_dims=(0, 0, 0, 0, None if weight is None else 0),
                    randomness="different")(self.stacked, self.buffers, xb, yb, weight)


AnyStack = Stack | FusedStack


def stack_of(trainer: Trainer, models: Sequence[ALModel], probe: torch.Tensor) -> AnyStack:
    """The members fused (one op per layer for all) when their layers allow it and the fused
    module gives each member's own outputs on ``probe`` (raw images), else vmapped."""
    for model in models:
        model.to(trainer.device)
    try:
        fused = FusedStack(models, trainer._memory_format)
    except UnfusableError:
        return Stack(models)
    x = trainer._inputs(probe)
    xs = torch.stack([x * (k + 1) for k in range(len(models))])  # each member's own input
    with torch.no_grad():
        modes = [m.training for m in models]
        for model in models:
            model.eval()
        fused.train(False)
        want = torch.stack([m(xk).float() for m, xk in zip(models, xs, strict=True)])
        got = fused.outputs("forward", xs, shared=False).float()
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=_PROBE_RTOL,
                                                      atol=_PROBE_ATOL):
        return Stack(models)  # the model's own code mixes members' channels somewhere
    return fused


def fit_lockstep(trainer: Trainer, models: Sequence[ALModel], xs: Sequence[Images],
                 ys: Sequence[np.ndarray], n_classes: int, seeds: Sequence[int]) -> list[FitReport]:
    """Train every member ``k`` on ``xs[k]``, ``ys[k]`` with seed ``seeds[k]`` in lock-step, as
    ``Trainer.fit`` would alone (early stopping on a held-out slice of each labelled set);
    each model gets its trained (best-epoch) weights back. A member whose loss turns
    non-finite stops with a NaN ``train_loss`` in its report; the others go on."""
    conf = trainer.conf
    if conf.precision == "fp16":
        raise LockstepUnsupportedError("lock-step does not scale fp16 losses per member")
    if len({len(y) for y in ys}) != 1:
        raise LockstepUnsupportedError("lock-step members need the same labelled count")
    device, k_all = trainer.device, len(models)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    labels = [torch.as_tensor(y, dtype=trainer._label_dtype).to(device) for y in ys]
    splits = [trainer._split(len(lab), g) for lab, g in zip(labels, gens, strict=True)]
    train_idx = [s[0] for s in splits]
    weights = [trainer._class_weights(lab[t], n_classes)
               for lab, t in zip(labels, train_idx, strict=True)]
    stack = stack_of(trainer, models, xs[0][:2])
    given = [w for w in weights if w is not None]  # all or none: one config for the stack
    w_stack = torch.stack(given) if given else None
    optimiser = torch.optim.AdamW(stack.params, lr=conf.lr, weight_decay=conf.weight_decay)
    per_epoch = math.ceil(len(train_idx[0]) / conf.batch_size)
    epochs = max(conf.epochs, math.ceil(conf.min_steps / per_epoch))
    schedule = None
    if conf.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * per_epoch)
    active = torch.ones(k_all, dtype=torch.bool)
    best: list[tuple[float, dict[str, Any] | None, int]] = [(math.inf, None, 0)] * k_all
    last_epoch, steps = [0] * k_all, [0] * k_all
    loss_sum = [0.0] * k_all
    seen = 0
    with seeded(seeds[0], device):
        for epoch in range(1, epochs + 1):
            if not bool(active.any()):
                break
            stack.train(True)
            batches = [list(trainer._batches(t, g)) for t, g in zip(train_idx, gens, strict=True)]
            sums, seen = torch.zeros(k_all, dtype=torch.float64), 0
            for step_batches in zip(*batches, strict=True):
                xb = torch.stack([trainer._inputs(x[b.to(x.device)], train=True, gen=g)
                                  for x, b, g in zip(xs, step_batches, gens, strict=True)])
                yb = torch.stack([lab[b.to(device)] for lab, b in zip(labels, step_batches,
                                                                      strict=True)])
                frozen = None if bool(active.all()) else {
                    n: v[~active].detach().clone() for n, v in stack.state().items()}
                with autocast(conf, device):
                    losses = stack.losses(trainer._criterion, xb, yb, w_stack)
                optimiser.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimiser.step()
                if schedule is not None:
                    schedule.step()
                if frozen is not None:
                    with torch.no_grad():
                        for n, v in stack.state().items():
                            v[~active] = frozen[n]
                sums += losses.detach().double().cpu() * len(step_batches[0])
                seen += len(step_batches[0])
                for k in range(k_all):
                    steps[k] += int(active[k])
            for k in range(k_all):
                if not active[k]:
                    continue
                last_epoch[k], loss_sum[k] = epoch, float(sums[k])
                if not math.isfinite(loss_sum[k]):
                    active[k] = False  # diverged: the member's own fault, frozen from here
            _early_stop(trainer, stack, xs, labels, splits, weights, active, best, epoch)
    for k, (_loss, state, _epoch) in enumerate(best):
        if state is not None:
            stack.load_member(k, state)
    stack.write_back(models)
    return [FitReport(epochs=last_epoch[k], steps=steps[k], train_loss=loss_sum[k] / max(seen, 1),
                      val_loss=None if splits[k][1] is None else best[k][0])
            for k in range(k_all)]


def _early_stop(trainer: Trainer, stack: AnyStack, xs: Sequence[Images], labels: list[torch.Tensor],
                splits: list[tuple[torch.Tensor, torch.Tensor | None]],
                weights: list[torch.Tensor | None], active: torch.Tensor,
                best: list[tuple[float, dict[str, Any] | None, int]], epoch: int) -> None:
    """Each active member's held-out loss: a better one is kept, patience ran out -> masked."""
    if splits[0][1] is None:
        return
    val_x: list[Images] = [x[v.to(x.device)] for x, (_t, v) in zip(xs, splits, strict=True)
                           if v is not None]
    logits = map_members(trainer, stack, val_x, "forward")
    for k in range(stack.size):
        if not active[k]:
            continue
        val_idx = splits[k][1]
        assert val_idx is not None
        w = weights[k]
        loss = float(trainer._criterion(torch.from_numpy(logits[k]),
                                        labels[k][val_idx.to(labels[k].device)].cpu(),
                                        None if w is None else w.cpu()))
        if loss < best[k][0]:
            best[k] = (loss, stack.member(k), epoch)
        elif epoch - best[k][2] >= (trainer.conf.early_stopping_patience or 0):
            active[k] = False


def map_members(trainer: Trainer, stack: AnyStack, x: Images | list[Images], name: str,
                dropout: bool = False,
                post: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """``model.<name>`` of every member in eval mode, ``K x N x ...``: on one shared ``x`` (the
    pool passed once, preprocessed once) or on each member's own ``x[k]`` (a list)."""
    own = x if isinstance(x, list) else None
    first = x[0] if isinstance(x, list) else x
    stack.train(False)
    if dropout:
        for module in (stack.base if isinstance(stack, Stack) else stack.module).modules():
            if isinstance(module, nn.Dropout):
                module.train()
    size = trainer.eval_batch_size(stack.template, first, members=stack.size)
    outs = []
    try:
        with torch.inference_mode(), autocast(trainer.conf, trainer.device):
            for start in range(0, len(first), size):
                if own is None:
                    xb = trainer._inputs(first[start: start + size])
                else:
                    xb = torch.stack([trainer._inputs(xk[start: start + size]) for xk in own])
                outs.append(stack.outputs(name, xb, shared=own is None, post=post).float())
    finally:
        stack.train(False)
    return torch.cat(outs, dim=1).cpu().numpy()
