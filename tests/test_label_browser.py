"""The labelling page in a real headless Chromium: keyboard labelling ends up in the files.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (skipped
otherwise); no browser is downloaded. ``AL_SIM_SCREENSHOT=path`` saves the page as a PNG.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.label_helpers import PageServer, small_batch

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver)")]


class _Chromium(webdriver.Chrome):
    """Chrome whose temporary files (its singleton socket folder) go when it quits."""

    scratch = ""

    def quit(self) -> None:
        try:
            super().quit()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


def browser() -> _Chromium:
    """Headless Debian Chromium; its temporary folder is removed by ``quit()``."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,800", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # Chromium's socket path must stay short (108 bytes), so not under pytest's tmp_path.
    scratch = tempfile.mkdtemp(prefix="al_chromium_")
    try:
        driver = _Chromium(service=Service(DRIVER, env={**os.environ, "TMPDIR": scratch}),
                           options=options)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    driver.scratch = scratch
    return driver


def wait_for(driver, condition, timeout: float = 10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_an_expert_labels_a_batch_with_the_keyboard(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run_dir = tmp_path / "run"
    batch = small_batch(run_dir, n=4)
    server = PageServer(run_dir, "--annotator", "dr.keys")
    driver = browser()
    try:
        driver.get(server.url)
        progress = driver.find_element(By.ID, "progress")
        wait_for(driver, lambda d: progress.text == "0 / 4 labelled")
        buttons = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#classes button")]
        assert buttons == ["1benign", "2malignant"] or buttons == ["1 benign", "2 malignant"]
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("2")  # image 1: malignant, then the page moves on
        wait_for(driver, lambda d: progress.text == "1 / 4 labelled")
        body.send_keys("1")  # image 2: benign
        wait_for(driver, lambda d: progress.text == "2 / 4 labelled")
        body.send_keys("u")  # undo image 2
        wait_for(driver, lambda d: progress.text == "1 / 4 labelled")
        for key in "122":  # images 2, 3, 4
            before = progress.text
            body.send_keys(key)
            wait_for(driver, lambda d, b=before: progress.text != b)
        wait_for(driver, lambda d: progress.text == "4 / 4 labelled")
        wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
        body.send_keys(Keys.ARROW_LEFT)
        wait_for(driver, lambda d: "image 3 of 4" in d.find_element(By.ID, "where").text)
        shot = os.environ.get("AL_SIM_SCREENSHOT")
        if shot:
            driver.save_screenshot(shot)
        with (batch.dir / "answers.csv").open() as f:
            rows = [(r["image"], r["label"], r["annotator"]) for r in csv.DictReader(f)]
        assert rows == [(batch.images[0], "malignant", "dr.keys"),
                        (batch.images[1], "benign", "dr.keys"),
                        (batch.images[2], "malignant", "dr.keys"),
                        (batch.images[3], "malignant", "dr.keys")]
        body.send_keys(Keys.ENTER)  # done
        wait_for(driver, lambda d: "Done" in d.find_element(By.TAG_NAME, "h1").text)
        assert "done" in server.wait()
        assert (batch.dir / "done.json").exists()
    finally:
        driver.quit()
        server.stop()
