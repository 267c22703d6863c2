"""Model outputs the loop trusts (issue 27): the loop's own model view checks them as
``ArrayModelView`` does, so a diverged model stops the run with one clear error instead
of being scored 0 (entropy, BALD, power sampling) or crashing numpy (core-set, BADGE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from al_sim.core.model_view import TrainedModelView
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.runtime.errors import ConfigError
from al_sim.strategies.base import ModelOutputError, QueryContext
from al_sim.strategies.bayesian import BALD
from al_sim.strategies.diversity import BADGE, CoreSet
from al_sim.strategies.stochastic import PowerEntropy
from al_sim.strategies.typiclust import TypiClust
from al_sim.strategies.uncertainty import Entropy

STRATEGIES = [Entropy(), BALD(mc_samples=3), PowerEntropy(beta=1.0), CoreSet(chunk_size=64),
              BADGE(chunk_size=64), TypiClust(k_neighbors=5, max_clusters=50)]


def diverged_view(dataset, trainer, round_: int = 3) -> TrainedModelView:
    """The loop's view on a real SimpleCNN whose weights went NaN (what a huge lr leaves)."""
    model = SimpleCNN(1, 3, widths=[8], hidden=16, dropout=0.2)
    with torch.no_grad():
        for p in [*model.embed.parameters(), *model.classifier.parameters()]:
            p.fill_(float("nan"))
    rows = lambda idx: dataset.pool_x[torch.from_numpy(np.asarray(idx))]  # noqa: E731
    return TrainedModelView(trainer, model, rows, seed=0, round_=round_)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[s.name for s in STRATEGIES])
def test_a_diverged_model_stops_every_strategy_with_one_clear_error(
        strategy, tiny_dataset, fast_trainer) -> None:
    view = diverged_view(tiny_dataset, fast_trainer)
    ctx = QueryContext(model=view, unlabeled=np.arange(20, 300), labeled=np.arange(20),
                       labeled_y=tiny_dataset.pool_y[:20], n_classes=3,
                       rng=np.random.default_rng(0), round=3)
    with pytest.raises(ModelOutputError, match=r"^round 3: the model's pool .* hold NaN or "
                                               r"infinite values in \d+ of \d+ pool rows .*"
                                               r"diverged model .*trainer.lr") as err:
        strategy.select(ctx, 10)
    assert isinstance(err.value, ConfigError)  # the CLI's one error: line, exit 2, run FAILED


def test_outputs_that_are_not_probabilities_are_refused(tiny_dataset, fast_trainer,
                                                        monkeypatch) -> None:
    view = diverged_view(tiny_dataset, fast_trainer, round_=2)
    monkeypatch.setattr(fast_trainer, "predict_proba",
                        lambda model, x: np.full((len(x), 3), 0.5, dtype=np.float32))
    with pytest.raises(ModelOutputError, match=r"round 2: .* not probabilities .*in 5 of 5 "
                                               "pool rows"):
        view.probs(np.arange(5))


def test_a_sound_model_passes_unchanged(tiny_dataset, fast_trainer) -> None:
    model = SimpleCNN(1, 3, widths=[8], hidden=16, dropout=0.2)
    rows = lambda idx: tiny_dataset.pool_x[torch.from_numpy(np.asarray(idx))]  # noqa: E731
    view = TrainedModelView(fast_trainer, model, rows, seed=0, round_=1)
    idx = np.arange(30)
    np.testing.assert_array_equal(view.probs(idx),
                                  fast_trainer.predict_proba(model, rows(idx)))
