"""The fused layout of a lock-step stack (core/fused.py), in-process on tiny arrays: each
member's outputs and features are its own, ResNet-18's residual blocks included; a layer with
no fused form, or model code that mixes the members' channels, falls back to ``vmap`` (and scores
through it as each member alone)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from al_sim.core.fused import FusedStack
from al_sim.core.lockstep import Stack, fit_lockstep, stack_of
from al_sim.core.scoring import Need, images_source
from al_sim.core.stack_scoring import score_members
from al_sim.models.base import ALModel, DropoutHead
from tests.test_lockstep import C, N, _data, _members, _model, _trainer, scored


def test_simple_cnn_members_fuse_and_score_as_each_alone() -> None:
    trainer = _trainer()
    models, _xs, _ys = _members(3)
    pool = _data(5)[0]
    assert isinstance(stack_of(trainer, models, pool[:2]), FusedStack)
    probs, feats = scored(trainer, models, pool), scored(trainer, models, pool, Need("features"))
    for k, model in enumerate(models):
        np.testing.assert_allclose(probs[k], trainer.predict_proba(model, pool), atol=1e-5)
        np.testing.assert_allclose(feats[k], trainer.embed(model, pool), atol=1e-5)


class _Residual(ALModel):
    """ResNet-18's own residual block (a strided one, with its 1x1 downsample) in a tiny net."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.trunk = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                   nn.ReLU(), BasicBlock(4, 8, stride=2, downsample=down),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = DropoutHead(8, C, 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(z)


def test_residual_blocks_fuse_as_resnet18_uses_them() -> None:
    trainer = _trainer()
    models = [_Residual(i) for i in range(2)]
    pool = _data(6)[0]
    assert isinstance(stack_of(trainer, models, pool[:2]), FusedStack)
    probs = scored(trainer, models, pool)
    for k, model in enumerate(models):
        np.testing.assert_allclose(probs[k], trainer.predict_proba(model, pool), atol=1e-5)


class _MixesChannels(nn.Module):
    """A model whose own code averages over channels (across members, once fused)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.inner = _model(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x - x.mean(dim=1, keepdim=True))


def test_what_cannot_fuse_runs_vmapped_and_still_trains_each_member_as_alone() -> None:
    trainer = _trainer(epochs=1, min_steps=2)
    pool = _data(5)[0]
    odd = [_model(i) for i in range(2)]
    for model in odd:
        model.embed[1] = nn.GELU()  # no fused form known for it
    assert isinstance(stack_of(trainer, odd, pool[:2]), Stack)
    source = images_source(pool, pool, "pool")
    asks = [(np.arange(N), Need("features_and_probs")), (np.arange(5, N), Need("mc", 3, 1))]
    (feats, probs), mc = score_members(trainer, odd, source, asks)  # through the vmapped stack
    alone_f, alone_p = trainer.score(odd[0], source, asks[0][0], asks[0][1])
    np.testing.assert_allclose(feats, alone_f, atol=1e-5)
    np.testing.assert_allclose(probs, alone_p, atol=1e-5)
    np.testing.assert_allclose(mc, trainer.score(odd[1], source, asks[1][0], asks[1][1]),
                               atol=1e-5)
    mixing = [_MixesChannels(i) for i in range(2)]
    assert isinstance(stack_of(trainer, mixing, pool[:2]), Stack)  # caught by the probe
    models, xs, ys = _members(2)
    for model in models:
        model.embed[1] = nn.GELU()
    alone = [_model(i) for i in range(2)]
    for model in alone:
        model.embed[1] = nn.GELU()
    fit_lockstep(trainer, models, xs, ys, C, [1, 2])
    for k in range(2):
        trainer.fit(alone[k], xs[k], ys[k], C, [1, 2][k])
        for a, b in zip(models[k].state_dict().values(), alone[k].state_dict().values(),
                        strict=True):
            assert torch.allclose(a.float(), b.float(), atol=1e-4)
    assert len(pool) == N
