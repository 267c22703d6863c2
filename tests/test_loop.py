"""The AL loop run directly (no Hydra, no MLflow) on a tiny synthetic dataset."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from al_sim.config.schema import BudgetConf
from al_sim.core.events import RunCallback
from al_sim.core.loop import run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.maths.sampling import stratified_sample
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.runtime.errors import BudgetError, ConfigError
from al_sim.sinks.run_dir import RunDirWriter
from al_sim.strategies.random import RandomSampling
from al_sim.strategies.uncertainty import Entropy, Margin
from tests.conftest import setup_sink

BUDGET = BudgetConf(name="t", initial=20, query_size=10, rounds=2)


class Recorder(RunCallback):
    def __init__(self) -> None:
        self.queries, self.rounds, self.ended = [], [], False

    def on_query(self, record, dataset) -> None:
        self.queries.append(record)

    def on_round_end(self, result) -> None:
        self.rounds.append(result)

    def on_run_end(self, result) -> None:
        self.ended = True


class Factory:
    """Builds SimpleCNNs and remembers the weights each one started from."""

    def __init__(self) -> None:
        self.initial_states: list[dict[str, torch.Tensor]] = []

    def __call__(self, seed: int) -> SimpleCNN:
        torch.manual_seed(seed)
        model = SimpleCNN(1, 3, widths=[8, 16], hidden=16, dropout=0.3)
        self.initial_states.append({k: v.clone() for k, v in model.state_dict().items()})
        return model


def run(dataset, trainer, strategy, seed=0, budget=BUDGET, callbacks=(), factory=None):
    return run_active_learning(dataset, factory or Factory(), strategy,
                               Oracle(dataset.pool_y, dataset.n_classes), trainer, budget,
                               seed, callbacks)


def test_rounds_grow_the_labelled_set_by_query_size(tiny_dataset, fast_trainer) -> None:
    rec = Recorder()
    result = run(tiny_dataset, fast_trainer, Entropy(), callbacks=[rec])
    assert [r.n_labeled for r in result.rounds] == [20, 30, 40]
    assert [len(q.indices) for q in result.queries] == [20, 10, 10]
    picked = np.concatenate([q.indices for q in result.queries])
    assert len(np.unique(picked)) == 40
    assert result.n_annotated == 40
    assert len(rec.rounds) == 3 and rec.ended
    assert set(result.rounds[0].metrics) == {f"test/{m}" for m in
                                            ("accuracy", "f1_macro", "balanced_accuracy",
                                             "auroc", "loss")}
    assert 0.0 <= result.aulc <= 1.0


def test_same_seed_same_selections_and_metrics(tiny_dataset, fast_trainer) -> None:
    a = run(tiny_dataset, fast_trainer, Margin(), seed=5)
    b = run(tiny_dataset, fast_trainer, Margin(), seed=5)
    for qa, qb in zip(a.queries, b.queries, strict=True):
        assert qa.indices.tolist() == qb.indices.tolist()
        np.testing.assert_array_equal(qa.scores, qb.scores)
    assert [r.metrics for r in a.rounds] == [r.metrics for r in b.rounds]


def test_strategies_share_initial_set_and_initial_weights(tiny_dataset, fast_trainer) -> None:
    fa, fb = Factory(), Factory()
    a = run(tiny_dataset, fast_trainer, Entropy(), seed=1, factory=fa)
    b = run(tiny_dataset, fast_trainer, RandomSampling(), seed=1, factory=fb)
    assert a.queries[0].indices.tolist() == b.queries[0].indices.tolist()
    assert a.rounds[0].metrics == b.rounds[0].metrics  # same data, weights, training order
    for state in fa.initial_states + fb.initial_states:  # every round restarts alike
        for key, value in fa.initial_states[0].items():
            assert torch.equal(state[key], value)
    c = run(tiny_dataset, fast_trainer, Entropy(), seed=2)
    assert c.queries[0].indices.tolist() != a.queries[0].indices.tolist()


def test_warm_start_keeps_one_model(tiny_dataset, fast_trainer) -> None:
    factory = Factory()
    warm = replace(fast_trainer.conf, reinit_each_round=False)
    trainer = type(fast_trainer)(warm, fast_trainer.preprocess, fast_trainer.device)
    run(tiny_dataset, trainer, Entropy(), factory=factory)
    assert len(factory.initial_states) == 1


def test_budget_larger_than_pool_fails_before_training(tiny_dataset, fast_trainer) -> None:
    factory = Factory()
    big = BudgetConf(name="big", initial=100, query_size=100, rounds=5)
    with pytest.raises(BudgetError, match="pool has only 300"):
        run(tiny_dataset, fast_trainer, Entropy(), budget=big, factory=factory)
    assert factory.initial_states == []
    # an initial set larger than the pool: no count of rounds would fit, so none is offered
    too_many = BudgetConf(name="big", initial=301, query_size=10, rounds=2)
    with pytest.raises(BudgetError, match=r"^budget.initial=301 is more than the pool's 300 "
                                          r"images; set budget.initial below 300"):
        run(tiny_dataset, fast_trainer, Entropy(), budget=too_many, factory=factory)


def test_full_budget_trains_once_on_the_whole_pool(tiny_dataset, fast_trainer) -> None:
    result = run(tiny_dataset, fast_trainer, Entropy(), budget=BudgetConf(name="full", full=True))
    assert [r.n_labeled for r in result.rounds] == [tiny_dataset.n_pool]


def test_a_crash_keeps_the_rounds_already_done(tiny_dataset, fast_trainer, tmp_path) -> None:
    class Crash(RunCallback):
        def on_round_end(self, result) -> None:
            if result.round == 1:
                raise RuntimeError("boom")

    writer = setup_sink(RunDirWriter(grids=False), tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        run(tiny_dataset, fast_trainer, Entropy(), callbacks=[writer, Crash()])
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["n_labeled"]) for r in rows] == [20, 30]
    with (tmp_path / "queries.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 30


def test_stratified_initial_set_keeps_class_shares() -> None:
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    picked = stratified_sample(y, 20, np.random.default_rng(0))
    assert np.bincount(y[picked]).tolist() == [12, 6, 2]
    few = stratified_sample(y, 3, np.random.default_rng(0))
    assert sorted(y[few].tolist()) == [0, 1, 2]  # every class once when k allows


class IndexSpy(SimpleCNN):
    """Images whose pixels equal their index: records the indices train and eval passes see."""

    def __init__(self) -> None:
        super().__init__(1, 2, widths=[4], hidden=8, dropout=0.0)
        self.trained: set[int] = set()
        self.evaluated: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.round((x[:, 0, 0, 0] * 0.5 + 0.5) * 255).long().tolist()
        (self.trained if self.training else self.evaluated).update(ids)
        return super().forward(x)


def indexed_images(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()


def test_early_stopping_holds_out_a_slice_of_the_labelled_set(fast_trainer) -> None:
    conf = replace(fast_trainer.conf, early_stopping_patience=2, early_stopping_fraction=0.25,
                   epochs=3, min_steps=0)
    trainer = type(fast_trainer)(conf, fast_trainer.preprocess, fast_trainer.device)
    model = IndexSpy()
    report = trainer.fit(model, indexed_images(40), np.arange(40) % 2, 2, seed=0)
    assert report.val_loss is not None
    assert len(model.evaluated) == 10 and not model.trained & model.evaluated
    assert model.trained | model.evaluated == set(range(40))


def test_early_stopping_stops_and_restores_the_best_weights(fast_trainer) -> None:
    conf = replace(fast_trainer.conf, early_stopping_patience=1, epochs=30, min_steps=0,
                   lr=0.01, early_stopping_source="val")
    trainer = type(fast_trainer)(conf, fast_trainer.preprocess, fast_trainer.device)
    x = indexed_images(64)
    y = (np.arange(64) >= 32).astype(np.int64)
    # a validation set labelled the other way round: its loss rises as training fits
    val = (x, 1 - y)
    torch.manual_seed(0)
    model = SimpleCNN(1, 2, widths=[8], hidden=8, dropout=0.0)
    report = trainer.fit(model, x, y, 2, seed=0, val=val)
    assert report.epochs < conf.epochs  # stopped early
    last = trainer._loss(model, *map(torch.as_tensor, val), None)
    assert last == pytest.approx(report.val_loss)  # the weights kept are the best epoch's


def test_early_stopping_on_the_val_split_needs_one(tiny_dataset, fast_trainer) -> None:
    conf = replace(fast_trainer.conf, early_stopping_patience=1, epochs=6,
                   early_stopping_source="val")
    trainer = type(fast_trainer)(conf, fast_trainer.preprocess, fast_trainer.device)
    with pytest.raises(ConfigError, match="no validation split"):
        run(tiny_dataset, trainer, Entropy())


def test_checkpoints_written_in_the_background_hold_every_round(tiny_dataset, fast_trainer,
                                                                 tmp_path) -> None:
    from al_sim.core.events import CallbackList
    from al_sim.sinks.checkpoint import CHECKPOINT_FILE, Checkpointer, load

    class Reader(RunCallback):  # after each round's checkpoint: the one before is on disk
        def __init__(self) -> None:
            self.on_disk: list[int] = []

        def on_checkpoint(self, state) -> None:
            path = tmp_path / CHECKPOINT_FILE
            self.on_disk.append(load(path).state.round if path.exists() else -1)

    sink, reader = setup_sink(Checkpointer(), tmp_path), Reader()
    hooks = CallbackList([sink, reader])
    result = run(tiny_dataset, fast_trainer, Entropy(), callbacks=hooks)
    hooks.close(None)
    assert reader.on_disk[0] in (-1, 0) and all(r >= i - 1 for i, r in enumerate(reader.on_disk))
    final = load(tmp_path / CHECKPOINT_FILE)
    assert final.finished and final.state.round == 2
    assert [q.indices.tolist() for q in final.state.result.queries] == \
        [q.indices.tolist() for q in result.queries]


def test_a_checkpoint_that_cannot_be_written_fails_the_run(tiny_dataset, fast_trainer, tmp_path,
                                                           monkeypatch) -> None:
    import errno

    from al_sim.core.events import CallbackList
    from al_sim.runtime import files
    from al_sim.sinks import checkpoint

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    recorder = Recorder()
    hooks = CallbackList([setup_sink(checkpoint.Checkpointer(), tmp_path), recorder])
    with pytest.raises(OSError, match="No space left") as err:
        run(tiny_dataset, fast_trainer, Entropy(), callbacks=hooks)
    assert not recorder.ended  # never reported as a finished run
    assert not (tmp_path / checkpoint.CHECKPOINT_FILE).exists()
    # the system names no file for a failed write: the user's line does, and the fix
    assert err.value.filename == str(tmp_path / checkpoint.CHECKPOINT_FILE)
    from al_sim.run import error_line

    assert error_line(err.value) == (
        f"error: No space left on device: {tmp_path / checkpoint.CHECKPOINT_FILE}; free space "
        "on that disk, or set hydra.run.dir / hydra.sweep.dir (outputs) or tracking.uri "
        "(the store) on another one")
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left behind
