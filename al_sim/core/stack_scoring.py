"""A stack's scoring in one pass: the rows every member asks of one source (the union of their
pool rows, or the whole test set) go once through the members fused side by side (vmapped where
they cannot fuse): all members' embeddings from one trunk pass, their probabilities from one
head pass. A member asking MC-dropout samples draws them from its own embeddings with its own
head, seed and batches, as ``Trainer.mc_proba`` does alone, so its dropout masks are its own
stream. Each member then gets its own rows of what it asked for.

Against a member scored alone the outputs differ in the last bits only (a grouped convolution
and a batched matmul sum in another order than the member's own layers)."""

from __future__ import annotations

from collections.abc import Sequence

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


def score_members(trainer: Trainer, models: Sequence[ALModel], source: Source,
                  asks: Sequence[Ask]) -> list[Output]:
    """Member ``k``'s ``asks[k]`` answered as ``trainer.score`` answers it alone, the rows of
    ``source`` passed once through all members."""
    union = rows_of(source, asks)
    x = source.take(union)
    if len(x) == 0:
        return [trainer.score(m, source, idx, need) for m, (idx, need) in zip(models, asks,
                                                                             strict=True)]
    stack = stack_of(trainer, models, x[:2])
    wants_z = [need.features for _idx, need in asks]
    z, probs = _one_pass(trainer, stack, x, wants_z, any(need.probs for _i, need in asks))
    outs: list[Output] = []
    for k, (idx, need) in enumerate(asks):
        pos = slice(None) if idx is None else (
            np.asarray(idx, dtype=np.int64) if union is None else np.searchsorted(union, idx))
        if need.kind == "probs":
            outs.append(np.ascontiguousarray(probs[k][pos]))
            continue
        zk = z[k][torch.as_tensor(np.arange(len(x))[pos])]
        if need.kind == "mc":
            outs.append(_mc(trainer, models[k], zk, x, need))
        elif need.kind == "features":
            outs.append(zk.float().numpy())
        else:
            outs.append((zk.float().numpy(), np.ascontiguousarray(probs[k][pos])))
    return outs


def _one_pass(trainer: Trainer, stack: AnyStack, x: Images, wants_z: list[bool],
              wants_probs: bool) -> tuple[dict[int, torch.Tensor], np.ndarray]:
    """The embeddings of the members that want them (``k -> N x D``, on the CPU, in the
    trunk's own dtype) and every member's probabilities ``K x N x C`` (empty if unwanted),
    from one pass over ``x`` in eval mode."""
    stack.train(False)
    size = trainer.eval_batch_size(stack.template, x, members=stack.size)
    keep = [k for k, wanted in enumerate(wants_z) if wanted]
    zs: list[torch.Tensor] = []
    ps: list[torch.Tensor] = []
    with torch.inference_mode(), autocast(trainer.conf, trainer.device):
        for start in range(0, len(x), size):
            z = stack.outputs("features", trainer._inputs(x[start: start + size]), shared=True)
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
