"""The loop's pause for an expert, run directly: the pending selection is what gets labelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from al_sim.config.schema import BudgetConf
from al_sim.core.events import LabelsPending, LoopState, RunCallback
from al_sim.core.loop import run_active_learning
from al_sim.label.batch import Answer, Batch
from al_sim.label.human_oracle import HumanOracle
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.strategies.random import RandomSampling
from al_sim.strategies.uncertainty import Entropy

BUDGET = BudgetConf(name="t", initial=12, query_size=6, rounds=1)


class LastState(RunCallback):
    def __init__(self) -> None:
        self.state: LoopState | None = None

    def on_checkpoint(self, state: LoopState) -> None:
        self.state = state


def factory(seed: int) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(1, 3, widths=[8, 16], hidden=16, dropout=0.3)


def answer_all(batch_path, dataset) -> None:
    """The truth as the expert's answers."""
    batch = Batch.load(batch_path)
    batch.write_answers({i.image: Answer(dataset.class_names[dataset.pool_y[i.pool_index]],
                                         "test", "now") for i in batch.items})


def test_a_resumed_run_labels_exactly_the_pending_selection(tiny_dataset, fast_trainer,
                                                            tmp_path) -> None:
    sink = LastState()

    def run(strategy, resume=None):
        oracle = HumanOracle(tmp_path, tiny_dataset, view_size=56)
        return run_active_learning(tiny_dataset, factory, strategy, oracle, fast_trainer,
                                   BUDGET, seed=0, callbacks=[sink], resume=resume)

    with pytest.raises(LabelsPending) as paused:  # round 0: the initial set, no model yet
        run(Entropy())
    assert paused.value.round == 0 and paused.value.missing == 12 and not paused.value.partial
    assert sink.state.round == -1 and sink.state.model_state == {}
    answer_all(paused.value.batch_dir, tiny_dataset)

    with pytest.raises(LabelsPending) as paused:
        run(Entropy(), resume=sink.state)
    assert paused.value.round == 1 and sink.state.round == 0
    pending = sink.state.pending.indices.copy()
    assert sink.state.pending.round == 1 and len(pending) == 6

    with pytest.raises(LabelsPending) as refused:  # nothing labelled yet: still waiting
        run(Entropy(), resume=sink.state)
    assert refused.value.partial and refused.value.missing == 6

    answer_all(paused.value.batch_dir, tiny_dataset)
    # Even a strategy that would pick other images labels the batch the expert saw.
    result = run(RandomSampling(), resume=sink.state)
    assert np.array_equal(result.queries[-1].indices, pending)
    assert [r.n_labeled for r in result.rounds] == [12, 18]
    assert np.array_equal(result.queries[-1].oracle_labels, tiny_dataset.pool_y[pending])
