"""Multi-label batches keep the hardened labelling guarantees: items and the multilabel flag
in batch.json, merged and frozen answers, imports by pool_index with disagreements kept, and
the page's Space-save queued behind an undo in flight, naming its image."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from al_sim.label.answers import AnswerBook, AnswerConflictError
from al_sim.label.batch import BATCH_FILE, META_FILE, USED_FILE, Batch
from al_sim.label.importer import import_labels
from tests.label_helpers import PageServer
from tests.test_label_browser import CHROMIUM, DRIVER, browser, wait_for
from tests.test_label_page_race import HOLD_UNDO
from tests.test_multilabel_label import ml_batch


def _answers(batch: Batch) -> dict[str, dict[str, str]]:
    with batch.answers_path.open(newline="", encoding="utf-8") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def test_a_multilabel_batch_reads_back_from_batch_json_whatever_batch_csv_says(
        tmp_path: Path) -> None:
    batch = ml_batch(tmp_path)
    meta = json.loads((batch.dir / META_FILE).read_text())
    assert meta["multilabel"] is True and len(meta["items"]) == 3
    (batch.dir / BATCH_FILE).write_text("a spreadsheet's idea of a batch\n")
    again = Batch.load(batch.dir)
    assert again.multilabel and again.items == batch.items


def test_two_writers_keep_both_sets_stored_in_class_order_until_the_run_uses_them(
        tmp_path: Path) -> None:
    batch = ml_batch(tmp_path)
    page, other = AnswerBook(batch), AnswerBook(Batch.load(batch.dir))
    page.set(batch.images[0], "nodule|cardiomegaly", "dr.a")
    other.set(batch.images[1], " No Finding ", "dr.b")
    assert {i: r["label"] for i, r in _answers(batch).items()} == {
        batch.images[0]: "cardiomegaly|nodule", batch.images[1]: "No Finding"}
    (batch.dir / USED_FILE).write_text("{}")
    with pytest.raises(AnswerConflictError, match="already trained"):
        page.set(batch.images[2], "effusion", "dr.a")


def test_a_multi_choice_export_matches_by_pool_index_and_keeps_disagreeing_sets(
        tmp_path: Path) -> None:
    batch = ml_batch(tmp_path)

    def annotation(who: str, choices: list[str]) -> dict:
        return {"completed_by": {"email": who},
                "result": [{"type": "choices", "value": {"choices": choices}}]}

    export = [{"data": {"image": "/data/local-files/?d=elsewhere/x.png", "pool_index": 1},
               "annotations": [annotation("a@x.org", ["nodule", "effusion"]),
                               annotation("b@x.org", ["effusion"])]}]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(export))
    said: list[str] = []
    assert import_labels(path, batch, "me", warn=said.append) == 1
    row = _answers(batch)[batch.images[1]]
    assert (row["label"], row["annotator"]) == ("effusion", "b@x.org")
    assert row["other_answers"] == "effusion|nodule by a@x.org"
    assert len(said) == 1 and "disagree" in said[0]


@pytest.mark.slow
@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                    reason="needs Debian's chromium and chromium-driver")
def test_space_during_an_undo_in_flight_saves_the_findings_of_the_image_on_screen(
        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    run_dir = tmp_path / "run"
    batch = ml_batch(run_dir)
    server = PageServer(run_dir, "--annotator", "dr.race")
    driver = browser()
    try:
        driver.get(server.url)
        progress = driver.find_element(By.ID, "progress")
        wait_for(driver, lambda d: progress.text == "0 / 3 labelled")
        assert not driver.find_element(By.ID, "undo").is_enabled()
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("1")
        body.send_keys(" ")  # image 1: cardiomegaly; image 2 is shown
        wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
        driver.execute_script(HOLD_UNDO)
        body.send_keys("u")  # image 1 back on screen, its boxes cleared
        wait_for(driver, lambda d: "image 1 of 3" in d.find_element(By.ID, "where").text)
        boxes = driver.find_elements(By.CSS_SELECTOR, "#classes input[type=checkbox]")
        assert not any(b.is_selected() for b in boxes)
        body.send_keys("2")
        body.send_keys(" ")  # effusion, queued behind the undo
        driver.execute_script("window.releaseUndo()")
        wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
        assert {i: r["label"] for i, r in _answers(batch).items()} == {
            batch.images[0]: "effusion"}
        assert progress.text == "1 / 3 labelled"
    finally:
        driver.quit()
        server.stop()
