"""Labelling multi-label batches: sets of findings from the page, imports and the oracle."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from al_sim.core.events import LabelsPending
from al_sim.data.synthetic_chest import load_synthetic_chest
from al_sim.label.answers import AnswerBook
from al_sim.label.batch import LS_CONFIG_FILE, Batch, Item, batch_dir, write_batch
from al_sim.label.human_oracle import HumanOracle, view_png
from al_sim.label.importer import read_labels
from al_sim.runtime.errors import LabelError
from tests.label_helpers import PageServer

FINDINGS = ["cardiomegaly", "effusion", "nodule"]


def ml_batch(run_dir: Path, n: int = 3) -> Batch:
    rng = np.random.default_rng(0)
    items = [Item(f"{i:07d}.png", i, f"images/p{i:03d}.png", "effusion", 0.6) for i in range(n)]
    pngs = [view_png(rng.integers(0, 255, (1, 28, 28), dtype=np.uint8), 64) for _ in items]
    return write_batch(batch_dir(run_dir, 1), 1, FINDINGS, items, pngs, multilabel=True)


def test_answers_are_sets_of_findings_in_class_order(tmp_path) -> None:
    batch = ml_batch(tmp_path)
    book = AnswerBook(Batch.load(batch.dir))
    assert book.batch.multilabel
    book.set("0000000.png", "nodule|cardiomegaly", "dr.x")
    book.set("0000001.png", "No Finding", "dr.x")
    assert [a.label for a in batch.read_answers().values()] == [
        "cardiomegaly|nodule", "No Finding"]
    for bad in ("No Finding|effusion", "mass", "", "effusion|mass"):
        with pytest.raises(LabelError, match="findings"):
            book.set("0000002.png", bad, "dr.x")
    assert batch.bits("cardiomegaly|nodule") == [1, 0, 1]


def test_label_studio_config_allows_several_choices(tmp_path) -> None:
    batch = ml_batch(tmp_path)
    choices = ET.fromstring((batch.dir / LS_CONFIG_FILE).read_text()).find("Choices")
    assert choices is not None and choices.get("choice") == "multiple"
    assert [c.get("value") for c in choices] == [*FINDINGS, "No Finding"]


def test_label_studio_multi_choice_exports_import_as_sets(tmp_path) -> None:
    batch = ml_batch(tmp_path)
    export = [{"data": {"image": f"/data/local-files/?d=x/{name}"},
               "annotations": [{"result": [{"type": "choices",
                                            "value": {"choices": choices}}]}]}
              for name, choices in (("0000000.png", ["effusion", "cardiomegaly"]),
                                    ("0000001.png", ["No Finding"]))]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(export))
    labels = {image: a.label for image, a in read_labels(path, batch).items()}
    assert labels == {"0000000.png": "cardiomegaly|effusion", "0000001.png": "No Finding"}
    (tmp_path / "ls.csv").write_text(
        'image,label\n0000002.png,"{""choices"": [""nodule"", ""No Finding""]}"\n')
    with pytest.raises(LabelError, match="not sets of findings"):
        read_labels(tmp_path / "ls.csv", batch)


def test_the_human_oracle_returns_finding_bits(tmp_path) -> None:
    data = load_synthetic_chest(n_pool=40, n_test=20)
    oracle = HumanOracle(tmp_path, data, 64)
    asked = np.array([3, 7])
    with pytest.raises(LabelsPending) as pending:
        oracle.query(asked, round_=1)
    batch = Batch.load(pending.value.batch_dir)
    assert batch.multilabel and batch.classes == data.class_names
    book = AnswerBook(batch)
    book.set(batch.images[0], "effusion|nodule", "dr.x")
    book.set(batch.images[1], "No Finding", "dr.x")
    answers = oracle.query(asked, round_=1)
    assert answers.tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver")
def test_an_expert_ticks_findings_with_the_keyboard(tmp_path) -> None:
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    from tests.test_label_browser import browser, wait_for

    run_dir = tmp_path / "run"
    ml_batch(run_dir)
    server = PageServer(run_dir, "--annotator", "dr.ticks")
    driver = browser()
    try:
        driver.get(server.url)
        progress = driver.find_element(By.ID, "progress")
        wait_for(driver, lambda d: progress.text == "0 / 3 labelled")
        boxes = driver.find_elements(By.CSS_SELECTOR, "#classes input[type=checkbox]")
        assert [b.get_attribute("data-label") for b in boxes] == [*FINDINGS, "No Finding"]
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("3")  # nodule
        body.send_keys("1")  # cardiomegaly
        assert [b.is_selected() for b in boxes] == [True, False, True, False]
        body.send_keys(" ")  # save image 1, move on
        wait_for(driver, lambda d: progress.text == "1 / 3 labelled")
        body.send_keys("2")
        body.send_keys("0")  # No Finding clears effusion
        assert [b.is_selected() for b in boxes] == [False, False, False, True]
        body.send_keys(" ")
        wait_for(driver, lambda d: progress.text == "2 / 3 labelled")
        boxes[1].click()  # effusion, by mouse
        driver.find_element(By.ID, "save").click()
        wait_for(driver, lambda d: progress.text == "3 / 3 labelled")
        driver.find_element(By.ID, "done").click()
        server.wait()
    finally:
        driver.quit()
        if server.proc.poll() is None:
            server.proc.kill()
    with (batch_dir(run_dir, 1) / "answers.csv").open() as f:
        rows = {r["image"]: (r["label"], r["annotator"]) for r in csv.DictReader(f)}
    assert rows == {"0000000.png": ("cardiomegaly|nodule", "dr.ticks"),
                    "0000001.png": ("No Finding", "dr.ticks"),
                    "0000002.png": ("effusion", "dr.ticks")}


def test_export_writes_a_manifest_folder_that_reads_back_with_the_answers(tmp_path) -> None:
    from omegaconf import OmegaConf

    from al_sim.config.data import FOLDER_LOADER
    from al_sim.data.folder import load_folder
    from al_sim.label.export import export_dataset
    from tests.test_multilabel_data import XRAY14_ROWS, _xray14

    source = tmp_path / "src"
    rows = [*XRAY14_ROWS[:3], ("d.png", "", ""), ("e.png", "", ""), *XRAY14_ROWS[5:]]
    _xray14(source, rows)
    data = load_folder(root=str(source), manifest="Data_Entry.csv", labels_required=False)
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(OmegaConf.create({"dataset": {
        "_target_": FOLDER_LOADER, "root": str(source), "manifest": "Data_Entry.csv",
        "images_dir": "images"}}), run / "config.yaml")
    oracle = HumanOracle(run, data, 64, source)
    with pytest.raises(LabelsPending) as pending:
        oracle.query(np.array([3, 4]), round_=1)
    batch = Batch.load(pending.value.batch_dir)
    book = AnswerBook(batch)
    book.set(batch.images[0], "Nodule|Effusion", "dr.x")
    book.set(batch.images[1], "No Finding", "dr.x")
    assert export_dataset(run, tmp_path / "out") == 2
    back = load_folder(root=str(tmp_path / "out"), manifest="manifest.csv")
    labels = dict(zip(back.pool_ids, back.pool_y.tolist(), strict=True))
    assert back.class_names == data.class_names  # Cardiomegaly, Effusion, Nodule
    assert labels["images/d.png"] == [0, 1, 1] and labels["images/e.png"] == [0, 0, 0]
    assert labels["images/a.png"] == [1, 1, 0] and labels["images/c.png"] == [0, 0, 1]
    assert back.test_y.tolist() == data.test_y.tolist()
    assert len(back.initial_labeled) == 4  # the two answered and the source's initial rows
