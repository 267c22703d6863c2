"""Acceptance of issue 26 (human side): oracle=human oracle.annotators_per_image=2, labelled by
two Chromium sessions at once (two tokens), gives aggregated labels, a kappa per round in
MLflow, an adjudication list where they disagree, and an export with both answers.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium`` (skipped otherwise).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.label.__main__ import main as label_main
from tests.conftest import run_cli
from tests.label_helpers import unlabelled_folder
from tests.test_label_browser import browser, wait_for

pytestmark = pytest.mark.slow
FAST = ["trainer.epochs=1", "trainer.min_steps=2", "trainer.num_threads=1", "progress=false"]


def test_two_annotators_label_at_once_in_chromium(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    data = unlabelled_folder(tmp_path / "data", n_initial=10, n_pool=20, n_test=10)
    run_dir = tmp_path / "run"
    args = ["dataset=folder", f"dataset.root={data}", "oracle=human",
            "oracle.annotators=[alice,bob]", "oracle.annotators_per_image=2",
            "budget.query_size=4", "budget.rounds=1", *FAST, f"hydra.run.dir={run_dir}"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "round 1: 4 images wait for 2 of alice, bob each" in first.stdout

    page = subprocess.Popen([sys.executable, "-m", "al_sim.label", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    urls = {}
    for _ in range(2):
        line = page.stdout.readline()
        assert " as " in line and " at http://127.0.0.1:" in line, line + page.stderr.read()
        urls[line.split(" as ")[1].split()[0]] = line.rsplit(" at ", 1)[1].strip()
    assert set(urls) == {"alice", "bob"} and urls["alice"] != urls["bob"]
    drivers = {name: browser() for name in urls}
    try:
        for name, driver in drivers.items():
            driver.get(urls[name])
            wait_for(driver, lambda d: d.find_element(By.ID, "progress").text
                     == "0 / 4 labelled")
        keys = {"alice": "1111", "bob": "1122"}  # bob disagrees on images 3 and 4
        for k in range(4):  # both at once, key by key
            for name, driver in drivers.items():
                driver.find_element(By.TAG_NAME, "body").send_keys(keys[name][k])
            for driver in drivers.values():
                wait_for(driver, lambda d, n=k + 1: d.find_element(By.ID, "progress").text
                         == f"{n} / 4 labelled")
        for name, driver in drivers.items():  # neither sees the other's answers
            assert f"· {name}" in driver.find_element(By.ID, "title").text
            wait_for(driver, lambda d: d.find_element(By.ID, "saved").text == "saved")
            driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
            wait_for(driver, lambda d: "Done" in d.find_element(By.TAG_NAME, "h1").text)
        out, err = page.communicate(timeout=20)  # the batch is complete: the server stops
        assert "done" in out, err
    finally:
        for driver in drivers.values():
            driver.quit()
        if page.poll() is None:
            page.terminate()
            page.communicate(timeout=10)

    batch = run_dir / "labels" / "round_01"
    with (batch / "answers.csv").open() as f:
        answers = list(csv.DictReader(f))
    assert sorted(r["annotator"] for r in answers) == ["alice"] * 4 + ["bob"] * 4
    with (batch / "adjudication.csv").open() as f:
        flagged = list(csv.DictReader(f))
    assert len(flagged) == 2 and all("benign by alice" in r["answers"] for r in flagged)

    second = run_cli(args, tmp_path)
    assert second.returncode == 0, second.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])[0]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["agreement/cohen_kappa"] == pytest.approx(0.0)  # 2 of 4 agree, by chance
    assert metrics["agreement/flagged"] == 2
    assert metrics["cost/expert_seconds"] == pytest.approx(
        metrics["cost/expert_seconds/alice"] + metrics["cost/expert_seconds/bob"])
    assert [m.step for m in client.get_metric_history(run.info.run_id,
                                                      "agreement/cohen_kappa")] == [14]
    with (batch / "aggregate.csv").open() as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["benign"] * 4  # ties: alice first

    out = tmp_path / "export"
    assert label_main([str(run_dir), "--export", str(out)]) == 0  # in-process: no start-up
    with (out / "manifest.csv").open() as f:
        manifest = [r for r in csv.DictReader(f) if r["round"] == "1"]
    assert len(manifest) == 4
    assert sorted((r["answer:alice"], r["answer:bob"]) for r in manifest) == [
        ("benign", "benign"), ("benign", "benign"), ("benign", "malignant"),
        ("benign", "malignant")]
    assert all(r["annotator"] == "majority" and r["label"] == "benign" for r in manifest)
