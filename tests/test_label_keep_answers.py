"""An expert's answers are never deleted: re-saved batch files, changed selections, round order."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from al_sim.core.events import LabelsPending
from al_sim.label.answers import AnswerBook
from al_sim.label.batch import ANSWERS_FILE, BATCH_FILE, META_FILE, Batch, batch_dir
from al_sim.label.human_oracle import HumanOracle
from al_sim.label.locks import ServerLock
from al_sim.label.rounds import SET_ASIDE_DIR, all_batches, current_batch, set_aside
from al_sim.runtime.errors import LabelError
from tests.conftest import run_cli
from tests.label_helpers import small_batch


def pause(oracle: HumanOracle, indices: list[int], round_: int = 1) -> LabelsPending:
    with pytest.raises(LabelsPending) as paused:
        oracle.query(np.array(indices), round_)
    return paused.value


def answer_some(folder: Path, n: int) -> dict[str, str]:
    batch = Batch.load(folder)
    given = {image: "benign" for image in batch.images[:n]}
    AnswerBook(batch).set_many(given, "dr.who")
    return given


def spreadsheet_save(path: Path) -> None:
    """What a spreadsheet's "save as CSV" does: a byte-order mark, CRLF, ``;``, reformatted
    numbers, an extra column."""
    with path.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    table[0].append("notes")
    for row in table[1:]:
        row[5] = f"{float(row[5]):.1f}".replace(".", ",") if row[5] else ""
        row.append("looked at it")
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(";".join(r) for r in table).encode())


def test_a_batch_csv_resaved_by_a_spreadsheet_keeps_the_answers(tiny_dataset,
                                                                 tmp_path: Path) -> None:
    oracle = HumanOracle(tmp_path, tiny_dataset, view_size=28)
    first = pause(oracle, [5, 7, 11, 13])
    given = answer_some(first.batch_dir, 2)
    spreadsheet_save(first.batch_dir / BATCH_FILE)
    again = pause(oracle, [5, 7, 11, 13])
    assert again.partial and again.missing == 2  # the same batch, answers and all
    assert Batch.load(first.batch_dir).read_answers().keys() == given.keys()


def test_answers_saved_with_a_byte_order_mark_are_read(tiny_dataset, tmp_path: Path) -> None:
    oracle = HumanOracle(tmp_path, tiny_dataset, view_size=28)
    paused = pause(oracle, [5, 7])
    names = Batch.load(paused.batch_dir).images
    truth = [tiny_dataset.class_names[tiny_dataset.pool_y[i]] for i in (5, 7)]
    (paused.batch_dir / ANSWERS_FILE).write_bytes(
        ("\ufeffimage,label\r\n" + "".join(f"{n},{t}\r\n" for n, t in zip(names, truth,
                                                                         strict=True)))
        .encode())
    labels = oracle.query(np.array([5, 7]), 1)
    assert labels.tolist() == tiny_dataset.pool_y[[5, 7]].tolist()


def test_a_label_cleared_in_a_spreadsheet_is_no_answer(tmp_path: Path) -> None:
    batch = small_batch(tmp_path, n=3)
    (batch.dir / ANSWERS_FILE).write_text(f"image,label,annotator\n{batch.images[0]}, benign ,a\n"
                                          f"{batch.images[1]},,a\n{batch.images[2]}, ,a\n")
    assert list(batch.read_answers()) == [batch.images[0]]
    assert batch.read_answers()[batch.images[0]].label == "benign"
    assert batch.missing() == batch.images[1:]


def test_a_changed_selection_sets_the_answered_batch_aside(tiny_dataset,
                                                           tmp_path: Path) -> None:
    """What resume=false (or a lost checkpoint) does: the run asks about other images."""
    oracle = HumanOracle(tmp_path, tiny_dataset, view_size=28)
    old = pause(oracle, [5, 7, 11, 13])
    given = answer_some(old.batch_dir, 3)
    later = pause(oracle, [20, 21], round_=2)  # a later round of the old selection
    answer_some(later.batch_dir, 1)
    empty = pause(oracle, [30, 31], round_=3)  # no answers: nothing to keep

    new = pause(oracle, [40, 41, 42, 43])
    assert not new.partial and new.missing == 4
    assert [i.pool_index for i in Batch.load(new.batch_dir).items] == [40, 41, 42, 43]
    kept = sorted((tmp_path / "labels" / SET_ASIDE_DIR).iterdir())
    assert [p.name.split("-")[0] for p in kept] == ["round_01", "round_02"]
    assert Batch.load(kept[0]).read_answers().keys() == given.keys()
    assert all(str(p) in str(new) for p in kept), str(new)  # the pause says where
    assert not empty.batch_dir.exists()
    assert [b.round for b in all_batches(tmp_path)] == [1]


def test_answers_the_run_has_taken_can_no_longer_change(tiny_dataset, tmp_path: Path) -> None:
    oracle = HumanOracle(tmp_path, tiny_dataset, view_size=28)
    batch = Batch.load(pause(oracle, [5, 7]).batch_dir)
    book = AnswerBook(batch)
    book.set(batch.images[0], tiny_dataset.class_names[0], "dr.who")
    pause(oracle, [5, 7])  # still missing one: nothing taken, answers still change
    book.set(batch.images[1], tiny_dataset.class_names[1], "dr.who")
    assert oracle.query(np.array([5, 7]), 1).tolist() == [0, 1]
    for change in (lambda: book.set(batch.images[0], tiny_dataset.class_names[2], "late"),
                   lambda: book.undo()):
        with pytest.raises(LabelError, match="already trained on the round 1 answers"):
            change()
    assert {a.label for a in batch.read_answers().values()} == set(tiny_dataset.class_names[:2])
    assert oracle.query(np.array([5, 7]), 1).tolist() == [0, 1]  # a resume reads them again


def test_a_batch_open_in_a_page_is_not_set_aside(tmp_path: Path) -> None:
    batch = small_batch(tmp_path, n=2)
    AnswerBook(batch).set(batch.images[0], "benign", "dr.who")
    lock = ServerLock(batch.dir).acquire()
    try:
        with pytest.raises(LabelError, match="stop the page"):
            set_aside(batch.dir, "test")
        assert (batch.dir / ANSWERS_FILE).exists()
    finally:
        lock.release()


def test_rounds_keep_their_order_past_99(tmp_path: Path) -> None:
    for round_ in (9, 10, 99, 100):
        small_batch(tmp_path, n=1, round_=round_)
    assert batch_dir(tmp_path, 100).name == "round_100"
    assert [b.round for b in all_batches(tmp_path)] == [9, 10, 99, 100]
    assert current_batch(tmp_path).round == 100


def test_a_batch_written_before_batch_json_held_the_items_still_loads(tmp_path: Path) -> None:
    batch = small_batch(tmp_path, n=3)
    meta = json.loads((batch.dir / META_FILE).read_text())
    del meta["items"]
    (batch.dir / META_FILE).write_text(json.dumps(meta))
    text = (batch.dir / BATCH_FILE).read_text()
    (batch.dir / BATCH_FILE).write_text("\ufeff" + text, encoding="utf-8")
    assert Batch.load(batch.dir).items == batch.items


def test_resume_false_keeps_a_partly_labelled_batch(tmp_path: Path) -> None:
    """The CLI: a restart that picks other images keeps the expert's answers and says where."""
    run_dir = tmp_path / "run"
    args = ["oracle=human", "strategy=random", "dataset.n_pool=200", "dataset.n_test=100",
            "budget.initial=6", "budget.query_size=5", "budget.rounds=1",
            "tracking.enabled=false", "progress=false", f"hydra.run.dir={run_dir}"]
    first = run_cli([*args, "seed=0"], tmp_path)
    assert first.returncode == 0, first.stderr
    given = answer_some(batch_dir(run_dir, 0), 4)
    restart = run_cli([*args, "seed=1", "resume=false"], tmp_path)
    assert restart.returncode == 0, restart.stderr
    assert "round 0: 6 images wait" in restart.stdout
    kept = list((run_dir / "labels" / SET_ASIDE_DIR).iterdir())
    assert len(kept) == 1 and f"kept in {kept[0]}" in restart.stdout
    assert Batch.load(kept[0]).read_answers().keys() == given.keys()
    assert f"kept in {kept[0]}" in (run_dir / "run.log").read_text()
