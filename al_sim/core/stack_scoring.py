"""A stack's scoring in one pass: the rows every member asks of one source go once through the
members fused side by side (vmapped where they cannot fuse): each member's own rows side by side
when all ask as many (the strategies' unlabelled rows in a lock-step round, the stop-signal
subsets), else the rows' union (or the whole test set) shared by all; all members' embeddings
from one trunk pass, their probabilities from one head pass. A member asking MC-dropout
samples draws them from its own embeddings with its own head, seed and batches, as
``Trainer.mc_proba`` does alone, so its dropout masks are its own stream. Each member then
gets its own rows of what it asked for.

Against a member scored alone the outputs differ in the last bits only (a grouped convolution
and a batched matmul sum in another order than the member's own layers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from al_sim.core.device import autocast, seeded
from al_sim.core.lockstep import AnyStack, stack_of
from al_sim.core.scoring import Need, Output, Source
from al_sim.core.training import Trainer
from al_sim.data.base import Images
from al_sim.models.base import ALModel

Ask = tuple[np.ndarray | None, Need]  # a member's rows of the source (None: all) and its need


def rows_of(source: Source, asks: Sequence[Ask]) -> np.ndarray | None:
    """The sorted union of the rows asked (None: the whole source, which someone asked)."""
    if any(idx is None for idx, _need in asks):
        return None
    return np.unique(np.concatenate([np.asarray(idx, dtype=np.int64).ravel()
                                     for idx, _need in asks]))


def side_by_side(asks: Sequence[Ask]) -> bool:
    """Whether each member's own rows go through the stack side by side (all ask as many
    rows: a fused batch then holds each member's next rows, nothing computed that no member
    asked, e.g. disjoint stop-signal subsets); else the union of the rows is shared."""
    return all(idx is not None for idx, _need in asks) and len(
        {len(idx) for idx, _need in asks if idx is not None}) == 1


def describe(source: Source, asks: Sequence[Ask]) -> str:
    """The rows of a joint pass in words (for its stderr line)."""
    first = asks[0][0] if asks else None
    if side_by_side(asks) and first is not None:
        return f"{len(first)} {source.key[1]} rows each"
    union = rows_of(source, asks)
    return f"{source.size if union is None else len(union)} {source.key[1]} rows"


def score_members(trainer: Trainer, models: Sequence[ALModel], source: Source,
                  asks: Sequence[Ask]) -> list[Output]:
    """Member ``k``'s ``asks[k]`` answered as ``trainer.score`` answers it alone, the rows of
    ``source`` passed once through all members: each member's own rows side by side when all
    ask as many, else the union of the rows shared by all."""
    own = side_by_side(asks)
    union = None if own else rows_of(source, asks)
    xs = [source.rows(np.asarray(idx)) for idx, _need in asks] if own else []  # lazy rows
    first: Images = xs[0] if own else source.take(union)
    n = len(first)
    if n == 0:
        return [trainer.score(m, source, idx, need) for m, (idx, need) in zip(models, asks,
                                                                             strict=True)]
    probe = first[:2]

    def batch(start: int, stop: int) -> tuple[torch.Tensor, bool]:
        if own:
            return torch.stack([trainer._inputs(xk[start:stop]) for xk in xs]), False
        return trainer._inputs(first[start:stop]), True

    stack = stack_of(trainer, models, probe)
    wants_z = [need.features for _idx, need in asks]
    z, probs = _one_pass(trainer, stack, probe, n, batch, wants_z,
                         any(need.probs for _i, need in asks))
    outs: list[Output] = []
    for k, (idx, need) in enumerate(asks):
        pos: Any = slice(None) if own or idx is None else (
            np.asarray(idx, dtype=np.int64) if union is None else np.searchsorted(union, idx))
        if need.kind == "probs":
            outs.append(np.ascontiguousarray(probs[k][pos]))
            continue
        zk = z[k][torch.as_tensor(np.arange(n)[pos])]
        if need.kind == "mc":
            outs.append(_mc(trainer, models[k], zk, probe, need))
        elif need.kind == "features":
            outs.append(zk.float().numpy())
        else:
            outs.append((zk.float().numpy(), np.ascontiguousarray(probs[k][pos])))
    return outs


def _one_pass(trainer: Trainer, stack: AnyStack, probe: Images, n: int,
              batch: Callable[[int, int], tuple[torch.Tensor, bool]], wants_z: list[bool],
              wants_probs: bool) -> tuple[dict[int, torch.Tensor], np.ndarray]:
    """The embeddings of the members that want them (``k -> n x D``, on the CPU, in the
    trunk's own dtype) and every member's probabilities ``K x n x C`` (empty if unwanted),
    from one pass over ``n`` rows (``batch(start, stop)``: the model inputs, shared or not)
    in eval mode."""
    stack.train(False)
    size = trainer.eval_batch_size(stack.template, probe, members=stack.size)
    keep = [k for k, wanted in enumerate(wants_z) if wanted]
    zs: list[torch.Tensor] = []
    ps: list[torch.Tensor] = []
    with torch.inference_mode(), autocast(trainer.conf, trainer.device):
        for start in range(0, n, size):
            xb, shared = batch(start, start + size)
            z = stack.outputs("features", xb, shared=shared)
            if wants_probs:
                ps.append(stack.outputs("head", z, shared=False,
                                        post=trainer._activate).float().cpu())
            if keep:
                zs.append(z[keep].cpu())
    kept = torch.cat(zs, dim=1) if keep else None
    z_of = {} if kept is None else {k: kept[j] for j, k in enumerate(keep)}
    return z_of, (torch.cat(ps, dim=1).numpy() if wants_probs else np.empty(0))


def _mc(trainer: Trainer, model: ALModel, z: torch.Tensor, x: Images, need: Need) -> np.ndarray:
    """``need.samples`` dropout-head draws on the member's own embeddings ``z``, seeded and
    batched as ``Trainer.mc_proba`` draws them alone (same masks for the same embeddings)."""
    size = trainer.eval_batch_size(model, x)  # alone's batches over the member's own rows
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    outs = []
    try:
        with seeded(need.seed, trainer.device), torch.inference_mode(), \
                autocast(trainer.conf, trainer.device):
            for start in range(0, len(z), size):
                zb = z[start: start + size].to(trainer.device)
                outs.append(torch.stack([trainer._activate(model.head(zb).float())
                                         for _ in range(need.samples)], 1).float())
    finally:
        model.eval()
    if not outs:
        return np.empty((0, need.samples, model.n_classes), dtype=np.float32)
    return torch.cat(outs).cpu().numpy()
