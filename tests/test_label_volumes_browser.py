"""A volume batch labelled in a real headless Chromium: slices, planes, window, class keys;
a 2D DICOM image in it gets window/level only.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium`` (skipped otherwise).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.label_helpers import PageServer
from tests.test_label_browser import CHROMIUM, DRIVER, browser, wait_for
from tests.test_label_volumes import volume_batch

pytest.importorskip("selenium.webdriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()), reason="needs chromium")]


def test_an_expert_scrolls_and_labels_volumes(tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    run_dir = tmp_path / "run"
    folder = volume_batch(run_dir, n=2, flat=True)  # 6 x 8 x 10 volumes, a 2D DICOM image
    server = PageServer(run_dir, "--annotator", "dr.ct")
    driver = browser()
    try:
        driver.get(server.url)
        progress = driver.find_element(By.ID, "progress")
        where, image = driver.find_element(By.ID, "slice"), driver.find_element(By.ID, "image")
        wait_for(driver, lambda d: progress.text == "0 / 3 labelled")
        wait_for(driver, lambda d: where.text == "axial slice 4 / 6")

        def shown(d) -> tuple[int, int]:  # the slice's own size, once it has loaded
            return d.execute_script("return [arguments[0].naturalWidth, "
                                    "arguments[0].naturalHeight]", image)

        wait_for(driver, lambda d: shown(d) == [10, 8])
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.ARROW_UP)
        wait_for(driver, lambda d: where.text == "axial slice 5 / 6")
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(image), 0, 120).perform()
        wait_for(driver, lambda d: where.text == "axial slice 4 / 6")
        body.send_keys("c")
        wait_for(driver, lambda d: where.text == "coronal slice 5 / 8")
        wait_for(driver, lambda d: shown(d) == [10, 6])
        Select(driver.find_element(By.ID, "preset")).select_by_visible_text("ct_lung")
        wait_for(driver, lambda d: "centre=-600" in image.get_attribute("src"))
        assert driver.find_element(By.ID, "width").get_attribute("value") == "1500"
        body.send_keys("1")  # volume 1: lesion; the page moves to volume 2
        wait_for(driver, lambda d: progress.text == "1 / 3 labelled")
        wait_for(driver, lambda d: where.text == "coronal slice 5 / 8")
        body.send_keys("2")
        wait_for(driver, lambda d: progress.text == "2 / 3 labelled")
        wait_for(driver, lambda d: where.text == "window/level")  # 2D: no planes, no slices
        assert not driver.find_element(By.CSS_SELECTOR, "#viewer button").is_displayed()
        Select(driver.find_element(By.ID, "preset")).select_by_index(0)  # the file's own
        wait_for(driver, lambda d: "centre=40&width=400" in image.get_attribute("src"))
        wait_for(driver, lambda d: shown(d) == [8, 8])
        body.send_keys("1")
        wait_for(driver, lambda d: progress.text == "3 / 3 labelled")
        wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
        body.send_keys(Keys.ENTER)
        server.wait()
    finally:
        driver.quit()
        server.stop()
    with (folder / "answers.csv").open() as f:
        rows = [(r["image"], r["label"], r["annotator"]) for r in csv.DictReader(f)]
    assert rows == [("0000000.png", "lesion", "dr.ct"), ("0000001.png", "normal", "dr.ct"),
                    ("0000002.png", "lesion", "dr.ct")]
