"""Make docs/labelling_page.png: the labelling page of a waiting run, in headless Chromium.

    python docs/make_labelling_screenshot.py <run dir> docs/labelling_page.png

Needs Debian's chromium + chromium-driver and selenium. Labels the first three images
(keys 1, 2, 2) with the model's suggestion shown, then saves the page.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.label_helpers import PageServer  # noqa: E402
from tests.test_label_browser import browser  # noqa: E402


def main(run_dir: str, out: str) -> None:
    """Label three images by keyboard and save a screenshot."""
    server = PageServer(Path(run_dir), "--suggest", "--annotator", "dr.example")
    driver = browser()
    try:
        driver.get(server.url)
        time.sleep(1.5)
        body = driver.find_element("tag name", "body")
        for key in "122":
            body.send_keys(key)
            time.sleep(0.5)
        time.sleep(1)
        driver.save_screenshot(out)
    finally:
        driver.quit()
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
