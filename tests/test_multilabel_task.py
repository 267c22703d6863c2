"""Multi-label task type: labels, loss, probabilities, metrics, pool, oracle, run-dir tables."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from al_sim.config.data import PreprocessConf
from al_sim.config.schema import BudgetConf, TrainerConf
from al_sim.core.loop import run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.core.pool import LabelPool
from al_sim.core.training import Trainer
from al_sim.data.base import ALDataset
from al_sim.data.synthetic_chest import FINDINGS, load_synthetic_chest
from al_sim.data.transforms import Preprocess
from al_sim.maths.metrics import multilabel_metrics
from al_sim.maths.task import Task, TaskType
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.runtime.errors import ConfigError, DataError
from al_sim.sinks.run_dir import RunDirWriter
from al_sim.strategies.initial import stratified_initial
from al_sim.strategies.uncertainty import Entropy
from al_sim.tracking.contract import TEST_KEYS, primary_metric
from tests.conftest import setup_sink

ML = Task.of("multilabel", ["a", "b", "c"])


@pytest.fixture(scope="module")
def chest() -> ALDataset:
    return load_synthetic_chest(n_pool=300, n_test=150)


def _trainer(task: Task | None) -> Trainer:
    torch.set_num_threads(1)
    conf = TrainerConf(epochs=2, min_steps=4, batch_size=32, eval_batch_size=256)
    return Trainer(conf, Preprocess(PreprocessConf(), channels=1), torch.device("cpu"), task=task)


def _model(seed: int) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(1, len(FINDINGS), widths=[8, 16], hidden=16, dropout=0.3)


def test_the_task_decides_loss_probabilities_shapes_and_primary_metric() -> None:
    single = Task.of(None, ["x", "y", "z"])
    assert single.kind is TaskType.multiclass and Task.of(None, ["x", "y"]).kind == "binary"
    assert (single.loss, single.activation) == ("cross_entropy", "softmax")
    assert (ML.loss, ML.activation) == ("binary_cross_entropy_with_logits", "sigmoid")
    assert single.label_shape(5) == (5,) and ML.label_shape(5) == (5, 3)
    assert ML.primary_metric == primary_metric("multilabel") == "test/auroc"
    assert single.primary_metric == primary_metric("multiclass") == "test/balanced_accuracy"
    logits = np.array([[0.0, 2.0, -50.0]])
    assert ML.probabilities(logits)[0] == pytest.approx([0.5, 1 / (1 + math.exp(-2)), 0.0])
    assert single.probabilities(logits).sum() == pytest.approx(1.0)
    with pytest.raises(DataError, match="unknown task"):
        Task.of("ordinal", ["a", "b"])


def test_labels_are_checked_against_the_task() -> None:
    with pytest.raises(DataError, match="N x 3"):
        ML.check(np.zeros(4), "x: pool", unknown_ok=True)
    with pytest.raises(DataError, match="0 or 1"):
        ML.check(np.array([[0, 2, 1]]), "x: test", unknown_ok=False)
    with pytest.raises(DataError, match="0 or 1"):  # a half-unknown row is no unknown row
        ML.check(np.array([[0, -1, 1]]), "x: pool", unknown_ok=True)
    assert ML.check(np.array([[-1, -1, -1], [0, 1, 1]]), "x: pool", unknown_ok=True).shape == (2, 3)
    with pytest.raises(DataError, match="task=multilabel"):
        Task.of(None, ["a", "b"]).check(np.zeros((2, 2)), "x: pool", unknown_ok=True)


def test_strata_put_each_image_in_its_rarest_finding() -> None:
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 0]])
    assert ML.strata(y).tolist() == [0, 1, 3, 2, 1]  # counts a=3, b=2, c=1; none -> 3


def test_stratified_initial_draws_every_finding(chest: ALDataset) -> None:
    picked = stratified_initial(chest, 10, np.random.default_rng(0))
    assert len(picked) == 10 and (chest.pool_y[picked].sum(axis=0) > 0).all()


def test_multilabel_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.4).astype(int)
    y[:, 2] = 0  # a finding absent from the test labels: no AUROC, left out of the macro
    p = rng.random((60, 3))
    m = multilabel_metrics(y, p, ["a", "b", "c"])
    aurocs = [roc_auc_score(y[:, f], p[:, f]) for f in (0, 1)]
    assert m["auroc"] == pytest.approx(np.mean(aurocs))
    assert m["auroc/a"] == pytest.approx(aurocs[0]) and math.isnan(m["auroc/c"])
    assert m["average_precision"] == pytest.approx(
        np.mean([average_precision_score(y[:, f], p[:, f]) for f in (0, 1)]))
    assert m["f1_macro"] == pytest.approx(
        f1_score(y, (p >= 0.5).astype(int), average="macro", zero_division=0))
    assert m["accuracy"] == pytest.approx(np.mean((y == (p >= 0.5)).all(axis=1)))
    assert set(TEST_KEYS) <= {f"test/{k}" for k in m}  # every sink's columns exist


def test_metric_names_are_mlflow_safe() -> None:
    m = multilabel_metrics(np.array([[0], [1]]), np.array([[0.2], [0.9]]), ["Pleural/Thick?"])
    assert "auroc/Pleural_Thick_" in m


def test_pool_holds_finding_rows_and_round_trips() -> None:
    pool = LabelPool(5, n_findings=3)
    pool.add(np.array([1, 3]), np.array([[1, 0, 1], [0, 0, 0]]), 0)
    assert pool.labels_of(np.array([3, 1])).tolist() == [[0, 0, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="one per index"):
        pool.add(np.array([0]), np.array([1]), 1)
    again = LabelPool.from_state(pool.state())
    assert again.labels_of(np.array([1])).tolist() == [[1, 0, 1]] and again.n_labeled == 2


def test_noisy_oracle_flips_finding_bits_at_the_rate() -> None:
    truth = np.zeros((4000, 3), dtype=np.int64)
    oracle = Oracle(truth, 3, noise_rate=0.1, seed=1, task=ML)
    answers = oracle.query(np.arange(4000))
    assert answers.shape == (4000, 3) and set(np.unique(answers)) == {0, 1}
    assert answers.mean() == pytest.approx(0.1, abs=0.01)
    assert Oracle(truth, 3, task=ML).query(np.arange(5)).tolist() == truth[:5].tolist()


def test_trainer_uses_bce_and_sigmoid_for_multilabel(chest: ALDataset) -> None:
    trainer, model = _trainer(chest.task), _model(0)
    fit = trainer.fit(model, chest.pool_x[:64], chest.pool_y[:64], 4, seed=0)
    assert fit.steps > 0 and math.isfinite(fit.train_loss)
    probs = trainer.predict_proba(model, chest.test_x[:10])
    assert probs.shape == (10, 4) and not np.allclose(probs.sum(axis=1), 1.0)
    logits = trainer.predict_logits(model, chest.test_x[:10])
    assert probs == pytest.approx(chest.task.probabilities(logits), abs=1e-5)
    mc = trainer.mc_proba(model, chest.test_x[:4], samples=3, seed=0)
    assert mc.shape == (4, 3, 4) and ((mc > 0) & (mc < 1)).all()


def test_class_weighted_loss_is_a_per_finding_pos_weight() -> None:
    trainer = Trainer(TrainerConf(class_weighted_loss=True),
                      Preprocess(PreprocessConf(), channels=1), torch.device("cpu"), task=ML)
    y = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=torch.float32)
    assert trainer._class_weights(y, 3).tolist() == pytest.approx([3.0, 1.0, 1 / 3])


def test_loop_refuses_a_single_label_trainer_on_multilabel_data(chest: ALDataset) -> None:
    with pytest.raises(ConfigError, match="multi-label"):
        run_active_learning(chest, _model, Entropy(), Oracle(chest.pool_y, 4, task=chest.task),
                            _trainer(None), BudgetConf(initial=20, query_size=10, rounds=1), 0)


def test_a_multilabel_run_writes_finding_tables(chest: ALDataset, tmp_path) -> None:
    writer = setup_sink(RunDirWriter(grids=False), tmp_path)
    result = run_active_learning(
        chest, _model, Entropy(reduction="max"), Oracle(chest.pool_y, 4, task=chest.task),
        _trainer(chest.task), BudgetConf(initial=20, query_size=10, rounds=1), seed=0,
        callbacks=[writer])
    assert [r.n_labeled for r in result.rounds] == [20, 30]
    assert all(f"test/auroc/{f}" in result.rounds[-1].metrics for f in FINDINGS)
    assert not math.isnan(result.aulc_of("test/auroc"))
    with (tmp_path / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30
    first = rows[0]
    bits = np.array(first["oracle_label"].split("|"), dtype=int)
    assert bits.tolist() == chest.pool_y[int(first["pool_index"])].tolist()
    with (tmp_path / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert header[2:7] == list(TEST_KEYS) and "test/average_precision" in header
    assert "test/auroc/nodule" in header
    with (tmp_path / "labeled_set.csv").open() as f:
        names = [r["class_name"] for r in csv.DictReader(f)]
    assert "No Finding" in names or any("|" in n or n in FINDINGS for n in names)


def test_a_multilabel_run_resumes_from_its_checkpoint_identically(chest: ALDataset,
                                                                   tmp_path) -> None:
    from al_sim.core.events import RunCallback
    from al_sim.sinks.checkpoint import Checkpoint, load, save

    class Keep(RunCallback):
        def on_checkpoint(self, state) -> None:
            if state.round == 0:
                save(tmp_path / "ckpt.pt", Checkpoint(state, False, {}))

    budget = BudgetConf(initial=20, query_size=10, rounds=2)

    def run(**kw):
        return run_active_learning(chest, _model, Entropy(), Oracle(chest.pool_y, 4, 0.1, seed=3,
                                                                    task=chest.task),
                                   _trainer(chest.task), budget, seed=0, **kw)

    whole = run(callbacks=[Keep()])
    resumed = run(resume=load(tmp_path / "ckpt.pt").state)
    assert [q.indices.tolist() for q in resumed.queries] == [
        q.indices.tolist() for q in whole.queries]
    assert resumed.queries[-1].oracle_labels.tolist() == whole.queries[-1].oracle_labels.tolist()
    assert resumed.rounds[-1].metrics == whole.rounds[-1].metrics
