"""The labelling page in Chromium: a key pressed while an undo is in flight labels the image
on screen, and undo is off while nothing is labelled (skipped without chromium)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.label_helpers import PageServer, small_batch
from tests.test_label_browser import CHROMIUM, DRIVER, browser, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver")]

HOLD_UNDO = """
const real = window.fetch;
const gate = new Promise((release) => { window.releaseUndo = release; });
window.fetch = (path, opts) =>
  String(path).includes("api/undo") ? gate.then(() => real(path, opts)) : real(path, opts);
"""


def test_a_key_during_an_undo_in_flight_labels_the_image_on_screen(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    run_dir = tmp_path / "run"
    batch = small_batch(run_dir, n=4)
    server = PageServer(run_dir, "--annotator", "dr.race")
    driver = browser()
    try:
        driver.get(server.url)
        progress = driver.find_element(By.ID, "progress")
        wait_for(driver, lambda d: progress.text == "0 / 4 labelled")
        undo_button = driver.find_element(By.ID, "undo")
        assert not undo_button.is_enabled()  # nothing to undo yet
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("1")  # image 1: benign; image 2 is shown
        wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
        assert undo_button.is_enabled()

        driver.execute_script(HOLD_UNDO)  # the undo's request is held in flight
        body.send_keys("u")  # image 1 is back on screen ...
        wait_for(driver, lambda d: "image 1 of 4" in d.find_element(By.ID, "where").text)
        body.send_keys("2")  # ... and the expert relabels it: malignant
        driver.execute_script("window.releaseUndo()")
        wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
        with (batch.dir / "answers.csv").open() as f:
            rows = [(r["image"], r["label"]) for r in csv.DictReader(f)]
        assert rows == [(batch.images[0], "malignant")]
        assert progress.text == "1 / 4 labelled"
    finally:
        driver.quit()
        server.stop()
