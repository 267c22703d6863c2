"""oracle=panel: simulated annotators' error and cost models, aggregation, config checks."""

from __future__ import annotations

import numpy as np
import pytest

from al_sim.config.annotators import AnnotatorConf, PanelOracleConf
from al_sim.config.registry import validate
from al_sim.core.panel_oracle import PanelOracle, Reader
from al_sim.runtime.errors import ConfigError
from tests.conftest import compose_config

PERFECT = np.eye(2)
ALWAYS_WRONG = np.array([[0.0, 1.0], [1.0, 0.0]])


def reader(name: str, confusion=PERFECT, seconds=(10.0, 10.0)) -> Reader:
    return Reader(name, np.asarray(confusion, dtype=float), np.asarray(seconds, dtype=float))


def test_error_models_become_confusion_matrices():
    uniform = Reader.from_conf(AnnotatorConf(name="a", noise_rate=0.2), 3, "x")
    assert np.allclose(uniform.confusion, [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    per_class = Reader.from_conf(AnnotatorConf(name="b", noise_per_class=[0.0, 0.5]), 2, "x")
    assert np.allclose(per_class.confusion, [[1.0, 0.0], [0.5, 0.5]])
    costed = Reader.from_conf(AnnotatorConf(name="c", seconds_per_class=[5.0, 40.0]), 2, "x")
    assert costed.seconds.tolist() == [5.0, 40.0]
    with pytest.raises(ConfigError, match=r"x.seconds_per_class has 2 values .* 3 classes"):
        Reader.from_conf(AnnotatorConf(name="c", seconds_per_class=[5.0, 40.0]), 3, "x")
    with pytest.raises(ConfigError, match=r"x.confusion must be 3 x 3"):
        Reader.from_conf(AnnotatorConf(name="d", confusion=[[1.0, 0.0], [0.0, 1.0]]), 3, "x")


def test_answers_follow_the_confusion_row_of_the_true_class():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 5000)
    answers = reader("r", [[0.9, 0.1], [0.3, 0.7]]).answer(truth, rng)
    assert (answers[:5000] == 1).mean() == pytest.approx(0.1, abs=0.02)
    assert (answers[5000:] == 0).mean() == pytest.approx(0.3, abs=0.02)


def test_panel_counts_seconds_per_annotator_and_class_cumulatively():
    truth = np.array([0, 1, 1, 0])
    panel = PanelOracle(truth, 2, [reader("a", seconds=(10, 30)), reader("b", seconds=(5, 5))])
    assert panel.seconds_of(np.array([0, 1])) == 10 + 30 + 5 + 5  # known before answering
    panel.query(np.array([0, 1]))
    panel.query(np.array([2]))
    assert panel.round_costs() == {"cost/expert_seconds": 85.0,
                                   "cost/expert_seconds/a": 70.0, "cost/expert_seconds/b": 15.0}
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert panel.expected_seconds(probs).tolist() == [15.0, 25.0]


def test_each_annotator_has_its_own_stream_and_a_seed_repeats_the_answers():
    truth = np.random.default_rng(1).integers(0, 2, 200)
    noisy = [[0.7, 0.3], [0.3, 0.7]]
    a = PanelOracle(truth, 2, [reader("a", noisy), reader("b", noisy)], seed=5)
    b = PanelOracle(truth, 2, [reader("a", noisy), reader("b", noisy)], seed=5)
    idx = np.arange(200)
    assert np.array_equal(a.query(idx), b.query(idx))
    assert not np.array_equal(a._given[:, 0], a._given[:, 1])  # not one stream shared
    third = PanelOracle(truth, 2, [reader("a", noisy), reader("b", noisy), reader("c", noisy)],
                        seed=5)
    third.query(idx)
    assert np.array_equal(third._given[:, :2], a._given)  # a new reader changes no one else's


def test_ties_go_to_the_first_reader_or_to_the_adjudicator_who_is_then_paid():
    truth = np.zeros(6, dtype=np.int64)
    readers = [reader("good"), reader("bad", ALWAYS_WRONG)]
    alone = PanelOracle(truth, 2, readers)
    assert alone.query(np.arange(6)).tolist() == [0] * 6  # first-listed reader wins ties
    assert alone.round_agreement()["agreement/flagged"] == 6
    judged = PanelOracle(truth, 2, [reader("bad", ALWAYS_WRONG), reader("good")],
                         adjudicator=reader("senior", seconds=(60, 60)))
    assert judged.query(np.arange(6)).tolist() == [0] * 6  # the adjudicator's answer wins
    assert judged.round_costs()["cost/expert_seconds/senior"] == 6 * 60


def test_flag_below_sends_split_votes_to_the_adjudicator():
    truth = np.zeros(4, dtype=np.int64)
    readers = [reader("a"), reader("b"), reader("wrong", ALWAYS_WRONG)]  # 2-1 on every image
    split = PanelOracle(truth, 2, readers, adjudicator=reader("senior"), flag_below=0.75)
    assert split.query(np.arange(4)).tolist() == [0] * 4
    assert split.round_agreement()["agreement/flagged"] == 4
    assert split.round_costs()["cost/expert_seconds/senior"] == 40.0
    plain = PanelOracle(truth, 2, readers, adjudicator=reader("senior"))
    plain.query(np.arange(4))
    assert plain.round_costs()["cost/expert_seconds/senior"] == 0.0


def test_dawid_skene_panel_outvotes_an_adversary_that_majority_vote_follows():
    truth = np.random.default_rng(2).integers(0, 2, 300)
    readers = [reader("good", [[0.95, 0.05], [0.05, 0.95]]),
               reader("weak", [[0.7, 0.3], [0.3, 0.7]]), reader("adversary", ALWAYS_WRONG)]
    accuracy = {}
    for method in ("majority", "dawid_skene"):
        panel = PanelOracle(truth, 2, readers, aggregation=method, seed=0)
        labels = np.concatenate([panel.query(np.arange(0, 100)), panel.query(np.arange(100, 300))])
        accuracy[method] = (labels == truth).mean()
        assert set(panel.round_agreement()) == {"agreement/fleiss_kappa",
                                                "agreement/krippendorff_alpha", "agreement/flagged"}
    assert accuracy["dawid_skene"] >= 0.97 and accuracy["majority"] < 0.8


def test_a_restored_panel_answers_as_if_never_interrupted():
    truth = np.random.default_rng(3).integers(0, 2, 100)
    noisy = [[0.8, 0.2], [0.2, 0.8]]
    make = lambda: PanelOracle(truth, 2, [reader("a", noisy), reader("b", noisy)],  # noqa: E731
                               aggregation="dawid_skene", seed=9)
    straight = make()
    straight.query(np.arange(50))
    expected = straight.query(np.arange(50, 100))
    first = make()
    first.query(np.arange(50))
    resumed = make()
    resumed.restore(first.state())
    assert np.array_equal(resumed.query(np.arange(50, 100)), expected)
    assert resumed.round_costs() == straight.round_costs()


def test_panel_yaml_composes_validates_and_builds():
    cfg = compose_config(["oracle=panel"])
    validate(cfg)
    conf = PanelOracleConf(**{k: v for k, v in cfg.oracle.items() if k != "annotators"},
                           annotators=[AnnotatorConf(**a) for a in cfg.oracle.annotators])
    panel = PanelOracle.from_conf(conf, np.zeros(10, dtype=np.int64), 2, seed=0)
    assert [a.name for a in panel.readers] == ["reader_a", "reader_b", "reader_c"]


def test_a_volume_costs_the_volume_factor_times_each_readers_seconds():
    truth = np.array([0, 1, 1])
    conf = PanelOracleConf(annotators=[
        AnnotatorConf(name="a", seconds_per_class=[10.0, 30.0]),
        AnnotatorConf(name="judge", seconds_per_image=60.0)], adjudicator="judge",
        seconds_factor={"image": 1.0, "volume": 4.0})
    images = PanelOracle.from_conf(conf, truth, 2, seed=0)
    volumes = PanelOracle.from_conf(conf, truth, 2, seed=0, volumes=True)
    assert images.seconds_of(np.arange(3)) == 70.0
    assert volumes.seconds_of(np.arange(3)) == 4 * 70.0  # known before answering, as the limit
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert volumes.expected_seconds(probs).tolist() == [40.0, 80.0]  # cost-aware selection
    assert volumes.adjudicator is not None and volumes.adjudicator.seconds.tolist() == [240.0] * 2
    volumes.query(np.arange(3))
    assert volumes.round_costs()["cost/expert_seconds/a"] == 280.0
    default = compose_config(["oracle=panel"]).oracle.seconds_factor
    assert default.image == 1.0 and default.volume > default.image  # a volume costs more


@pytest.mark.parametrize(("overrides", "words"), [
    (["oracle.annotators.0.seconds_per_image=-5"],
     ["oracle.annotators[0].seconds_per_image", "> 0"]),
    (["oracle.annotators.1.seconds_per_image=nan"],
     ["oracle.annotators[1].seconds_per_image", "finite"]),
    (["oracle.annotators.2.seconds_per_class=[10,-1]"],
     ["oracle.annotators[2].seconds_per_class[1]"]),
    (["oracle.adjudicator=dr_who"], ["oracle.adjudicator=dr_who", "reader_a, reader_b"]),
    (["oracle.annotators.1.name=reader_a"], ["reader_a", "twice"]),
    (["oracle.aggregation=mode"], ["oracle.aggregation", "dawid_skene"]),
    (["oracle.annotators.0.noise_per_class=[0.1,0.2]"], ["one error model"]),
    (["oracle.annotators.0.noise_rate=0",
      "oracle.annotators.0.confusion=[[0.5,0.6],[0.0,1.0]]"], ["confusion[0]", "summing to 1"]),
    (["oracle.annotators.0.name=a/b"], ["oracle.annotators[0].name"]),
    (["oracle.flag_below=1.5"], ["oracle.flag_below", "(0, 1]"]),
    (["oracle.flag_below=0"], ["oracle.flag_below", "> 0"]),
    (["budget.cost_limit=100"], ["budget.cost_limit", "oracle=panel"]),
    (["strategy.cost_aware=true"], ["strategy.cost_aware", "oracle=panel"]),
    (["oracle=panel", "budget.cost_limit=-1"], ["budget.cost_limit", "> 0"]),
    (["oracle.seconds_factor.volume=-2"], ["oracle.seconds_factor.volume", "> 0"]),
    (["oracle.seconds_factor.image=nan"], ["oracle.seconds_factor.image", "finite"]),
    (["+oracle.seconds_factor.ct=2"], ["oracle.seconds_factor", "exactly image and volume"]),
])
def test_bad_panel_configs_fail_validation_with_one_named_error(overrides, words):
    base = [] if overrides[0].startswith(("budget", "strategy")) else ["oracle=panel"]
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(base + overrides))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_panel_on_a_volume_dataset_pays_the_volume_factor(tmp_path):
    from al_sim.app.components import build_dataset, build_oracle

    cfg = compose_config(["oracle=panel", "dataset=synthetic_volume", "dataset.n_pool=20",
                          "dataset.n_test=10"])
    validate(cfg)
    panel = build_oracle(cfg, build_dataset(cfg), tmp_path)
    assert isinstance(panel, PanelOracle)
    assert [r.seconds.tolist() for r in panel.readers] == [[30.0 * 3.5] * 2] * 3
