"""A real expert's loop through the real CLI: pause for labels, label over HTTP, resume twice."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.data.folder import load_folder
from tests.conftest import run_cli
from tests.label_helpers import PageServer, unlabelled_folder

pytestmark = pytest.mark.slow

FAST = ["trainer.epochs=2", "trainer.min_steps=4", "trainer.num_threads=1", "progress=false"]


def expert(label_index: int) -> str:
    """The scripted expert's rule: a fixed answer per pool index (so the test knows it)."""
    return "benign" if label_index % 3 else "malignant"


def answer_batch(run_dir: Path, leave: int = 0) -> dict[int, str]:
    """Label the waiting batch through the page's HTTP API, all but ``leave`` images."""
    server = PageServer(run_dir, "--annotator", "dr.who")
    try:
        status, batch = server.call("/api/batch")
        assert status == 200
        pool_index = {row["image"]: int(row["pool_index"]) for row in
                      csv.DictReader((run_dir / "labels" / f"round_{batch['round']:02d}" /
                                      "batch.csv").open())}
        given = {}
        todo = [e for e in batch["images"] if e["label"] is None]
        assert batch["labelled"] == len(batch["images"]) - len(todo)
        for entry in todo[: len(todo) - leave]:
            label = expert(pool_index[entry["image"]])
            status, reply = server.call("/api/label", {"image": entry["image"], "label": label})
            assert status == 200 and reply["ok"], reply
            given[pool_index[entry["image"]]] = label
        if leave:
            status, reply = server.call("/api/done", {})
            assert status == 400 and f"{leave} of" in reply["error"]
            server.proc.terminate()  # the expert's session ends: SIGTERM, one line
            _, err = server.proc.communicate(timeout=10)
            assert server.proc.returncode == 143, err
            assert err.strip().endswith("stopped (SIGTERM): the answers given so far are saved")
            return given
        assert server.call("/api/done", {})[0] == 200
        assert "done" in server.wait()
        return given
    finally:
        server.stop()


def test_an_expert_labels_two_rounds_and_the_run_resumes_twice(tmp_path: Path) -> None:
    data = unlabelled_folder(tmp_path / "data")
    assert not (data / "pool_labels.csv").exists()
    run_dir = tmp_path / "run"
    args = ["dataset=folder", f"dataset.root={data}", "oracle=human", "strategy=margin",
            "budget.query_size=6", "budget.rounds=2", *FAST, f"hydra.run.dir={run_dir}"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    def the_run():
        runs = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])
        assert len(runs) == 1
        return runs[0]

    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "waiting for labels: round 1: 6 images" in first.stdout
    assert f"python -m al_sim.label {run_dir}" in first.stdout
    assert "then continue the run: python -m al_sim.run" in first.stdout
    run = the_run()
    assert run.info.status == "RUNNING"
    assert run.data.tags["al_sim.waiting_for_labels"] == "round 1: 6 images"

    # Continuing before every image has a label is refused with the count; nothing changes.
    given = answer_batch(run_dir, leave=2)
    early = run_cli(args, tmp_path)
    assert early.returncode == 2
    errors = [line for line in early.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 image(s) of the batch" in errors[0], early.stderr
    assert the_run().info.status == "RUNNING"

    given.update(answer_batch(run_dir))  # the page reopened: labels the 2 left
    second = run_cli(args, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "waiting for labels: round 2: 6 images" in second.stdout
    given.update(answer_batch(run_dir))
    third = run_cli(args, tmp_path)
    assert third.returncode == 0, third.stderr
    assert "waiting" not in third.stdout

    run = the_run()
    assert run.info.status == "FINISHED"
    assert "al_sim.waiting_for_labels" not in run.data.tags
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/accuracy")]
    assert sorted(steps) == [20, 26, 32]  # one point per labelled count, none twice
    with (run_dir / "labeled_set.csv").open() as f:
        rows = list(csv.DictReader(f))
    answered = {int(r["pool_index"]): r["class_name"] for r in rows if r["round"] != "0"}
    assert answered == given and len(given) == 12
    with (run_dir / "queries.csv").open() as f:
        queried = [r for r in csv.DictReader(f) if r["round"] != "0"]
    assert all(r["true_label"] == "" for r in queried)  # nobody knows the truth but the expert
    with (run_dir / "labels" / "round_02" / "answers.csv").open() as f:
        assert {r["annotator"] for r in csv.DictReader(f)} == {"dr.who"}

    # The labels become a dataset that dataset=folder reads, with who labelled what.
    out = tmp_path / "export"
    done = run_cli([str(run_dir), "--export", str(out)], tmp_path, module="al_sim.label")
    assert done.returncode == 0, done.stderr
    exported = load_folder(root=str(out), labels_required=False)
    assert len(exported.initial_labeled) == 32 and exported.n_pool == 60 + 20
    with (out / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    by_source = {m["source"]: m for m in manifest}
    for index, label in given.items():
        row = by_source[f"unlabeled_pool_images/p{index:03d}.png"]
        assert row["label"] == label and row["annotator"] == "dr.who"
        assert row["file"] == f"initial_labeled_images/{label}/p{index:03d}.png"
    assert {m["round"] for m in manifest} == {"0", "1", "2"}


def test_the_expert_labels_the_initial_set_too_and_imports_a_csv(tmp_path: Path) -> None:
    """Synthetic data has no given initial set: round 0 waits, before any model exists."""
    from al_sim.data.synthetic import load_synthetic

    run_dir = tmp_path / "run"
    args = ["oracle=human", "strategy=random", "dataset.n_pool=200", "dataset.n_test=100",
            "budget.initial=10", "budget.query_size=5", "budget.rounds=1", *FAST,
            f"hydra.run.dir={run_dir}"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "round 0: 10 images wait" in first.stdout
    batch = run_dir / "labels" / "round_00"
    with (batch / "batch.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["predicted"] for r in rows} == {""}  # no model yet
    truth = load_synthetic(n_pool=200, n_test=100)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(
        f"{r['image']},{truth.class_names[truth.pool_y[int(r['pool_index'])]]}\n" for r in rows))
    imported = run_cli([str(run_dir), "--import", str(labels), "--annotator", "lab"], tmp_path,
                       module="al_sim.label")
    assert imported.returncode == 0 and "the batch is complete" in imported.stdout
    second = run_cli(args, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "round 1: 5 images wait" in second.stdout
    with (run_dir / "labels" / "round_01" / "batch.csv").open() as f:
        assert all(r["predicted"] and float(r["confidence"]) > 0 for r in csv.DictReader(f))
    with (run_dir / "metrics.csv").open() as f:
        assert [r["n_labeled"] for r in csv.DictReader(f)] == ["10"]
    with (run_dir / "queries.csv").open() as f:  # the truth is known here: logged beside
        queried = list(csv.DictReader(f))
    assert [r["oracle_label"] for r in queried] == [r["true_label"] for r in queried]
