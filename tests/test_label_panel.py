"""oracle=human with named annotators, in-process: the page per token, the adjudication list,
the outcome (aggregate, agreement, seconds), imports and bad input that changes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from al_sim.label.batch import Item, batch_dir, write_batch
from al_sim.label.human_oracle import view_png
from al_sim.label.importer import import_labels
from al_sim.label.panel import Panel, assign
from al_sim.label.panel_book import PanelBook
from al_sim.label.panel_outcome import ADJUDICATION_FILE
from al_sim.label.web import create_app
from al_sim.runtime.errors import LabelError

CLASSES = ["benign", "malignant"]
TOKENS = {"alice": "t-alice", "bob": "t-bob", "carol": "t-carol"}


def panel_batch(run_dir: Path, n: int = 4, adjudicator: str | None = "carol"):
    rng = np.random.default_rng(0)
    items = [Item(f"{i:07d}.png", i, f"p{i:03d}.png", "benign", 0.6) for i in range(n)]
    pngs = [view_png(rng.integers(0, 255, (1, 8, 8), dtype=np.uint8), 16) for _ in items]
    panel = Panel(["alice", "bob"], 2, "majority", adjudicator, None, 120.0,
                  assign([i.image for i in items], ["alice", "bob"], 2, 1))
    return write_batch(batch_dir(run_dir, 1), 1, CLASSES, items, pngs, False, panel)


def call(client, who: str, path: str, body: dict | None = None):
    headers = {"X-Token": TOKENS[who]}
    reply = client.get(path, headers=headers) if body is None else client.post(
        path, json=body, headers=headers)
    return reply.status_code, reply.get_json()


def test_assignment_gives_each_image_k_distinct_readers_in_turn() -> None:
    got = assign([f"i{k}" for k in range(6)], ["a", "b", "c"], 2, 0)
    assert all(len(set(r)) == 2 for r in got.values())
    load = [sum(name in r for r in got.values()) for name in "abc"]
    assert load == [4, 4, 4]


def test_two_readers_and_an_adjudicator_through_their_own_tokens(tmp_path: Path) -> None:
    batch = panel_batch(tmp_path / "run")
    client = create_app(batch, tmp_path / "run", TOKENS).test_client()
    images = batch.images
    for k, image in enumerate(images):  # they disagree on images 2 and 3
        assert call(client, "alice", "/api/label", {"image": image, "label": "benign"})[0] == 200
        _, bob_view = call(client, "bob", "/api/batch")
        assert all(e["label"] is None or e["image"] in images[:k] for e in bob_view["images"])
        assert "answers" not in bob_view["images"][0]  # a reader never sees another's answers
        if k < 3:
            _, judge = call(client, "carol", "/api/batch")
            assert judge["images"] == [] and "waiting for the readers" in judge["waiting"]
        bob = "benign" if k < 2 else "malignant"
        assert call(client, "bob", "/api/label", {"image": image, "label": bob})[0] == 200
    _, alice = call(client, "alice", "/api/batch")
    assert [e["label"] for e in alice["images"]] == ["benign"] * 4  # only her own answers
    with (batch.dir / ADJUDICATION_FILE).open() as f:
        listed = list(csv.DictReader(f))
    assert [r["image"] for r in listed] == images[2:]
    assert listed[0]["answers"] == "benign by alice; malignant by bob"
    _, judge = call(client, "carol", "/api/batch")
    assert [e["image"] for e in judge["images"]] == images[2:]
    assert judge["images"][0]["answers"] == "benign by alice; malignant by bob"
    before = batch.answers_path.read_bytes()
    status, reply = call(client, "carol", "/api/label", {"image": images[0], "label": "benign"})
    assert status == 400 and "not flagged" in reply["error"]
    assert batch.answers_path.read_bytes() == before  # nothing lost, nothing added
    status, reply = call(client, "alice", "/api/done", {})
    assert status == 200 and reply["complete"] is False
    for image in images[2:]:
        assert call(client, "carol", "/api/label", {"image": image, "label": "malignant"})[0] \
            == 200
    assert call(client, "bob", "/api/done", {})[1]["complete"] is False  # carol is not done
    status, reply = call(client, "carol", "/api/done", {})
    assert status == 200 and reply["complete"] is True  # everyone pressed done
    rows, result = PanelBook(batch, tmp_path / "run").state()
    assert len(rows) == 10  # 4 + 4 readers' answers + 2 rulings, every one kept
    assert result.complete and result.labels.tolist() == [0, 0, 1, 1]
    assert set(result.agreement) == {"cohen_kappa", "krippendorff_alpha"}
    assert result.agreement["cohen_kappa"] == pytest.approx(0.0)  # 2 of 4 agree, by chance
    assert set(result.seconds) == {"alice", "bob", "carol"}
    assert all(0 <= s <= 120.0 * 4 for s in result.seconds.values())


def test_bad_answers_are_one_line_each_and_leave_answers_csv_alone(tmp_path: Path) -> None:
    batch = panel_batch(tmp_path / "run")
    book = PanelBook(batch, tmp_path / "run")
    book.record([(image, who, "malignant" if (k, who) == (3, "bob") else "benign")
                 for k, image in enumerate(batch.images) for who in ("alice", "bob")])
    before = batch.answers_path.read_bytes()
    export = tmp_path / "export.csv"
    cases = {
        "twice": (f"file,label,annotator\n{batch.images[1]},malignant,bob\n", "bob answered"),
        "unknown": (f"file,label,annotator\n{batch.images[1]},benign,mallory\n",
                    "unknown annotator 'mallory'"),
        "not flagged": (f"file,label,annotator\n{batch.images[0]},benign,carol\n",
                        "which was not flagged"),
    }
    for text, expected in cases.values():
        export.write_text(text)
        with pytest.raises(LabelError) as err:
            import_labels(export, batch, "nobody")
        assert expected in str(err.value) and "\n" not in str(err.value)
        assert batch.answers_path.read_bytes() == before


def test_label_studio_export_with_two_annotations_per_task_keeps_both(tmp_path: Path) -> None:
    batch = panel_batch(tmp_path / "run", adjudicator=None)

    def annotation(who: str, label: str) -> dict:
        return {"completed_by": {"email": who}, "result": [
            {"type": "choices", "value": {"choices": [label]}}]}

    tasks = [{"data": {"file": image, "pool_index": k, "round": 1},
              "annotations": [annotation("alice", "benign"),
                              annotation("bob", "malignant" if k == 3 else "benign")]}
             for k, image in enumerate(batch.images)]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks))
    assert import_labels(path, batch, "nobody") == 8
    rows, result = PanelBook(batch, tmp_path / "run").state()
    assert sorted((image, a.annotator, a.label) for image, a in rows) == sorted(
        [(image, "alice", "benign") for image in batch.images]
        + [(image, "bob", "malignant" if k == 3 else "benign")
           for k, image in enumerate(batch.images)])
    assert result.complete and result.flagged.tolist() == [False, False, False, True]
    assert result.labels.tolist() == [0, 0, 0, 0]  # the tie goes to the first-listed reader
    assert import_labels(path, batch, "nobody") == 8  # the same answers again: harmless


@pytest.mark.parametrize(("overrides", "words"), [
    (["oracle.annotators_per_image=2"],
     ["annotators_per_image=2", "oracle.annotators=[alice,bob]"]),
    (["oracle.annotators=[alice,bob]", "oracle.adjudicator=bob", "oracle.annotators_per_image=2"],
     ["annotators_per_image=2", "(alice)"]),
    (["oracle.annotators=[alice,alice]"], ["alice", "twice"]),
    (["oracle.annotators=[alice,bob]", "oracle.adjudicator=carol"], ["oracle.adjudicator=carol"]),
    (["oracle.annotators=[al ice]"], ["oracle.annotators[0]"]),
    (["oracle.idle_cap_s=nan"], ["oracle.idle_cap_s", "finite"]),
    (["oracle.aggregation=mode"], ["oracle.aggregation", "dawid_skene"]),
    (["oracle.noise_rate=0.1"], ["oracle.noise_rate"]),
])
def test_bad_human_panel_configs_fail_validation_with_one_named_error(overrides, words):
    from al_sim.config.registry import validate
    from al_sim.runtime.errors import ConfigError
    from tests.conftest import compose_config

    with pytest.raises(ConfigError) as caught:
        validate(compose_config(["oracle=human", *overrides]))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_the_oracle_waits_takes_the_aggregate_and_refuses_a_doctored_file(tmp_path) -> None:
    from al_sim.core.events import LabelsPending
    from al_sim.data.synthetic import load_synthetic
    from al_sim.label.batch import Answer, Batch
    from al_sim.label.human_oracle import HumanOracle
    from al_sim.runtime.errors import DataError

    data = load_synthetic(n_pool=20, n_test=6, class_proportions=[0.5, 0.5], seed=0)
    panel = Panel(["alice", "bob"], 2, "majority", "carol", None, 120.0)
    oracle = HumanOracle(tmp_path / "run", data, 16, panel=panel)
    indices = np.array([3, 5, 7])
    with pytest.raises(LabelsPending) as first:
        oracle.query(indices, 1)
    assert not first.value.partial
    batch = Batch.load(first.value.batch_dir)
    names = data.class_names
    at = ["2026-12-04T10:00:00.000+00:00", "2026-12-04T10:00:04.000+00:00",
          "2026-12-04T10:00:10.000+00:00"]
    rows = [(image, Answer(names[0], who, at[k])) for k, image in enumerate(batch.images)
            for who in ("alice", "bob")]
    rows[-1] = (batch.images[2], Answer(names[1], "bob", at[2]))  # a tie on the last image
    doctored = [*rows, (batch.images[0], Answer(names[1], "alice", at[2]))]  # alice twice
    batch.write_rows(doctored)
    before = batch.answers_path.read_bytes()
    with pytest.raises(DataError, match="alice answered"):
        oracle.query(indices, 1)
    assert batch.answers_path.read_bytes() == before  # nothing lost
    batch.write_rows(rows)
    with pytest.raises(LabelsPending) as waiting:  # the tie waits for carol
        oracle.query(indices, 1)
    assert waiting.value.partial and waiting.value.missing == 1
    assert "adjudicator (carol" in waiting.value.why
    PanelBook(batch, tmp_path / "run").record([(batch.images[2], "carol", names[1])])
    assert oracle.query(indices, 1).tolist() == [0, 0, 1]
    answers, flagged = oracle.round_answers()
    assert flagged.tolist() == [False, False, True] and answers["carol"].tolist() == [-1, -1, 1]
    costs = oracle.round_costs()
    assert costs["cost/expert_seconds/alice"] == pytest.approx(4 + 6 + 5)  # first: the median
    assert costs["cost/expert_seconds"] == pytest.approx(sum(
        v for k, v in costs.items() if k.count("/") == 2))
    assert oracle.round_agreement()["agreement/flagged"] == 1
    assert (batch.dir / "aggregate.csv").is_file() and (batch.dir / "used.json").is_file()
    restored = HumanOracle(tmp_path / "run", data, 16, panel=panel)
    restored.restore(oracle.state())
    assert restored.round_costs()["cost/expert_seconds"] == costs["cost/expert_seconds"]
