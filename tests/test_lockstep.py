"""Lock-step training and scoring of a stack's members (core/lockstep.py,
core/stack_scoring.py), in-process on tiny arrays: per-member equality with the member trained
and scored alone, the same bits twice, BatchNorm statistics per member, early stopping and
divergence as a member's mask, the pool once for what each member asks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.lockstep import LockstepUnsupportedError, fit_lockstep
from al_sim.core.scoring import PROBS, Need, images_source
from al_sim.core.stack_scoring import score_members
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.models.simple_cnn import SimpleCNN

N, PX, C = 40, 12, 3


def _trainer(**conf: object) -> Trainer:
    settings: dict[str, object] = {"epochs": 2, "min_steps": 4, "batch_size": 16,
                                   "eval_batch_size": 64, "deterministic": True, **conf}
    return Trainer(TrainerConf(**settings), Preprocess(PreprocessConf(), channels=1),  # type: ignore[arg-type]
                   torch.device("cpu"))


def _model(seed: int, dropout: float = 0.0) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(1, C, widths=[4, 8], hidden=8, dropout=dropout)


def _data(seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 256, (N, 1, PX, PX), dtype=np.uint8))
    return x, rng.integers(0, C, N)


def _members(k: int, dropout: float = 0.0
             ) -> tuple[list[SimpleCNN], list[torch.Tensor], list[np.ndarray]]:
    data = [_data(100 + i) for i in range(k)]
    return [_model(i, dropout) for i in range(k)], [d[0] for d in data], [d[1] for d in data]


def test_each_member_trains_as_it_would_alone_buffers_included() -> None:
    trainer = _trainer()
    models, xs, ys = _members(3)
    alone = [_model(i) for i in range(3)]
    reports = fit_lockstep(trainer, models, xs, ys, C, [7, 8, 9])
    for k in range(3):
        solo = trainer.fit(alone[k], xs[k], ys[k], C, [7, 8, 9][k])
        assert (reports[k].epochs, reports[k].steps) == (solo.epochs, solo.steps)
        assert reports[k].train_loss == pytest.approx(solo.train_loss, rel=1e-4)
        for (name, a), b in zip(models[k].state_dict().items(), alone[k].state_dict().values(),
                                strict=True):
            assert torch.allclose(a.float(), b.float(), atol=1e-4), name  # BN stats too
    means = [[v for n, v in m.state_dict().items() if n.endswith("running_mean")]
             for m in models[:2]]
    assert means[0] and not torch.equal(means[0][0], means[1][0])


def test_the_same_stack_gives_the_same_bits() -> None:
    runs = []
    for _ in range(2):
        models, xs, ys = _members(2, dropout=0.3)
        fit_lockstep(_trainer(), models, xs, ys, C, [1, 2])
        runs.append([m.state_dict() for m in models])
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_early_stopping_masks_a_finished_member_and_the_stack_goes_on() -> None:
    trainer = _trainer(epochs=6, early_stopping_patience=1, early_stopping_fraction=0.25)
    models, xs, ys = _members(3)
    alone = [_model(i) for i in range(3)]
    reports = fit_lockstep(trainer, models, xs, ys, C, [3, 4, 5])
    solos = [trainer.fit(alone[k], xs[k], ys[k], C, [3, 4, 5][k]) for k in range(3)]
    assert [r.epochs for r in reports] == [s.epochs for s in solos]
    assert [r.steps for r in reports] == [s.steps for s in solos]
    for r, s in zip(reports, solos, strict=True):
        assert r.val_loss == pytest.approx(s.val_loss, rel=1e-4)


def test_a_diverging_member_is_its_own_fault() -> None:
    models, xs, ys = _members(2)
    with torch.no_grad():
        models[1].classifier.linear.weight.fill_(math.nan)
    reports = fit_lockstep(_trainer(), models, xs, ys, C, [1, 2])
    assert math.isfinite(reports[0].train_loss) and not math.isfinite(reports[1].train_loss)
    assert all(torch.isfinite(v).all() for v in models[0].state_dict().values())
    alone = _model(0)
    _trainer().fit(alone, xs[0], ys[0], C, 1)
    assert torch.allclose(alone.classifier.linear.weight, models[0].classifier.linear.weight,
                          atol=1e-4)


def test_members_with_different_labelled_counts_are_not_lock_stepped() -> None:
    models, xs, ys = _members(2)
    with pytest.raises(LockstepUnsupportedError):
        fit_lockstep(_trainer(), models, [xs[0], xs[1][:30]], [ys[0], ys[1][:30]], C, [1, 2])


def scored(trainer: Trainer, models: list, pool: torch.Tensor, need: Need = PROBS) -> list:
    """Every member's ``need`` on the whole ``pool``, passed once through all of them."""
    source = images_source(pool, pool, "pool")
    return score_members(trainer, models, source, [(None, need)] * len(models))


def test_one_pass_answers_what_each_member_asks_as_it_would_alone() -> None:
    trainer = _trainer()
    models, _xs, _ys = _members(3, dropout=0.3)
    pool = _data(5)[0]
    source = images_source(pool, pool, "pool")
    rows = [np.arange(0, 30), np.arange(10, 40, 2), np.array([39, 3, 17, 0])]  # own rows, any order
    asks = [(rows[0], PROBS), (rows[1], Need("mc", 4, 7)), (rows[2], Need("features_and_probs"))]
    probs, mc, (feats, probs2) = score_members(trainer, models, source, asks)
    np.testing.assert_allclose(probs, trainer.score(models[0], source, rows[0], PROBS), atol=1e-5)
    alone_mc = trainer.score(models[1], source, rows[1], Need("mc", 4, 7))
    assert mc.shape == alone_mc.shape == (15, 4, C)
    np.testing.assert_allclose(mc, alone_mc, atol=1e-5)  # the member's own dropout masks
    assert not np.allclose(mc[:, 0], mc[:, 1])  # draws differ
    alone_f, alone_p = trainer.score(models[2], source, rows[2], Need("features_and_probs"))
    np.testing.assert_allclose(feats, alone_f, atol=1e-5)
    np.testing.assert_allclose(probs2, alone_p, atol=1e-5)
    again = score_members(trainer, models, source, asks)  # the same stack: the same bits
    assert np.array_equal(again[0], probs) and np.array_equal(again[1], mc)
    # as many rows each (e.g. disjoint stop-signal subsets): each member's own side by side
    side = [(np.arange(0, 12), PROBS), (np.arange(30, 18, -1), Need("mc", 4, 7)),
            (np.arange(26, 38), Need("features"))]
    for (idx, need), model, out in zip(side, models, score_members(trainer, models, source,
                                                                    side), strict=True):
        np.testing.assert_allclose(out, trainer.score(model, source, idx, need), atol=1e-5)
    whole = scored(trainer, models, pool)  # e.g. the test set: every row
    for k, model in enumerate(models):
        np.testing.assert_allclose(whole[k], trainer.predict_proba(model, pool), atol=1e-5)
